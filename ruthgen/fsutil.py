"""File and process helpers shared by the generator, the embedded launcher and the sidecar.

* :func:`write_atomic`: a file replaced in one rename, never seen half-written;
* :func:`locked`: an exclusive ``flock`` on a file (created when missing) or a folder;
* :func:`bound_to_parent`: a command line whose process gets SIGTERM when its parent dies;
* :func:`iso_time`: a Unix time as ISO 8601 UTC with milliseconds (``2026-11-29T13:23:05.120Z``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and one rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, "utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (a folder, or a lock file created when missing)."""
    flags = os.O_RDONLY if os.path.isdir(path) else os.O_RDONLY | os.O_CREAT
    fd = os.open(path, flags, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# Runs in the child, then becomes the command: the death signal survives ``exec``. A ``preexec_fn``
# would do the same in fewer steps, but it makes ``subprocess`` fork the whole parent, and gRPC's
# fork handlers (grpcio >= 1.80, grpc/grpc#43055) then abort the child now and then with
# "epoll_wait error: Bad file descriptor" before it reaches ``exec``.
_BIND_TO_PARENT = (
    "import ctypes, os, signal, sys\n"
    f"ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(128 + signal.SIGTERM)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def bound_to_parent(command: Sequence[str]) -> list[str]:
    """``command`` behind a tiny launcher that asks Linux for SIGTERM when this process dies.

    The signal follows the thread that starts the child: call it from a thread that lives as long
    as the child should (the main thread, usually).
    """
    if not sys.platform.startswith("linux"):
        return list(command)
    return [sys.executable, "-I", "-S", "-c", _BIND_TO_PARENT, str(os.getpid()), *command]


def iso_time(at: float) -> str:
    """``at`` (Unix seconds) as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"
