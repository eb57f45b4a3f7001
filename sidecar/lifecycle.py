"""Keeps the registry in step with the manifest and Triton, and loads what should be loaded.

At startup every VALID model of the manifest that Triton has not loaded is loaded (explicit model
control); a failure is recorded with Triton's reason (state FAILED). Afterwards the repository
index is polled every ``refresh_interval_s`` and on events (a model process died, Triton said a
model is not loaded); a model whose process died (state ERROR) is reloaded, at most once per
``RELOAD_BACKOFF_S``; a changed manifest is re-read and its new or changed models loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from sidecar.errors import ManifestError, SidecarError
from sidecar.registry import ModelRecord, ModelState, Registry, read_manifest
from sidecar.settings import SidecarSettings
from sidecar.triton import ModelLoadError, ServerReadiness, TritonAdapter

LOGGER = logging.getLogger(__name__)

RELOAD_BACKOFF_S = 10.0
LOAD_CONCURRENCY = 4


class Lifecycle:
    """Owns the manifest reading, the Triton index refresh and the model loads."""

    def __init__(self, settings: SidecarSettings, adapter: TritonAdapter, registry: Registry) -> None:
        self.settings = settings
        self.adapter = adapter
        self.registry = registry
        self.readiness = ServerReadiness()
        self._manifest_key: tuple[int, int] | None = None
        self._to_load: set[tuple[str, str]] = set()
        self._to_reload: set[tuple[str, str]] = set()
        self._last_reload: dict[tuple[str, str], float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def server_ready(self) -> bool:
        return self.readiness.ready

    def on_server_ready_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(ready)`` whenever Triton's readiness changes (and once now)."""
        self.readiness.subscribe(listener)

    def wake(self) -> None:
        """Refresh soon (an event suggests the model states changed)."""
        self._wake.set()

    async def start(self) -> None:
        self.read_manifest()
        await self.readiness.wait(self.adapter, self.settings.triton_connect_timeout_s)
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def read_manifest(self) -> bool:
        """Re-read the manifest when it changed; True when it did."""
        path = self.settings.manifest_path
        try:
            stat = path.stat()
        except OSError:
            if self._manifest_key is None and not self.registry.records:
                LOGGER.warning("no manifest at %s yet; serving no models until it appears", path)
                self._manifest_key = (0, 0)
            return False
        key = (stat.st_mtime_ns, stat.st_size)
        if key == self._manifest_key:
            return False
        try:
            records = read_manifest(path)
        except ManifestError as e:
            LOGGER.error("%s", e.message)
            return False
        self._manifest_key = key
        new, changed = self.registry.replace(records)
        self._to_load.update((r.model_id, r.version) for r in new if r.valid)
        self._to_reload.update((r.model_id, r.version) for r in changed if r.valid)
        LOGGER.info("manifest %s: %d models (%d new, %d changed)", path, len(records), len(new), len(changed))
        return True

    async def refresh(self) -> None:
        """One refresh: manifest, Triton readiness, repository index, pending loads."""
        self.read_manifest()
        if not await self.readiness.check(self.adapter):
            return
        try:
            self.registry.apply_index(await self.adapter.repository_index())
        except SidecarError as e:
            LOGGER.warning("cannot refresh model states: %s", e.message)
            return
        if self.settings.load_models:
            await self._load_pending()

    async def _loop(self) -> None:
        interval = self.settings.refresh_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            try:
                await self.refresh()
            except Exception:  # keep refreshing whatever one round did
                LOGGER.exception("model state refresh failed")

    async def _load_pending(self) -> None:
        now = time.monotonic()
        todo: list[ModelRecord] = []
        for record in self.registry.records.values():
            key = (record.model_id, record.version)
            if not record.valid or record.state is ModelState.LOADING:
                continue
            if key in self._to_reload:
                todo.append(record)
            elif key in self._to_load:
                if record.state is not ModelState.READY:
                    todo.append(record)
            elif record.state is ModelState.ERROR and self._may_reload(key, now):
                todo.append(record)
        self._to_load.clear()
        self._to_reload.clear()
        if not todo:
            return
        limit = asyncio.Semaphore(LOAD_CONCURRENCY)

        async def load(record: ModelRecord) -> None:
            async with limit:
                await self.load(record)

        await asyncio.gather(*(load(r) for r in todo))

    def _may_reload(self, key: tuple[str, str], now: float) -> bool:
        last = self._last_reload.get(key)
        return last is None or now - last >= RELOAD_BACKOFF_S

    async def load(self, record: ModelRecord) -> None:
        """Load (or, after an ERROR, reload) one model; records FAILED with Triton's reason."""
        reload = record.state is ModelState.ERROR
        if reload:
            self._last_reload[(record.model_id, record.version)] = time.monotonic()
            with contextlib.suppress(SidecarError):
                await self.adapter.unload_model(record.triton_name)
        record.set_state(ModelState.LOADING)
        try:
            await self.adapter.load_model(record.triton_name)
        except ModelLoadError as e:
            record.set_state(ModelState.FAILED, e.message)
            LOGGER.error("%s %s failed to load: %s", record.model_id, record.version, e.message)
            return
        except SidecarError as e:
            record.set_state(ModelState.FAILED, e.message)
            return
        record.set_state(ModelState.READY)
