"""Run a command in a pseudo-terminal (the stdlib ``pty``), as a person at a terminal would see it."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Seen:
    returncode: int
    raw: str  # what the terminal received, escape sequences included

    @property
    def text(self) -> str:
        """Without escape sequences, carriage returns as line ends (each redraw on its own line)."""
        return ANSI.sub("", self.raw).replace("\r\n", "\n").replace("\r", "\n")


def run_in_terminal(
    command: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    timeout_s: float = 300.0,
    interrupt_after: str | None = None,
    columns: int = 120,
) -> Seen:
    """Run ``command`` with a terminal of ``columns`` columns as its stdin, stdout and stderr; send it
    SIGINT once ``interrupt_after`` has been printed (a server that runs until Ctrl-C)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**env, "TERM": "xterm-256color", "COLUMNS": str(columns)}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(list(command), stdin=follower, stdout=follower, stderr=follower, env=env,
                               cwd=cwd, start_new_session=True)
    os.close(follower)
    received = b""
    interrupted = False
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                chunk = _read(leader)
                if not chunk:  # the terminal closed: every process on it has ended
                    break
                received += chunk
                text = ANSI.sub("", received.decode(errors="replace"))
                if interrupt_after and not interrupted and interrupt_after in text:
                    process.send_signal(signal.SIGINT)
                    interrupted = True
            elif process.poll() is not None:
                received += _rest(leader)  # what it wrote between the last look and its end
                break
        else:
            raise AssertionError(f"{command[0]} still ran after {timeout_s} s:\n{received.decode()[-3000:]}")
        return Seen(process.wait(timeout=60), received.decode(errors="replace"))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)


def _read(leader: int) -> bytes:
    """The next chunk the terminal received; b"" once it closed."""
    try:
        return os.read(leader, 65536)
    except OSError:  # EIO: no process has the terminal open any more
        return b""


def _rest(leader: int) -> bytes:
    """What is still to be read once the command ended: until the terminal closes or stays quiet."""
    rest = b""
    while select.select([leader], [], [], 0.5)[0] and (chunk := _read(leader)):
        rest += chunk
    return rest
