"""What a long command is doing, for the person waiting: a row per subject (the repository, a plugin
version whose environment is built, the inference server, a model it loads, the sidecar) with its
current step and the time it has taken.

The library reports to a :class:`Progress`; the base class shows nothing (the library's default, and
``--json``'s). :class:`PlainProgress` writes a line per step (a log, a pipe);
:func:`ruthgen.console.progress_for` picks it or live ``rich`` rows on a terminal. Steps may come
from several threads. Nothing here needs ``rich`` (the sidecar builds entries with it too).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import IO

#: ``report(step, detail)``: the steps of one subject (what :meth:`Progress.reporter` returns).
Report = Callable[[str, str], None]


class Progress:
    """Receives the steps of subjects; shows nothing. Use as a context manager (``close`` at the end)."""

    def step(self, subject: str, step: str, detail: str = "") -> None:
        """``subject`` is now at ``step`` (``detail``: what exactly, e.g. the package downloading)."""

    def done(self, subject: str, outcome: str, ok: bool = True) -> None:
        """``subject`` is finished: ``outcome`` says how (``ok`` False: it failed)."""

    def reporter(self, subject: str) -> Report:
        return lambda step, detail="": self.step(subject, step, detail)

    def close(self) -> None:
        """Stop showing (rows already shown stay)."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PlainProgress(Progress):
    """A line per change on ``stream``: ``fire_detection 2.1.0: downloading numpy 1.26.4 (18.2 MB) [3.1 s]``
    (the time since the subject's first step)."""

    def __init__(self, stream: IO[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self._clock = clock
        self._started: dict[str, float] = {}
        self._last: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def step(self, subject: str, step: str, detail: str = "") -> None:
        with self._lock:
            if self._last.get(subject) == (step, detail):
                return
            self._last[subject] = (step, detail)
            started = self._started.setdefault(subject, self._clock())
            text = f"{step} {detail}" if detail else step
            self._write(f"{subject}: {text} [{self._clock() - started:.1f} s]")

    def done(self, subject: str, outcome: str, ok: bool = True) -> None:
        with self._lock:
            started = self._started.pop(subject, None)
            self._last.pop(subject, None)
            took = f" ({self._clock() - started:.1f} s)" if started is not None else ""
            self._write(f"{subject}: {outcome}{took}" if ok else f"{subject}: FAILED: {outcome}{took}")

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()
