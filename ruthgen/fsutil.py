"""File and process helpers shared by the generator, the embedded launcher and the sidecar.

* :func:`write_atomic`: a file replaced in one rename, never seen half-written;
* :func:`locked`: an exclusive ``flock`` on a file (created when missing) or a folder;
* :func:`die_with_parent`: for ``preexec_fn``, the child gets SIGTERM when its parent dies;
* :func:`iso_time`: a Unix time as ISO 8601 UTC with milliseconds (``2026-11-29T13:23:05.120Z``).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import time
import uuid
from collections.abc import Iterator
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


def die_with_parent() -> None:
    """In a child between fork and exec: get SIGTERM when the parent thread that started it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def iso_time(at: float) -> str:
    """``at`` (Unix seconds) as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"
