"""Python-backend stub processes: finding them by command line and ending them (with psutil).

Both the launcher's cleanup (stubs left by a stopped server, found by its shared-memory prefix) and
the sidecar's recovery (the stubs of one hung model instance, found under the running server) use it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable

import psutil

from ruthgen.embedded.distribution import STUB_NAME

LOGGER = logging.getLogger(__name__)

CommandLineTest = Callable[[list[str]], bool]


def stub_processes(matches: CommandLineTest, under: int | None = None) -> list[psutil.Process]:
    """The stub processes whose argument list satisfies ``matches``; with ``under``, only
    descendants of that pid. Processes that vanish or cannot be read are skipped."""
    if under is None:
        candidates: Iterable[psutil.Process] = psutil.process_iter()
    else:
        try:
            candidates = psutil.Process(under).children(recursive=True)
        except psutil.Error:
            return []
    found = []
    for process in candidates:
        if process.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            argv = [arg for arg in process.cmdline() if arg]
            if any(STUB_NAME in arg for arg in argv) and matches(argv):
                found.append(process)
    return sorted(found, key=lambda p: p.pid)


def kill_processes(processes: list[psutil.Process], wait_s: float = 2.0) -> list[int]:
    """SIGKILL ``processes``, wait up to ``wait_s`` for them to be gone; return their pids."""
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(processes, timeout=wait_s)
    return [p.pid for p in processes]


def find_server(grpc_port: int) -> int | None:
    """The pid of a visible ``tritonserver`` whose command line serves gRPC on ``grpc_port``."""
    wanted = str(grpc_port)
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            argv = process.cmdline()
            if not argv or os.path.basename(argv[0]) != "tritonserver":
                continue
            for i, arg in enumerate(argv):
                split = arg == "--grpc-port" and argv[i + 1 : i + 2] == [wanted]
                if arg == f"--grpc-port={wanted}" or split:
                    return process.pid
    return None
