"""The lifecycle of :mod:`sidecar.manager` behind the interface the core expects of its lifecycle.

Used when the sidecar owns the plugin folder (``models_dir`` is set): the manager regenerates and
loads entries itself (hot reload, recovery), and :class:`ManagedLifecycle` mirrors its decisions into
the core's :class:`~sidecar.registry.Registry`, which the request path reads: the record of a version
gets the state, the last error and the Triton name currently serving it (the routing switch of a
zero-drop reload is that one assignment). Every answered request comes back through :meth:`observe`.
Without ``models_dir`` the core keeps its manifest-driven :class:`~sidecar.lifecycle.Lifecycle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from sidecar.capabilities import model_health
from sidecar.entries import RuthgenEntries, StagedEntry
from sidecar.errors import SidecarError
from sidecar.health import HealthPolicy
from sidecar.manager import LifecycleManager
from sidecar.operations import RuntimeOperations
from sidecar.recovery import RecoveryPolicy, StubKiller, find_server_pid
from sidecar.registration import RegistrationConfig
from sidecar.registry import Health as RegistryHealth
from sidecar.registry import ModelRecord as CoreRecord
from sidecar.registry import ModelState as CoreState
from sidecar.registry import Registry, record_from_manifest
from sidecar.settings import SidecarSettings
from sidecar.states import ModelRecord, Transition
from sidecar.triton import ModelProcessDied, ServerReadiness, TritonAdapter, build_request

LOGGER = logging.getLogger(__name__)
CALIBRATION_FRAMES = 8
CALIBRATION_TIMEOUT_S = 10.0


@dataclass
class ManagedRecord(CoreRecord):
    """A core record whose health is the lifecycle manager's (window, latency hint, state)."""

    health_of: Callable[[CoreRecord], RegistryHealth] | None = field(default=None, repr=False)

    @property
    def health(self) -> RegistryHealth:  # type: ignore[override]
        return self.health_of(self) if self.health_of is not None else CoreRecord.health.fget(self)  # type: ignore[attr-defined]


class ManagedLifecycle:
    """Drop-in for :class:`sidecar.lifecycle.Lifecycle` that runs the lifecycle manager."""

    def __init__(
        self,
        settings: SidecarSettings,
        adapter: TritonAdapter,
        registry: Registry,
        server_pid: Callable[[], int | None] | None = None,
    ) -> None:
        assert settings.models_dir is not None
        self.settings = settings
        self.adapter = adapter
        self.registry = registry
        self.readiness = ServerReadiness()
        self._task: asyncio.Task[None] | None = None
        port = _port_of(settings.triton_url)
        pid = server_pid or (lambda: settings.triton_pid or find_server_pid(port))
        self.manager = LifecycleManager(
            adapter,
            RuthgenEntries(settings.models_dir, settings.model_repository, settings.target),
            health_policy=HealthPolicy(
                window_requests=settings.health_window_requests,
                window_s=settings.health_window_s,
                latency_factor=settings.health_latency_factor,
                max_consecutive_timeouts=settings.timeouts_before_unhealthy,
            ),
            policy=RecoveryPolicy(
                load_timeout_s=settings.load_timeout_s,
                unload_timeout_s=settings.unload_timeout_s,
                drain_timeout_s=settings.drain_timeout_s,
                cooldown_s=settings.recovery_cooldown_s,
                max_retries=settings.recovery_max_retries,
                max_consecutive_timeouts=settings.timeouts_before_unhealthy,
            ),
            stub_killer=StubKiller(pid),
            calibrate=self._calibrate,
        )
        self.operations = RuntimeOperations(
            self.manager,
            registration=RegistrationConfig(
                backend_url=settings.backend_url,
                token=settings.backend_token,
                heartbeat_s=settings.registration_interval_s,
            ),
            models_dir=settings.models_dir,
            watch=settings.watch_models,
            watch_debounce_s=settings.watch_debounce_s,
            runtime_id=settings.runtime_id,
            server_ready=lambda: self.server_ready,
        )
        self.manager.registry.add_listener(self._mirror_state)
        self.manager.on_route(self._mirror_route)

    # ---- what the core calls ---------------------------------------------------------------------

    @property
    def server_ready(self) -> bool:
        return self.readiness.ready

    def on_server_ready_change(self, listener: Callable[[bool], None]) -> None:
        self.readiness.subscribe(listener)

    def wake(self) -> None:
        """Nothing to poll: the manager reacts to each request's outcome in :meth:`observe`."""

    async def start(self) -> None:
        await self.readiness.wait(self.adapter, self.settings.triton_connect_timeout_s)
        await self.readiness.check(self.adapter)
        await self.operations.start()
        self._task = asyncio.get_running_loop().create_task(self._poll_server())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.operations.stop()

    async def rescan(self, model_id: str | None = None) -> None:
        await self.operations.rescan(model_id)

    def begin(self, triton_name: str) -> None:
        """A request was routed to ``triton_name``: its unload waits until :meth:`end`."""
        self.manager.begin(triton_name)

    def end(self, triton_name: str) -> None:
        self.manager.end(triton_name)

    def observe(self, record: CoreRecord, error: SidecarError | None, elapsed_ms: float) -> None:
        code = None if error is None else error.code.value
        self.operations.observe(
            record.model_id, record.version, ok=error is None, latency_ms=elapsed_ms, code=code,
            message=None if error is None else error.message,
            process_died=isinstance(error, ModelProcessDied), name=record.triton_name,
        )

    def runtime_health(self) -> RegistryHealth:
        return RegistryHealth(self.manager.runtime_health().status.value)

    def model_health(self, record: CoreRecord) -> RegistryHealth:
        mine = self.manager.registry.get(record.model_id, record.version)
        if mine is None:
            return RegistryHealth.UNHEALTHY
        tracker = self.manager.trackers.get(mine.key)
        return RegistryHealth(model_health(mine, tracker.snapshot() if tracker else None).value)

    # ---- mirroring into the core's registry ------------------------------------------------------

    def _mirror_state(self, mine: ModelRecord, step: Transition) -> None:
        record = self._core_record(mine)
        record.set_state(CoreState(mine.state.value), mine.reason if mine.last_error else "")
        if mine.last_error:
            record.last_error = mine.last_error
        record.triton_name = mine.active_name or record.triton_name

    def _mirror_route(self, mine: ModelRecord, staged: StagedEntry | None) -> None:
        record = self._core_record(mine)
        if staged is not None:
            fresh = record_from_manifest(staged.record)
            for name in ("input_type", "format", "min_width", "min_height", "max_width", "max_height",
                         "batched", "sequence", "output_schema", "digest"):
                setattr(record, name, getattr(fresh, name))
            record.valid = True
            record.triton_name = staged.name

    def _core_record(self, mine: ModelRecord) -> CoreRecord:
        key = mine.key
        record = self.registry.records.get(key)
        if record is None:
            record = ManagedRecord(mine.model_id, mine.version, mine.active_name or "", valid=False,
                                   state=CoreState.DISCOVERED, health_of=self.model_health)
            self.registry.records[key] = record
            versions = self.registry.versions.setdefault(mine.model_id, [])
            if mine.version not in versions:
                versions.append(mine.version)
        return record

    # ---- capacity ----------------------------------------------------------------------------------

    async def _calibrate(self, mine: ModelRecord) -> float | None:
        """Frames per second at batch 1 (sequential) and at the largest batch (concurrent).

        Synthetic frames of the declared format and minimum size go straight to Triton (they are
        not counted as traffic). Temporal models are left to the live statistics.
        """
        record = self.registry.records.get(mine.key)
        if record is None or record.sequence or not record.triton_name:
            return None
        data, width, height = synthetic_frame(record)
        loop = asyncio.get_running_loop()
        ids = iter(range(1, 1_000_000))

        async def one() -> None:
            request = build_request(record, f"calibration-{next(ids)}", data, width, height,
                                    "calibration", "", 0)
            await self.adapter.infer(request, CALIBRATION_TIMEOUT_S)

        try:
            await one()  # first call: caches, lazy imports
            started = loop.time()
            for _ in range(CALIBRATION_FRAMES):
                await one()
            single = CALIBRATION_FRAMES / (loop.time() - started)
            width_in_flight = max(1, mine.max_batch_size) * max(1, mine.instance_count)
            started = loop.time()
            for _ in range(2):
                await asyncio.gather(*(one() for _ in range(width_in_flight)))
            batched = 2 * width_in_flight / (loop.time() - started)
        except SidecarError as exc:
            LOGGER.info("calibration of %s failed: %s", record.triton_name, exc.message)
            if isinstance(exc, ModelProcessDied):  # the model broke: that is news for recovery
                self.observe(record, exc, 0.0)
            return None
        fps = max(single, batched)
        LOGGER.info("%s calibrated: %.1f fps at batch 1, %.1f fps with %d in flight",
                    record.triton_name, single, batched, width_in_flight)
        return fps

    # ---- Triton readiness ------------------------------------------------------------------------

    async def _poll_server(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_interval_s)
            await self.readiness.check(self.adapter)


def synthetic_frame(record: CoreRecord) -> tuple[bytes, int, int]:
    """A frame the model accepts: its format, at least its minimum size (64x48 when it allows)."""
    width = max(record.min_width, min(64, record.max_width or 64))
    height = max(record.min_height, min(48, record.max_height or 48))
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    if record.raw:
        return pixels.tobytes(), width, height
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG" if record.format == "png" else "JPEG")
    return buffer.getvalue(), width, height


def _port_of(url: str) -> int | None:
    try:
        return int(url.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None
