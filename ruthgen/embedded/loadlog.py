"""tritonserver's log followed while it starts: which model is loading, warming up, ready or failed.

``ruthgen up`` shows it as progress. The lines read are Triton 2.51's model lifecycle messages and the
generated wrapper's own (``<model_id>:<version> loaded in N ms; warming up``, ``... ready in N ms``).

    with following_loads(log_path, progress):
        triton.start()
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ruthgen.naming import parse_triton_name
from ruthgen.progress import Progress

_LOADING = re.compile(r'"loading: (?P<name>[^:"]+):\d+"')
_LOADED = re.compile(r"\"successfully loaded '(?P<name>[^']+)'\"")
_FAILED = re.compile(r"\"failed to load '(?P<name>[^']+)' version \d+: (?P<reason>.*?)(?:\\n|\"$)")
_MODEL = r'"(?P<model>[a-z][a-z0-9_]*):(?P<version>\S+) '
_WARMING = re.compile(_MODEL + r'loaded in (?P<ms>\d+) ms; warming up"')
_READY = re.compile(_MODEL + r"ready in (?P<ms>\d+) ms \(warmup (?P<warmup>[\d.]+) ms")


@dataclass(frozen=True)
class LoadEvent:
    """One step of one model: ``kind`` is ``loading``, ``warming up``, ``ready`` (the wrapper's
    timings), ``loaded`` or ``failed``; ``subject`` is ``<model_id> <version>``."""

    subject: str
    kind: str
    detail: str = ""


def _subject(name: str) -> str:
    try:
        model_id, version = parse_triton_name(name)
    except ValueError:
        return name
    return f"{model_id} {version}"


def load_event(line: str) -> LoadEvent | None:
    """The model step one log line tells, or None."""
    if found := _LOADING.search(line):
        return LoadEvent(_subject(found["name"]), "loading")
    if found := _LOADED.search(line):
        return LoadEvent(_subject(found["name"]), "loaded")
    if found := _FAILED.search(line):
        reason = found["reason"].strip().removeprefix("Internal: ")
        return LoadEvent(_subject(found["name"]), "failed", reason)
    if found := _WARMING.search(line):
        subject = f"{found['model']} {found['version']}"
        return LoadEvent(subject, "warming up", f"(loaded in {found['ms']} ms)")
    if found := _READY.search(line):
        return LoadEvent(f"{found['model']} {found['version']}", "ready", f"warmup {found['warmup']} ms")
    return None


class LoadProgress:
    """Turns load events into progress steps: loading in Triton, warming up, READY or failed."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self._timings: dict[str, str] = {}

    def line(self, text: str) -> None:
        event = load_event(text)
        if event is None:
            return
        if event.kind == "loading":
            self.progress.step(event.subject, "loading in Triton")
        elif event.kind == "warming up":
            self.progress.step(event.subject, "warming up", event.detail)
        elif event.kind == "ready":
            self._timings[event.subject] = event.detail
        elif event.kind == "loaded":
            timing = self._timings.pop(event.subject, "")
            self.progress.done(event.subject, f"READY, {timing}" if timing else "READY")
        else:
            self.progress.done(event.subject, f"load failed: {event.detail}", ok=False)


class LogFollower:
    """Calls ``on_line`` with each line written to ``path`` from now on, from a thread, until stopped.

    The file may not exist yet, and may be truncated (a server started again writes it anew)."""

    def __init__(self, path: Path, on_line: Callable[[str], None], interval_s: float = 0.1) -> None:
        self.path = path
        self.on_line = on_line
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ruth-log-follower", daemon=True)
        self._position = 0
        self._pending = b""

    def start(self) -> LogFollower:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Read what is left, then stop."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            self._read()
            if stopping:
                return
            self._stop.wait(self.interval_s)

    def _read(self) -> None:
        try:
            with open(self.path, "rb") as log:
                log.seek(0, 2)
                if log.tell() < self._position:  # written anew
                    self._position, self._pending = 0, b""
                log.seek(self._position)
                data = log.read()
                self._position = log.tell()
        except OSError:
            return
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            self.on_line(line.decode("utf-8", "replace"))


@contextlib.contextmanager
def following_loads(log_path: Path, progress: Progress) -> Iterator[None]:
    """Tell ``progress`` each model's load steps that tritonserver logs in ``log_path`` meanwhile
    (the log is started anew: what an earlier server wrote there is not read)."""
    with contextlib.suppress(FileNotFoundError):
        log_path.unlink()
    follower = LogFollower(log_path, LoadProgress(progress).line).start()
    try:
        yield
    finally:
        follower.stop()
