"""What one server leaves behind when it dies badly: stub processes and shared-memory regions.

A server started by `EmbeddedTriton` names its Python-backend shared-memory regions with a prefix
of its own (``shm-region-prefix-name``); the prefix appears in ``/dev/shm`` and on the command line
of each of its stubs, so this module finds that server's leftovers and nobody else's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from pathlib import Path

import psutil

from ruthgen.embedded.stubs import kill_processes, stub_processes

LOGGER = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
#: The Python backend's own prefix; ours extends it so that generic tools still recognise the regions.
DEFAULT_SHM_PREFIX = "triton_python_backend_shm_region_"


def new_shm_prefix() -> str:
    """A prefix unique to one server; only ``[a-z0-9_]`` (the stub is launched through ``bash -c``)."""
    return f"{DEFAULT_SHM_PREFIX}ruth{os.getpid()}_{secrets.token_hex(4)}_"


def shm_regions(prefix: str) -> list[Path]:
    """The shared-memory regions named with ``prefix``."""
    try:
        return sorted(p for p in SHM_DIR.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def stub_pids(prefix: str) -> list[int]:
    """The stub processes whose command line carries ``prefix`` (those of the server using it)."""
    return [p.pid for p in _stubs(prefix)]


def reap_leftovers(prefix: str, grace_s: float = 2.0) -> tuple[list[int], list[Path]]:
    """Kill the stubs of the server that used ``prefix`` and remove its regions; return what was found.

    Stubs end themselves a moment after their server is gone: give them ``grace_s`` first.
    """
    deadline = time.monotonic() + grace_s
    while (stubs := _stubs(prefix)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for stub in stubs:
        LOGGER.warning("killing stub process %d left by a stopped tritonserver", stub.pid)
    pids = kill_processes(stubs)
    regions = shm_regions(prefix)
    for region in regions:
        with contextlib.suppress(FileNotFoundError):
            region.unlink()
    if regions:
        LOGGER.info("removed %d shared-memory region(s) of a stopped tritonserver", len(regions))
    return pids, regions


def _stubs(prefix: str) -> list[psutil.Process]:
    return stub_processes(lambda argv: any(prefix in arg for arg in argv))
