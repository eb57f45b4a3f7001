"""The one runtime core both transports call: the request path and the control plane, composed.

:class:`RuntimeCore` owns the route table and leases, the request pipeline, the lifecycle manager
with its entry source and watcher, Triton's readiness, metrics, hardware and the registration. The
sidecar's entry point (:func:`sidecar.main.build_core`) chooses the parts from the settings; the
transports (``sidecar.grpc``, ``sidecar.http``) only convert their messages and call the methods
below. A periodic tick checks Triton's readiness (the first time it is ready the initial loads
run; when it comes back after an outage the models it lost are reloaded), ages the health windows
and refreshes hardware and capacity figures every registration heartbeat.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from sidecar.control.capacity import Capacity
from sidecar.control.health import Health, HealthPolicy, HealthSnapshot, is_loaded, model_health
from sidecar.control.isolation import IsolationReports
from sidecar.control.manager import LifecycleManager
from sidecar.control.readiness import ServerReadiness
from sidecar.control.recovery import RecoveryPolicy, StubKiller
from sidecar.control.sources import EntrySource
from sidecar.control.states import ModelRecord
from sidecar.control.tasks import cancelled
from sidecar.control.watcher import Change
from sidecar.errors import ModelNotFound, SidecarError
from sidecar.report.capabilities import build_declaration, fps_capacity
from sidecar.report.hardware import HardwareInfo, HardwareProbe, detect
from sidecar.report.metrics import RuntimeMetrics
from sidecar.report.registration import Registrar, RegistrationConfig
from sidecar.request.limits import AdmittedStream, StreamLimits
from sidecar.request.pipeline import Outcome, Pipeline
from sidecar.request.routes import Leases, Route, RouteTable
from sidecar.request.shared_frames import CallRegions, FramePool, RegionPolicy
from sidecar.request.stream import StreamSession
from sidecar.settings import SidecarSettings
from sidecar.triton_client import TritonAdapter

LOGGER = logging.getLogger(__name__)

DISTRIBUTION = "ruth-ai-runtime"
#: how often a drain looks whether the unary calls it waits for are answered
DRAIN_POLL_S = 0.01


class Watcher(Protocol):
    def start(self) -> None: ...
    async def stop(self) -> None: ...


#: Builds the watcher that reports changed versions to the manager's ``on_changes``.
WatcherFactory = Callable[[Callable[[list[Change]], Awaitable[None]]], Watcher]


@dataclass(frozen=True)
class ModelView:
    """One version as status calls report it: its record, health and request statistics."""

    record: ModelRecord
    health: Health
    snapshot: HealthSnapshot | None
    #: why a READY version does not serve (an upstream that does not), else None
    waiting: str | None = None

    @property
    def upstreams(self) -> list[dict[str, str]]:
        contract = self.record.contract
        return [u.model_dump() for u in contract.upstreams] if contract else []


@dataclass(frozen=True)
class HealthReport:
    status: Health
    server_ready: bool
    models: list[ModelView]
    runtime_id: str = ""
    draining: bool = False

    @property
    def models_ready(self) -> int:
        return sum(1 for m in self.models if m.record.state.value == "READY")


def runtime_version() -> str:
    """The installed distribution's version (``0+unknown`` when run from an uninstalled tree)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class RuntimeCore:
    """Everything the AIRuntime service and the HTTP port do, independent of the transport."""

    def __init__(
        self,
        settings: SidecarSettings,
        adapter: TritonAdapter,
        source: EntrySource,
        *,
        watcher: WatcherFactory | None = None,
        stub_killer: StubKiller | None = None,
        hardware: HardwareProbe | None = None,
        registration_transport: Any = None,
    ) -> None:
        self.settings = settings
        self.adapter = adapter
        self.routes = RouteTable()
        self.leases = Leases()
        self.readiness = ServerReadiness(adapter)
        self.manager = LifecycleManager(
            adapter, source, self.routes, self.leases,
            health_policy=HealthPolicy(
                window_requests=settings.health_window_requests, window_s=settings.health_window_s,
                latency_factor=settings.health_latency_factor,
                max_consecutive_timeouts=settings.timeouts_before_unhealthy,
            ),
            policy=RecoveryPolicy(
                load_timeout_s=settings.load_timeout_s, unload_timeout_s=settings.unload_timeout_s,
                drain_timeout_s=settings.drain_timeout_s, cooldown_s=settings.recovery_cooldown_s,
                max_retries=settings.recovery_max_retries,
                max_consecutive_timeouts=settings.timeouts_before_unhealthy,
                hang_check_s=settings.hang_check_s,
            ),
            stub_killer=stub_killer,
            request_timeout_ms=settings.request_timeout_ms,
            gpus=lambda: self.hardware.gpus,
            preferred_versions=settings.preferred_versions,
            capacity=Capacity(adapter) if settings.calibrate else None,
        )
        #: what each answered request says about its model, and the models' and runtime's health
        self.triage = self.manager.triage
        self.regions = RegionPolicy(
            settings.shared_memory, settings.shared_memory_prefix, settings.shared_memory_max_region_bytes,
            settings.shared_memory_max_regions,
        )
        self.pool = (  # frames by reference need it from the start; decoded frames at their first
            FramePool(settings.shared_memory_pool_bytes, settings.shared_memory_reuse_delay_s,
                      lazy=not settings.shared_memory)
            if settings.shared_memory or settings.decode_once else None
        )
        self.pipeline = Pipeline(settings, adapter, self.routes, self.leases, self._observe, self.pool)
        #: Answer one unary request: ``infer(request, client_remaining_s=None, regions=None)`` (the
        #: pipeline's own method, so that the hot path has no extra coroutine of the core's).
        self.infer = self.pipeline.infer
        self.streams = StreamLimits(
            settings.max_streams, settings.max_streams_per_connection, settings.stream_idle_timeout_s
        )
        #: unary Infer calls being answered (the transport counts them; a drain waits for them)
        self.unary_calls = 0
        self.metrics = RuntimeMetrics(self._metrics_state)
        self.registrar = Registrar(
            RegistrationConfig(
                settings.backend_url, settings.backend_token, settings.registration_interval_s
            ),
            self.capabilities,
            transport=registration_transport,
        )
        self.hardware_probe = hardware or HardwareProbe()
        self.hardware = HardwareInfo(type="cpu", supports_gpu=False)
        self.runtime_version = runtime_version()
        self.watcher = watcher(self.manager.on_changes) if watcher is not None else None
        self.started = False  # the initial loads are done
        self._ready = False
        self._ready_listeners: list[Callable[[bool], None]] = []
        self._tick_task: asyncio.Task[None] | None = None
        # One HTTP client for Triton's metrics: making one costs ~20 ms of the event loop (TLS setup)
        self._metrics_client: httpx.AsyncClient | None = None
        self.isolation = IsolationReports(
            self.manager.registry, self._triton_metrics, self.registrar.mark_dirty
        )
        self.manager.on_change(self._on_change)
        self.readiness.subscribe(lambda _: self._update_ready())
        if self.pool is not None:  # Triton forgets its shared-memory regions when it restarts
            pool = self.pool
            self.readiness.subscribe(lambda ready: None if ready else pool.forget())

    # ---- start and stop --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, detect the hardware, and load every version once Triton is ready.

        Returns after the initial loads, or after ``triton_connect_timeout_s`` without Triton (the
        loads then run when it becomes ready).
        """
        await self.adapter.connect()
        self.hardware = await self.detect_hardware()
        LOGGER.info("hardware: %s", self.hardware.to_dict())
        if self.watcher is not None:
            self.watcher.start()  # before the scan: a change made meanwhile is not missed
        if await self.readiness.wait(self.settings.triton_connect_timeout_s):
            await self._initial_loads()
        self._tick_task = asyncio.get_running_loop().create_task(self._tick_loop(), name="ruth-tick")

    async def _initial_loads(self) -> None:
        await self.manager.rescan()
        self.started = True
        self.registrar.start()
        self._update_ready()

    async def stop(self) -> None:
        await cancelled(self._tick_task)
        if self.watcher is not None:
            await self.watcher.stop()
        await self.isolation.stop()
        await self.registrar.stop()
        await self.manager.stop()
        if self.pool is not None:
            await self.pool.close(self.adapter)
        await self.adapter.close()
        if self._metrics_client is not None:
            await self._metrics_client.aclose()

    async def _tick_loop(self) -> None:
        last_heartbeat = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.refresh_interval_s)
            try:
                was_ready = self.readiness.ready
                ready = await self.readiness.check()
                if ready and not self.started:
                    await self._initial_loads()
                elif ready and not was_ready:
                    await self.manager.resync()
                self.triage.tick()
                if time.monotonic() - last_heartbeat >= self.settings.registration_interval_s:
                    last_heartbeat = time.monotonic()
                    self.hardware = await self.detect_hardware()
                    await self.manager.capacity.refresh()
            except Exception:
                LOGGER.exception("periodic runtime refresh failed")

    async def detect_hardware(self) -> HardwareInfo:
        """The hardware to declare: Triton's GPU metrics first, the local probe when it has none.
        The same text tells how each model's stub is confined."""
        text = await self._triton_metrics()
        self.isolation.note(text)
        return await asyncio.to_thread(detect, self.hardware_probe, text)

    async def _triton_metrics(self) -> str | None:
        url = self.settings.metrics_url_of_triton
        if not url:
            return None
        try:
            if self._metrics_client is None:
                self._metrics_client = httpx.AsyncClient(timeout=2.0)
            response = await self._metrics_client.get(url)
            if response.is_success:
                return response.text
        except httpx.HTTPError as exc:
            LOGGER.debug("Triton's metrics at %s are unavailable: %s", url, exc)
        return None

    # ---- the request path ------------------------------------------------------------------------

    async def open_regions(self, names: list[str]) -> CallRegions:
        """The shared-memory regions a call registers (INVALID_INPUT when refused); the frame pool
        is registered with Triton first if it is not."""
        regions = CallRegions.open(names, self.regions)
        if self.pool is not None:
            try:
                await self.pool.ensure_registered(self.adapter)
            except BaseException:
                regions.close()
                raise
        return regions

    def admit_stream(self, connection: str) -> AdmittedStream:
        """A place for a new stream on ``connection`` (OVERLOADED beyond the caps); see StreamLimits."""
        return self.streams.admit(connection)

    def open_stream(
        self,
        emit: Callable[[Outcome], None],
        deliver: Callable[[Outcome], Awaitable[None]] | None = None,
        regions: CallRegions | None = None,
    ) -> StreamSession:
        return StreamSession(self.pipeline, emit, deliver, regions)

    def _observe(
        self, route: Route, error: SidecarError | None, elapsed_ms: float, model_ms: float | None = None
    ) -> None:
        self.metrics.observe(route.model_id, route.version, None if error is None else error.code.value,
                             elapsed_ms / 1000.0, None if model_ms is None else model_ms / 1000.0)
        self.triage.observe(route, error, elapsed_ms, model_ms)

    # ---- control ---------------------------------------------------------------------------------

    async def rescan(self, model_id: str | None = None) -> list[dict[str, Any]]:
        """A requested rescan (SIGHUP, admin call): also retries FAILED/INVALID/given-up versions."""
        LOGGER.info("rescan requested%s", f" for {model_id}" if model_id else "")
        return await self.manager.rescan(model_id, force=True)

    # ---- health and status -----------------------------------------------------------------------

    def live(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        """Ready when the initial loads are done, Triton is ready, a model is serving, and the runtime
        is not shutting down."""
        return (self.started and self.readiness.ready and self.triage.runtime_health().ready
                and not self.streams.draining)

    @property
    def draining(self) -> bool:
        return self.streams.draining

    async def drain(self, timeout_s: float) -> bool:
        """Shut down without losing a request: not ready any more (probes, gRPC health), no new
        stream or unary call, every open stream answers what it has read and ends, every unary call
        is answered. Waits up to ``timeout_s`` for that; False when some are still open then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self.streams.drain()
        self._update_ready()
        LOGGER.info("draining: %d InferStream streams open, %d unary calls", self.streams.open,
                    self.unary_calls)
        drained = await self.streams.closed(timeout_s)
        while drained and self.unary_calls and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        if not drained or self.unary_calls:
            LOGGER.warning("%d InferStream streams and %d unary calls still open after %g s of draining",
                           self.streams.open, self.unary_calls, timeout_s)
            return False
        return True

    def on_ready_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(ready)`` whenever :attr:`ready` changes (and once now)."""
        self._ready_listeners.append(listener)
        listener(self._ready)

    def _on_change(self) -> None:
        self.registrar.mark_dirty()
        self._update_ready()
        self.isolation.read_soon()

    def _update_ready(self) -> None:
        ready = self.ready
        if ready != self._ready:
            self._ready = ready
            LOGGER.info("runtime %s", "ready" if ready else "NOT ready")
            for listener in list(self._ready_listeners):
                listener(ready)

    def readiness_report(self) -> tuple[bool, dict[str, Any]]:
        runtime = self.triage.runtime_health()
        server = self.readiness.ready
        ready = self.started and server and runtime.ready and not self.streams.draining
        body = {"ready": ready, "inference_server_ready": server, "initial_loads_done": self.started,
                "draining": self.streams.draining, **runtime.to_dict()}
        return ready, body

    def health(self) -> HealthReport:
        """Runtime health and every version's, from kept state: UNHEALTHY without Triton.

        The rule: docs/architecture.md#health.
        """
        return HealthReport(
            self._runtime_status(), self.readiness.ready, self.model_status(), self.settings.runtime_id,
            self.streams.draining,
        )

    def _runtime_status(self) -> Health:
        return self.triage.runtime_health().status if self.readiness.ready else Health.UNHEALTHY

    def model_status(self, model_id: str = "", version: str = "") -> list[ModelView]:
        """Versions matching the filters (empty matches all); MODEL_NOT_FOUND when none does."""
        found = []
        for record in self.manager.registry:
            if (model_id and record.model_id != model_id) or (version and record.version != version):
                continue
            snapshot = self.triage.snapshot(record.key)
            waiting = self.triage.waiting(record)
            found.append(ModelView(record, model_health(record, snapshot, waiting), snapshot, waiting))
        if not found and (model_id or version):
            raise ModelNotFound(f"no model matches model_id={model_id!r} version={version!r}")
        return found

    def models(self, model_id: str | None = None, version: str | None = None) -> list[dict[str, Any]]:
        """``GET /models``: state, reason, history, health, performance per version."""
        found = []
        for view in self.model_status(model_id or "", version or ""):
            item = view.record.to_dict()
            item["health"] = view.health.value
            item["upstreams"] = view.upstreams
            item["waiting_for"] = view.waiting
            item["performance"] = view.snapshot.to_dict() if view.snapshot else None
            item["fps_capacity"] = fps_capacity(view.record)
            found.append(item)
        return found

    def status(self) -> dict[str, Any]:
        """``GET /status.json`` (the status page): the runtime's health, Triton's readiness and the
        hardware, and every version as ``GET /models`` has it."""
        runtime = {
            "runtime_id": self.settings.runtime_id, "runtime_version": self.runtime_version,
            "health": self._runtime_status().value, "inference_server_ready": self.readiness.ready,
            "hardware": self.hardware.to_dict(),
        }
        return {"runtime": runtime, "models": self.models()}

    def capabilities(self) -> dict[str, Any]:
        declaration = build_declaration(
            runtime_id=self.settings.runtime_id,
            runtime_version=self.runtime_version,
            records=list(self.manager.registry),
            health=self.triage.snapshots(),
            hardware=self.hardware,
            waiting=self.triage.waiting_all(),
        )
        declaration["registration"] = self.registrar.status.to_dict()
        return declaration

    def metrics_text(self) -> tuple[bytes, str]:
        return self.metrics.render()

    def _metrics_state(self) -> dict[str, Any]:
        models = [
            {
                "model_id": v.record.model_id, "version": v.record.version, "state": v.record.state.value,
                "health": v.health.value, "fps_capacity": fps_capacity(v.record),
                "recovery_attempts": v.record.recovery_attempts,
            }
            for v in self.model_status()
        ]
        return {
            "models": models,
            "runtime_health": self.triage.runtime_health().status,
            "registrations": self.registrar.status.to_dict(),
            "loaded": sum(1 for r in self.manager.registry if is_loaded(r)),
            "streams": {
                "open": self.streams.open, "connections": self.streams.connections,
                "refused": dict(self.streams.refused), "closed_idle": self.streams.closed_idle,
                "max": self.streams.max_streams,
            },
            "inference_server_ready": self.readiness.ready,
            "decoded": dict(self.pipeline.frames.decoded),
        }
