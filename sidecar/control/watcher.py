"""What tells the lifecycle manager that versions changed: the plugin folder, or a manifest.

:class:`ModelsWatcher` watches the models folder and reports which plugin versions changed
(debounced); :class:`ManifestWatcher` polls a read-only repository's manifest and reports the
versions whose records changed. Both call ``on_change`` with a sorted list of :class:`Change`.


A watchdog observer (its own thread) hands each file event to the asyncio loop, which maps the
path ``<models>/<model_id>/<version>/...`` to a :class:`Change` and, once no event has come for
``debounce_s``, calls ``on_change`` with the set collected. An event on ``<models>/<model_id>``
itself (a model folder added or removed as a whole) yields ``Change(model_id, None)``: every version.
Editor and interpreter droppings (hidden files, ``__pycache__``, ``*.pyc``, ``*.swp``, ``*~``) are
ignored. SIGHUP is handled by the orchestrator, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from sidecar.control.sources import RepositorySource
from sidecar.control.tasks import cancelled

LOGGER = logging.getLogger(__name__)
_IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp", ".swx", ".tmp", "~")


@dataclass(frozen=True, order=True)
class Change:
    model_id: str
    version: str | None  # None: every version of the model


def change_for(models_dir: Path, path: str | os.PathLike[str]) -> Change | None:
    """The plugin version a path belongs to, or None for paths outside any plugin."""
    try:
        parts = Path(path).relative_to(models_dir).parts
    except ValueError:
        return None
    if not parts or any(p.startswith(".") or p == "__pycache__" for p in parts):
        return None
    if parts[-1].endswith(_IGNORED_SUFFIXES):
        return None
    return Change(parts[0], parts[1] if len(parts) > 1 else None)


class ModelsWatcher:
    """Debounced watch of ``models_dir``; ``on_change`` gets a sorted list of changes."""

    def __init__(
        self,
        models_dir: str | os.PathLike[str],
        on_change: Callable[[list[Change]], Awaitable[None]],
        *,
        debounce_s: float = 0.25,
    ) -> None:
        self.models_dir = Path(models_dir).resolve()
        self.on_change = on_change
        self.debounce_s = debounce_s
        self._pending: set[Change] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        observer = Observer()
        observer.schedule(_Handler(self), str(self.models_dir), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer
        LOGGER.info("watching %s for plugin changes", self.models_dir)

    async def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            await asyncio.to_thread(self._observer.join, 5.0)
            self._observer = None
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            await cancelled(task)

    def notify(self, path: str | os.PathLike[str]) -> None:
        """Record one event (from any thread)."""
        change = change_for(self.models_dir, path)
        if change is None or self._loop is None or self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self._loop.call_soon_threadsafe(self._add, change)

    def _add(self, change: Change) -> None:
        self._pending.add(change)
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer = self._loop.call_later(self.debounce_s, self._flush)

    def _flush(self) -> None:
        self._timer = None
        changes, self._pending = sorted(self._pending, key=_sort_key), set()
        if not changes:
            return
        LOGGER.info("plugin changes: %s", ", ".join(f"{c.model_id}:{c.version or '*'}" for c in changes))
        task = asyncio.get_running_loop().create_task(self._deliver(changes))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, changes: list[Change]) -> None:
        try:
            await self.on_change(changes)
        except Exception:
            LOGGER.exception("handling plugin changes failed")


class ManifestWatcher:
    """Polls the manifest of a read-only repository every ``interval_s``; reports changed versions."""

    def __init__(
        self,
        source: RepositorySource,
        on_change: Callable[[list[Change]], Awaitable[None]],
        *,
        interval_s: float = 2.0,
    ) -> None:
        self.source = source
        self.on_change = on_change
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ruth-manifest-watch")
        LOGGER.info("watching %s for a rebuilt manifest", self.source.repository)

    async def stop(self) -> None:
        await cancelled(self._task)
        self._task = None

    async def _run(self) -> None:
        signature = self.source.signature()
        digests = await asyncio.to_thread(self._digests)
        while True:
            await asyncio.sleep(self.interval_s)
            current = self.source.signature()
            if current == signature:
                continue
            signature = current
            try:
                fresh = await asyncio.to_thread(self._digests)
                changed = sorted(k for k in fresh.keys() | digests.keys() if fresh.get(k) != digests.get(k))
                digests = fresh
                if changed:
                    LOGGER.info("manifest changed: %s", ", ".join(f"{m}:{v}" for m, v in changed))
                    await self.on_change([Change(m, v) for m, v in changed])
            except Exception:
                LOGGER.exception("handling the changed manifest failed")

    def _digests(self) -> dict[tuple[str, str], str]:
        return {key: self.source.digest(key) for key in self.source.versions()}


def _sort_key(change: Change) -> tuple[str, str]:
    return (change.model_id, change.version or "")


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: ModelsWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        self._watcher.notify(os.fsdecode(event.src_path))
        dest = getattr(event, "dest_path", "")
        if dest:
            self._watcher.notify(os.fsdecode(dest))
