"""The runtime's control plane: lifecycle manager, watcher, health, capabilities, registration, metrics.

:class:`RuntimeOperations` is what the orchestrator starts after Triton is up and what the core
delegates to for everything that is not inference: the initial loads, rescans (watcher, SIGHUP,
the admin call), liveness and readiness, ``/models``, ``/capabilities``, ``/metrics`` and the
registration with the backend. Its periodic tick ages the health windows and refreshes the
hardware figures off the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecar.capabilities import build_declaration, fps_capacity, is_loaded, model_health
from sidecar.hardware import HardwareInfo, HardwareProbe
from sidecar.manager import LifecycleManager
from sidecar.metrics import RuntimeMetrics
from sidecar.registration import Registrar, RegistrationConfig
from sidecar.watcher import ModelsWatcher

LOGGER = logging.getLogger(__name__)


class RuntimeOperations:
    def __init__(
        self,
        manager: LifecycleManager,
        *,
        registration: RegistrationConfig | None = None,
        hardware: HardwareProbe | None = None,
        models_dir: str | os.PathLike[str] | None = None,
        watch: bool = True,
        watch_debounce_s: float = 0.25,
        tick_s: float = 5.0,
        runtime_id: str = "ruth-ai-runtime",
        runtime_version: str = "0.1.0",
        server_ready: Callable[[], bool] = lambda: True,
        transport: Any = None,
    ) -> None:
        self.manager = manager
        self.hardware_probe = hardware or HardwareProbe()
        self.hardware = HardwareInfo(type="cpu", supports_gpu=False)
        self.runtime_id = runtime_id
        self.runtime_version = runtime_version
        self.server_ready = server_ready
        self.tick_s = tick_s
        self.metrics = RuntimeMetrics(self._metrics_state)
        config = registration or RegistrationConfig()
        self.registrar = Registrar(config, self.capabilities, transport=transport)
        self.watcher = (
            ModelsWatcher(Path(models_dir), manager.on_files_changed, debounce_s=watch_debounce_s)
            if models_dir is not None and watch
            else None
        )
        self.started = False
        self._tick_task: asyncio.Task[None] | None = None
        manager.on_change(self.registrar.mark_dirty)

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Detect the hardware, load every plugin, then register and start watching."""
        self.hardware = await asyncio.to_thread(self.hardware_probe.detect)
        LOGGER.info("hardware: %s", self.hardware.to_dict())
        if self.watcher is not None:
            self.watcher.start()  # before the scan: a folder added meanwhile is not missed
        await self.manager.rescan()
        self.started = True
        self.registrar.start()
        self._tick_task = asyncio.get_running_loop().create_task(self._tick_loop(), name="ruth-ops-tick")

    async def stop(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        if self.watcher is not None:
            await self.watcher.stop()
        await self.registrar.stop()
        await self.manager.stop()

    async def rescan(self, model_id: str | None = None) -> list[dict[str, Any]]:
        """A requested rescan (SIGHUP, admin call): also retries FAILED/INVALID/given-up versions."""
        LOGGER.info("rescan requested%s", f" for {model_id}" if model_id else "")
        return await self.manager.rescan(model_id, force=True)

    # ---- the request path ------------------------------------------------------------------------

    def observe(
        self, model_id: str, version: str, *, ok: bool, latency_ms: float, code: str | None = None,
        message: str | None = None, process_died: bool = False, name: str | None = None,
    ) -> None:
        self.metrics.observe(model_id, version, None if ok else code, latency_ms / 1000.0)
        self.manager.observe(
            model_id, version, ok=ok, latency_ms=latency_ms, code=code, message=message,
            process_died=process_died, name=name,
        )

    # ---- status ----------------------------------------------------------------------------------

    def live(self) -> bool:
        return True

    def metrics_text(self) -> tuple[bytes, str]:
        return self.metrics.render()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when the initial loads are done, Triton is ready and a model is serving."""
        runtime = self.manager.runtime_health()
        server = self.server_ready()
        ready = self.started and server and runtime.ready
        body = {"ready": ready, "inference_server_ready": server, "initial_loads_done": self.started,
                **runtime.to_dict()}
        return ready, body

    def capabilities(self) -> dict[str, Any]:
        declaration = build_declaration(
            runtime_id=self.runtime_id,
            runtime_version=self.runtime_version,
            records=list(self.manager.registry),
            health=self.manager.snapshots(),
            hardware=self.hardware,
        )
        declaration["registration"] = self.registrar.status.to_dict()
        return declaration

    def models(self, model_id: str | None = None, version: str | None = None) -> list[dict[str, Any]]:
        snapshots = self.manager.snapshots()
        found = []
        for record in self.manager.registry:
            if (model_id and record.model_id != model_id) or (version and record.version != version):
                continue
            item = record.to_dict()
            snapshot = snapshots.get(record.key)
            item["health"] = model_health(record, snapshot).value
            item["performance"] = snapshot.to_dict() if snapshot else None
            item["fps_capacity"] = fps_capacity(record)
            found.append(item)
        return found

    def _metrics_state(self) -> dict[str, Any]:
        snapshots = self.manager.snapshots()
        models = [
            {
                "model_id": r.model_id, "version": r.version, "state": r.state.value,
                "health": model_health(r, snapshots.get(r.key)).value,
                "fps_capacity": fps_capacity(r), "recovery_attempts": r.recovery_attempts,
            }
            for r in self.manager.registry
        ]
        return {
            "models": models,
            "runtime_health": self.manager.runtime_health().status,
            "registrations": self.registrar.status.to_dict(),
            "loaded": sum(1 for r in self.manager.registry if is_loaded(r)),
        }

    async def _tick_loop(self) -> None:
        last_hardware = time.monotonic()
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.manager.tick()
                if time.monotonic() - last_hardware >= self.registrar.config.heartbeat_s:
                    last_hardware = time.monotonic()
                    self.hardware = await asyncio.to_thread(self.hardware_probe.detect)
                    await self.manager.refresh_capacity()
            except Exception:
                LOGGER.exception("periodic runtime refresh failed")
