"""Ending the processes tests start."""

from __future__ import annotations

import subprocess


def stop(process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if the process is still there after ``timeout_s``; reaped either way."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
