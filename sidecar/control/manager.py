"""The lifecycle manager: discovery, loads, zero-drop reloads, unloads and recovery.

Its place in the runtime: docs/architecture.md#control-path.

One manager, whatever its :class:`~sidecar.control.sources.EntrySource`: the plugin folder the
sidecar owns, or a repository built elsewhere. It reconciles the source's versions with Triton, one
version at a time (a lock per version, so a slow load never holds up another model):

* a new version: DISCOVERED -> VALIDATING -> (INVALID | LOADING -> READY | FAILED);
* a changed version that is READY: the new copy is staged and loaded (into the other copy when the
  source has two; in place otherwise, which Triton swaps itself), Triton's load includes the
  wrapper's warmup, then the route switches and the old copy is drained and unloaded. If the new
  copy is invalid or fails to load, the old one keeps serving and ``rejected_change`` says why;
* a version that is gone: READY -> UNLOADING (new requests are refused, in-flight ones finish) ->
  UNLOADED;
* a load has a time limit (``load_timeout_s``): past it the version is FAILED and the load is
  abandoned (its stubs killed, an unload requested). Load failures keep Triton's reason and are
  retried only when the files change or a rescan forces it;
* recovery (:class:`~sidecar.control.recovery.Recovery`): a dead stub, a model the server no longer
  has loaded, an out-of-memory or CUDA error (RESOURCE_EXHAUSTED, GPU_ERROR), or
  ``max_consecutive_timeouts`` timeouts in a row (a hung instance) move a READY version to ERROR; it
  is reloaded after the cooldown (a hung instance's stubs killed first). A load or reload that fails
  for lack of memory is FAILED, not retried on a schedule.

The request path never calls the manager: every change of a version's state or serving copy is
published as a new :class:`~sidecar.request.routes.Route`, and
:meth:`~sidecar.control.triage.Triage.observe` takes each answered request (cheap: counters, and maybe a
recovery).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from ruthgen.interface import (
    DEFAULT_REQUEST_TIMEOUT_MS,
    GpuInfo,
    ManifestEntry,
    ModelContract,
    declared_limits_ms,
    load_resource_code,
    timeout_warnings,
    upstream_issues,
)
from sidecar.control.capacity import Capacity, CapacityFigures
from sidecar.control.copies import Copies, ModelControl
from sidecar.control.health import HealthPolicy
from sidecar.control.placement import GpuPlacement
from sidecar.control.recovery import Recovery, RecoveryPolicy, StubKiller
from sidecar.control.sources import EntrySource, Key
from sidecar.control.states import ModelRecord, ModelRegistry, ModelState, RejectedChange, Transition
from sidecar.control.tasks import Background
from sidecar.control.triage import Triage
from sidecar.control.watcher import Change
from sidecar.errors import SidecarError
from sidecar.request.routes import Leases, Route, RouteTable

LOGGER = logging.getLogger(__name__)
LOAD_CONCURRENCY = 4


class LifecycleManager:
    """Reconciles the source's versions with Triton; its helpers hold the other jobs: :attr:`copies`
    (loading and retiring a version's Triton copies), :attr:`triage` (request health, hang checks),
    :attr:`recovery` (the reload schedule), :attr:`placement` (GPU memory), :attr:`capacity` (the
    versions' ``fps_capacity``)."""

    def __init__(
        self,
        control: ModelControl,
        source: EntrySource,
        routes: RouteTable,
        leases: Leases,
        *,
        health_policy: HealthPolicy | None = None,
        policy: RecoveryPolicy | None = None,
        stub_killer: StubKiller | None = None,
        capacity: Capacity | None = None,
        request_timeout_ms: int = DEFAULT_REQUEST_TIMEOUT_MS,
        gpus: Callable[[], tuple[GpuInfo, ...]] | None = None,
        preferred_versions: Collection[str] = (),
    ) -> None:
        self.control = control
        self.source = source
        self.routes = routes
        self.leases = leases
        self.policy = policy or RecoveryPolicy()
        self.stub_killer = stub_killer
        self.request_timeout_ms = request_timeout_ms
        self.registry = ModelRegistry()
        self.background = Background()
        self.recovery = Recovery(self.policy, self._recover_locked, self._lock, self._changed)
        self.triage = Triage(self.registry, routes, self.recovery, control, self.background, self._changed,
                             health_policy or HealthPolicy(), self.policy)
        self.placement = GpuPlacement(gpus, preferred_versions)
        self.copies = Copies(
            control, source, leases, self.policy, self.placement, self.background, stub_killer
        )
        self.capacity = CapacityFigures(capacity, self.registry, self.background, self._changed,
                                        self.triage.observe)
        self._locks: dict[Key, asyncio.Lock] = {}
        self._change_listeners: list[Callable[[], None]] = []
        self.registry.add_listener(self._on_transition)

    # ---- listeners -------------------------------------------------------------------------------

    def on_change(self, listener: Callable[[], None]) -> None:
        """``listener()`` after every state, health or routing change (e.g. mark registration dirty)."""
        self._change_listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._change_listeners:
            try:
                listener()
            except Exception:
                LOGGER.exception("change listener failed")

    def _on_transition(self, record: ModelRecord, step: Transition) -> None:
        LOGGER.info(
            "%s:%s %s -> %s (%s)", record.model_id, record.version,
            step.source.value if step.source else "-", step.target.value, step.reason,
        )
        self._publish(record)
        self._changed()

    def _publish(self, record: ModelRecord) -> None:
        """The request path's view of ``record``, swapped in whole."""
        self.routes.publish(route_of(record))

    def _upstream_errors(self, record: ModelRecord, contract: ModelContract) -> str | None:
        """The reason ``contract``'s upstreams make it INVALID against the other versions (a cycle,
        a chain too deep, an upstream that cannot feed it), or None."""
        if not contract.upstreams:
            return None
        others = {
            r.key: r.contract for r in self.registry
            if r.contract is not None and r.key != record.key
            and r.state not in (ModelState.INVALID, ModelState.UNLOADED)
        }
        errors, _ = upstream_issues(contract, others)
        return "; ".join(f"{e.check}: {e.message}" for e in errors) or None

    # ---- discovery -------------------------------------------------------------------------------

    async def rescan(self, model_id: str | None = None, *, force: bool = False) -> list[dict[str, Any]]:
        """Reconcile every version (or one model's) with what is loaded.

        ``force`` (SIGHUP, the admin call) also retries FAILED and INVALID versions whose files did
        not change, and ERROR versions whose automatic recovery gave up.
        """
        present = {k for k in await asyncio.to_thread(self.source.versions) if model_id in (None, k[0])}
        known = {r.key for r in self.registry if model_id in (None, r.model_id)}
        keys = sorted(present | known)
        limit = asyncio.Semaphore(LOAD_CONCURRENCY)
        needs_gpu_memory: list[ModelRecord] = []

        async def one(key: Key) -> None:
            async with limit:
                await self.reconcile(key, key in present, force=force, deferred=needs_gpu_memory)

        await asyncio.gather(*(one(k) for k in keys))
        for record in sorted(needs_gpu_memory, key=self.placement.priority(needs_gpu_memory)):
            async with self._lock(record.key):
                if record.state is ModelState.VALIDATING and record.contract is not None:
                    await self._load_first(record)
        return [r.to_dict() for k in keys if (r := self.registry.get(*k)) is not None]

    async def on_changes(self, changes: list[Change]) -> None:
        """A watcher's callback: reconcile just the versions that changed."""
        present = await asyncio.to_thread(self.source.versions)
        keys: set[Key] = set()
        for change in changes:
            if change.version is not None:
                keys.add((change.model_id, change.version))
            else:
                keys.update(k for k in present if k[0] == change.model_id)
                keys.update(r.key for r in self.registry if r.model_id == change.model_id)
        await asyncio.gather(*(self.reconcile(k, k in present) for k in sorted(keys)))

    async def resync(self) -> None:
        """The inference server came back: reload what it no longer serves, retry what failed with it."""
        try:
            index = {e.name: e for e in await self.control.repository_index()}
        except SidecarError as exc:
            LOGGER.warning("cannot read the inference server's models: %s", exc.message)
            return
        for record in list(self.registry):
            async with self._lock(record.key):
                served = index.get(record.active_name or "")
                if record.state is ModelState.READY and (served is None or served.state != "READY"):
                    self.recovery.fail(record, "the inference server no longer serves it", hung=False,
                                       delay_s=0.0)
                elif record.state is ModelState.ERROR:
                    record.recovery_attempts = 0
                    self.recovery.schedule(record, 0.0)

    async def reconcile(
        self, key: Key, present: bool, *, force: bool = False, deferred: list[ModelRecord] | None = None
    ) -> None:
        """Bring one version in line with its source; ``deferred`` (a rescan's) collects the new
        versions that need GPU memory, which the rescan then loads in priority order."""
        async with self._lock(key):
            record = self.registry.get(*key)
            if not present:
                if record is not None:
                    await self._retire(record)
                return
            digest = await asyncio.to_thread(self.source.digest, key)
            if record is None:
                record = self.registry.add(*key)
                await self._bring_up(record, digest, deferred)
                return
            changed = digest != record.source_digest
            state = record.state
            if state is ModelState.UNLOADED:
                record.transition(ModelState.DISCOVERED, "found again")
                await self._bring_up(record, digest, deferred)
            elif state is ModelState.INVALID and (changed or force):
                record.transition(ModelState.DISCOVERED, "files changed" if changed else "rescan requested")
                await self._bring_up(record, digest, deferred)
            elif state is ModelState.FAILED and (changed or force):
                record.transition(ModelState.UNLOADING, "cleaning up a failed load before loading again")
                await self._unload_all(record)
                record.transition(ModelState.UNLOADED, "cleaned up")
                record.transition(ModelState.DISCOVERED, "files changed" if changed else "rescan requested")
                await self._bring_up(record, digest, deferred)
            elif state is ModelState.READY and changed:
                rejected = record.rejected_change
                if force or rejected is None or rejected.source_digest != digest:
                    await self._replace(record, digest)
            elif state is ModelState.ERROR and (changed or force or self.recovery.gave_up(record)):
                self.recovery.cancel(key)
                record.recovery_attempts = 0
                if not await self._recover_once(record, digest if changed else None):
                    self.recovery.schedule(record)

    # ---- transitions with Triton -----------------------------------------------------------------

    async def _bring_up(
        self, record: ModelRecord, digest: str, deferred: list[ModelRecord] | None = None
    ) -> None:
        record.transition(ModelState.VALIDATING, "checking the contract and the files")
        check = await asyncio.to_thread(self.source.check, record.key)
        record.source_digest = digest
        record.rejected_change = None
        if not check.valid:
            record.contract = None
            record.transition(ModelState.INVALID, check.reason)
            return
        invalid = self._upstream_errors(record, check.contract) if check.contract else None
        if invalid is not None:
            record.contract = None
            record.transition(ModelState.INVALID, invalid)
            return
        record.contract = check.contract
        record.warnings = self._warnings(check.contract)
        if deferred is not None and self.placement.needs_memory(check.contract):
            deferred.append(record)  # stays VALIDATING until its turn
            return
        await self._load_first(record)

    async def _load_first(self, record: ModelRecord) -> None:
        record.transition(ModelState.LOADING, "loading into the inference server")
        name = self.source.copies(record.key)[0]
        staged, error = await self.copies.load(record, name)
        if staged is None:
            record.transition(ModelState.FAILED, error)
            return
        self._switch(record, name, staged)
        record.transition(ModelState.READY, f"loaded as {name}")
        self.capacity.calibrate_later(record, route_of(record))

    async def _replace(self, record: ModelRecord, digest: str) -> None:
        """Zero-drop reload of a READY version with new files; on any failure the old copy stays."""
        check = await asyncio.to_thread(self.source.check, record.key)
        invalid = self._upstream_errors(record, check.contract) if check.valid and check.contract else None
        if not check.valid or invalid is not None:
            reason = check.reason if invalid is None else invalid
            self._reject(record, f"the changed version is invalid: {reason}", digest)
            return
        old, new = record.active_name, self.copies.other(record)
        staged, error = await self.copies.load(record, new)
        if staged is None:
            self._reject(record, f"the changed version failed to load: {error}", digest)
            return
        record.source_digest, record.rejected_change = digest, None
        self._switch(record, new, staged)
        LOGGER.info("%s:%s now served by %s (reloaded)", record.model_id, record.version, new)
        self._changed()
        if old is not None and old != new:
            await self.copies.retire(old, kill_first=False)
        self.capacity.calibrate_later(record, route_of(record))

    async def _recover_locked(self, record: ModelRecord) -> bool:
        return await self._recover_once(record, None)

    async def _recover_once(self, record: ModelRecord, digest: str | None) -> bool:
        """ERROR -> LOADING -> READY (reloaded, into the other copy when there is one) or back to ERROR."""
        record.recovery_attempts += 1
        attempt = f"{record.recovery_attempts}/{self.policy.max_retries}"
        record.transition(ModelState.LOADING, f"recovery reload {attempt}")
        old, new = record.active_name, self.copies.other(record)
        hung = record.key in self.recovery.hung
        if old is not None and old == new:  # one copy only: it goes before it comes back
            await self.copies.retire(old, kill_first=hung)
        elif old is not None and hung:
            await self.copies.kill(old)
        staged, error = await self.copies.load(record, new)
        if staged is None and (load_resource_code(error) or error.startswith("RESOURCE_EXHAUSTED")):
            # no memory for it: retrying on a schedule would only fail again; a rescan retries
            if old is not None and old != new:
                record.active_name = None
                self.background.spawn(self.copies.retire(old, kill_first=hung))
            record.transition(ModelState.FAILED, f"recovery reload {attempt} failed for lack of resources, "
                                        f"not retried: {error}")
            return False
        if staged is None:
            record.transition(ModelState.ERROR, f"recovery reload {attempt} failed: {error}")
            return False
        if digest is not None:
            record.source_digest = digest
        self._switch(record, new, staged)
        record.transition(ModelState.READY, f"recovered by reload {attempt} as {new}")
        if old is not None and old != new:
            self.background.spawn(self.copies.retire(old, kill_first=False))
        return True

    async def _retire(self, record: ModelRecord) -> None:
        """The version is gone: stop routing, let in-flight requests finish, unload."""
        if record.state is ModelState.UNLOADED:
            return
        if record.state is ModelState.INVALID:
            record.transition(ModelState.UNLOADED, "removed")
            return
        self.recovery.cancel(record.key)
        record.transition(ModelState.UNLOADING, "removed")
        await self._unload_all(record)
        await asyncio.to_thread(self.source.forget, record.key)
        record.transition(ModelState.UNLOADED, "removed")

    async def _unload_all(self, record: ModelRecord) -> None:
        old, record.active_name = record.active_name, None
        self._publish(record)
        if old is not None:
            await self.copies.retire(old, kill_first=record.key in self.recovery.hung)
        self.recovery.hung.discard(record.key)

    def _switch(self, record: ModelRecord, name: str, staged: ManifestEntry) -> None:
        """Requests go to copy ``name`` from now on (a new health window for it)."""
        record.active_name = name
        record.contract, record.triton = staged.contract, staged.triton
        record.warnings = self._warnings(staged.contract)
        record.output_schema = staged.output_json_schema
        self.triage.new_window(record)
        self.recovery.hung.discard(record.key)
        self._publish(record)

    def _warnings(self, contract: ModelContract | None) -> list[str]:
        if contract is None:
            return []
        found = [f"{w.check}: {w.message}" for w in timeout_warnings(contract, self.request_timeout_ms)]
        for warning in found:
            LOGGER.warning("%s:%s %s", contract.model_id, contract.version, warning)
        return found

    def _reject(self, record: ModelRecord, reason: str, digest: str) -> None:
        LOGGER.warning("%s:%s keeps serving its running copy: %s", record.model_id, record.version, reason)
        record.rejected_change = RejectedChange(reason, time.time(), digest)
        record.note_error(reason)
        self._changed()

    # ---- plumbing --------------------------------------------------------------------------------

    def _lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def stop(self) -> None:
        await self.recovery.stop()
        await self.background.stop()


def route_of(record: ModelRecord) -> Route:
    """The route the request path follows for ``record`` as it is now."""
    state = record.state.value
    reason = record.reason if record.state is not ModelState.READY else ""
    contract, triton = record.contract, record.triton
    if contract is None or triton is None or record.active_name is None:
        serving_state = state if record.state is not ModelState.READY else "LOADING"
        return Route(record.model_id, record.version, serving_state, reason)
    spec = contract.input
    return Route(
        record.model_id, record.version, state, reason, record.active_name,
        input_type=spec.type, format=spec.format, min_width=spec.min_width, min_height=spec.min_height,
        max_width=spec.max_width, max_height=spec.max_height, batched=triton.max_batch_size > 0,
        sequence=triton.sequence, max_batch=record.frames_per_request, limits_ms=declared_limits_ms(contract),
        upstreams=tuple(u.key for u in contract.upstreams),
    )
