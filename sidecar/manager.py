"""The lifecycle manager: discovery, loads, zero-drop reloads, unloads and recovery (§3, §6.3).

It reconciles the plugin folders with Triton, one model version at a time (a lock per version,
so a slow load never holds up another model):

* a new folder: DISCOVERED -> VALIDATING -> (INVALID | LOADING -> READY | FAILED);
* a changed folder of a READY version: the new copy is generated and loaded into the other slot
  (:mod:`sidecar.entries`), Triton's load includes the wrapper's warmup, then the routing switches
  atomically and the old copy is drained and unloaded. If the new copy is invalid or fails to load,
  the old one keeps serving and ``rejected_change`` says why (rollback);
* a deleted folder: READY -> UNLOADING (new requests are refused, in-flight ones finish) ->
  UNLOADED;
* a load has a time limit (``load_timeout_s``): past it the version is FAILED and the load is
  abandoned (its stubs killed, an unload requested). Load failures keep Triton's reason and are
  never retried automatically;
* recovery: a dead stub ("Stub process ... is not healthy") or ``max_consecutive_timeouts`` timeouts
  in a row (a hung instance) move a READY version to ERROR; after ``cooldown_s`` it is reloaded into
  the other slot (a hung instance's stubs are killed first, since Triton cannot unload it), at most
  ``max_retries`` times until a request succeeds again; then it stays ERROR until a rescan.

Requests find their Triton model through :meth:`LifecycleManager.route`; :meth:`observe` takes each
answered request (cheap: it only updates counters and may schedule a recovery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from sidecar.capabilities import is_loaded, model_health
from sidecar.capacity import CapacityMixin
from sidecar.entries import PluginCheck, StagedEntry, StageError, facts_from_contract, slot_names
from sidecar.health import (
    HealthPolicy,
    HealthSnapshot,
    ModelHealthTracker,
    RuntimeHealth,
    aggregate,
    counts_against_model,
)
from sidecar.recovery import RecoveryMixin, RecoveryPolicy, StubKiller, is_dead_stub_error
from sidecar.states import ModelRecord, ModelRegistry, ModelState, RejectedChange, Transition
from sidecar.watcher import Change

LOGGER = logging.getLogger(__name__)
S = ModelState
LOAD_CONCURRENCY = 4


class ModelControl(Protocol):
    """What the manager needs from the Triton adapter."""

    async def load_model(self, name: str, timeout_s: float = ...) -> None: ...
    async def unload_model(self, name: str, timeout_s: float = ...) -> None: ...


class EntrySource(Protocol):
    """What the manager needs from the generator (see :class:`sidecar.entries.RuthgenEntries`)."""

    def plugins(self, model_id: str | None = None) -> dict[tuple[str, str], Path]: ...
    def digest(self, model_id: str, version: str) -> str: ...
    def check(self, model_id: str, version: str) -> PluginCheck: ...
    def stage(self, model_id: str, version: str, name: str) -> StagedEntry: ...
    def discard(self, name: str) -> None: ...
    def forget(self, model_id: str, version: str) -> None: ...


RouteListener = Callable[[ModelRecord, StagedEntry | None], None]


class LifecycleManager(RecoveryMixin, CapacityMixin):
    def __init__(
        self,
        control: ModelControl,
        entries: EntrySource,
        *,
        registry: ModelRegistry | None = None,
        health_policy: HealthPolicy | None = None,
        policy: RecoveryPolicy | None = None,
        stub_killer: StubKiller | None = None,
        calibrate: Callable[[ModelRecord], Awaitable[float | None]] | None = None,
    ) -> None:
        self.control = control
        self.entries = entries
        self.registry = registry or ModelRegistry()
        self.health_policy = health_policy or HealthPolicy()
        self.policy = policy or RecoveryPolicy()
        self.stub_killer = stub_killer
        self.calibrate = calibrate
        self.trackers: dict[tuple[str, str], ModelHealthTracker] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._in_flight: dict[str, int] = {}
        self._drained: dict[str, asyncio.Event] = {}
        self._hung: set[tuple[str, str]] = set()
        self._recoveries: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._change_listeners: list[Callable[[], None]] = []
        self._route_listeners: list[RouteListener] = []
        self.registry.add_listener(self._on_transition)

    # ---- listeners -------------------------------------------------------------------------------

    def on_change(self, listener: Callable[[], None]) -> None:
        """``listener()`` after every state, health or routing change (e.g. mark registration dirty)."""
        self._change_listeners.append(listener)

    def on_route(self, listener: RouteListener) -> None:
        """``listener(record, staged)`` whenever the Triton name serving a version changes."""
        self._route_listeners.append(listener)

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
        self._changed()

    # ---- the request path ------------------------------------------------------------------------

    def route(self, model_id: str, version: str) -> str | None:
        """The Triton name serving ``(model_id, version)``, or None when it cannot serve now."""
        record = self.registry.get(model_id, version)
        if record is None or record.state is not S.READY:
            return None
        return record.active_name

    def begin(self, name: str) -> None:
        self._in_flight[name] = self._in_flight.get(name, 0) + 1

    def end(self, name: str) -> None:
        left = self._in_flight.get(name, 1) - 1
        self._in_flight[name] = left
        if left <= 0:
            self._in_flight.pop(name, None)
            event = self._drained.get(name)
            if event is not None:
                event.set()

    @contextlib.contextmanager
    def lease(self, name: str) -> Iterator[str]:
        """Count one request in flight on ``name`` (unloads wait for these to finish)."""
        self.begin(name)
        try:
            yield name
        finally:
            self.end(name)

    def observe(
        self,
        model_id: str,
        version: str,
        *,
        ok: bool,
        latency_ms: float,
        code: str | None = None,
        message: str | None = None,
        process_died: bool = False,
        name: str | None = None,
    ) -> None:
        """Take one answered request into the model's health, and start recovery when needed."""
        key = (model_id, version)
        tracker = self.trackers.get(key)
        record = self.registry.get(model_id, version)
        if tracker is None or record is None:
            return
        if name is not None and name != record.active_name:
            return  # an answer from a copy that no longer serves says nothing about the new one
        changed = False
        if ok or counts_against_model(code):
            changed = tracker.record(ok, latency_ms, timeout=code == "TIMEOUT")
        if record.state is S.READY:
            if ok:
                record.recovery_attempts = 0
            elif process_died or is_dead_stub_error(message):
                self._fail(record, f"the model's process died: {message or 'stub not healthy'}", hung=False)
            elif tracker.consecutive_timeouts >= self.policy.max_consecutive_timeouts:
                reason = f"{tracker.consecutive_timeouts} consecutive timeouts: instance hung"
                self._fail(record, reason, hung=True)
        if changed:
            self._changed()

    # ---- status ----------------------------------------------------------------------------------

    def snapshots(self) -> dict[tuple[str, str], HealthSnapshot]:
        return {key: tracker.snapshot() for key, tracker in self.trackers.items()}

    def runtime_health(self) -> RuntimeHealth:
        return aggregate(
            model_health(r, self.trackers[r.key].snapshot() if r.key in self.trackers else None)
            for r in self.registry
            if is_loaded(r)
        )

    def tick(self) -> None:
        """Age the health windows (called periodically): health recovers when errors grow old."""
        if any([t.refresh() for t in self.trackers.values()]):
            self._changed()

    # ---- discovery -------------------------------------------------------------------------------

    async def rescan(self, model_id: str | None = None, *, force: bool = False) -> list[dict[str, Any]]:
        """Reconcile every plugin version (or one model's) with what is loaded.

        ``force`` (SIGHUP, the admin call) also retries FAILED and INVALID versions whose files did
        not change, and ERROR versions whose automatic recovery gave up.
        """
        present = await asyncio.to_thread(self.entries.plugins, model_id)
        known = {r.key for r in self.registry if model_id is None or r.model_id == model_id}
        keys = sorted(set(present) | known)
        limit = asyncio.Semaphore(LOAD_CONCURRENCY)

        async def one(key: tuple[str, str]) -> None:
            async with limit:
                await self.reconcile(key, key in present, force=force)

        await asyncio.gather(*(one(k) for k in keys))
        return [self.registry.get(*k).to_dict() for k in keys if self.registry.get(*k) is not None]  # type: ignore[union-attr]

    async def on_files_changed(self, changes: list[Change]) -> None:
        """The watcher's callback: reconcile just the versions whose files changed."""
        present = await asyncio.to_thread(self.entries.plugins)
        keys: set[tuple[str, str]] = set()
        for change in changes:
            if change.version is not None:
                keys.add((change.model_id, change.version))
            else:
                keys.update(k for k in present if k[0] == change.model_id)
                keys.update(r.key for r in self.registry if r.model_id == change.model_id)
        await asyncio.gather(*(self.reconcile(k, k in present) for k in sorted(keys)))

    async def reconcile(self, key: tuple[str, str], present: bool, *, force: bool = False) -> None:
        async with self._lock(key):
            record = self.registry.get(*key)
            if not present:
                if record is not None:
                    await self._retire(record)
                return
            digest = await asyncio.to_thread(self.entries.digest, *key)
            if record is None:
                record = self.registry.add(*key)
                await self._bring_up(record, digest)
                return
            changed = digest != record.source_digest
            state = record.state
            if state is S.UNLOADED:
                record.transition(S.DISCOVERED, "plugin folder found again")
                await self._bring_up(record, digest)
            elif state is S.INVALID and (changed or force):
                record.transition(S.DISCOVERED, "plugin files changed" if changed else "rescan requested")
                await self._bring_up(record, digest)
            elif state is S.FAILED and (changed or force):
                record.transition(S.UNLOADING, "cleaning up a failed load before loading again")
                await self._unload_all(record)
                record.transition(S.UNLOADED, "cleaned up")
                record.transition(S.DISCOVERED, "plugin files changed" if changed else "rescan requested")
                await self._bring_up(record, digest)
            elif state is S.READY and changed:
                rejected = record.rejected_change
                if force or rejected is None or rejected.source_digest != digest:
                    await self._replace(record, digest)
            elif state is S.ERROR and (changed or force or self._gave_up(record)):
                self._cancel_recovery(key)
                record.recovery_attempts = 0
                if not await self._recover_once(record, digest if changed else None):
                    self._schedule_recovery(record)

    # ---- transitions with Triton -----------------------------------------------------------------

    async def _bring_up(self, record: ModelRecord, digest: str) -> None:
        record.transition(S.VALIDATING, "checking model.yaml and the plugin files")
        check = await asyncio.to_thread(self.entries.check, record.model_id, record.version)
        record.source_digest = digest
        record.rejected_change = None
        if not check.valid:
            record.transition(S.INVALID, check.reason)
            return
        _apply_facts(record, check.facts)
        record.transition(S.LOADING, "loading into the inference server")
        name = slot_names(record.model_id, record.version)[0]
        staged, error = await self._load_copy(record, name)
        if staged is None:
            record.transition(S.FAILED, error)
            return
        self._switch(record, staged)
        record.transition(S.READY, f"loaded as {name}")
        self._calibrate_later(record)

    async def _replace(self, record: ModelRecord, digest: str) -> None:
        """Zero-drop reload of a READY version with new files; on any failure the old copy stays."""
        check = await asyncio.to_thread(self.entries.check, record.model_id, record.version)
        if not check.valid:
            self._reject(record, f"the changed plugin is invalid: {check.reason}", digest)
            return
        old, new = record.active_name, self._other_slot(record)
        staged, error = await self._load_copy(record, new)
        if staged is None:
            self._reject(record, f"the changed plugin failed to load: {error}", digest)
            return
        record.source_digest, record.rejected_change = digest, None
        self._switch(record, staged)
        LOGGER.info("%s:%s now served by %s (reloaded)", record.model_id, record.version, new)
        self._changed()
        if old is not None:
            await self._retire_copy(old, kill_first=False)
        self._calibrate_later(record)

    async def _retire(self, record: ModelRecord) -> None:
        """The plugin folder is gone: stop routing, let in-flight requests finish, unload."""
        if record.state is S.UNLOADED:
            return
        if record.state is S.INVALID:
            record.transition(S.UNLOADED, "plugin folder removed")
            return
        self._cancel_recovery(record.key)
        record.transition(S.UNLOADING, "plugin folder removed")
        await self._unload_all(record)
        await asyncio.to_thread(self.entries.forget, record.model_id, record.version)
        record.transition(S.UNLOADED, "plugin folder removed")

    async def _unload_all(self, record: ModelRecord) -> None:
        old, record.active_name = record.active_name, None
        self._notify_route(record, None)
        if old is not None:
            await self._retire_copy(old, kill_first=record.key in self._hung)
        self._hung.discard(record.key)

    async def _load_copy(self, record: ModelRecord, name: str) -> tuple[StagedEntry | None, str]:
        """Generate entry ``name`` and load it; (entry, "") or (None, why it failed)."""
        started = time.monotonic()
        try:
            staged = await asyncio.to_thread(self.entries.stage, record.model_id, record.version, name)
        except StageError as exc:
            return None, exc.reason
        generated = time.monotonic()
        timeout = self.policy.load_timeout_s
        try:
            await asyncio.wait_for(self.control.load_model(name, timeout_s=timeout), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            self._spawn(self._abandon(name))
            return None, f"loading did not finish within {timeout:g} s; abandoned"
        except Exception as exc:
            return None, getattr(exc, "message", None) or str(exc) or type(exc).__name__
        loaded = time.monotonic()
        LOGGER.info("%s generated in %.3f s, loaded in %.3f s", name, generated - started, loaded - generated)
        return staged, ""

    async def _abandon(self, name: str) -> None:
        if self.stub_killer is not None:
            await asyncio.to_thread(self.stub_killer.kill, name)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.control.unload_model(name, timeout_s=self.policy.unload_timeout_s),
                                   self.policy.unload_timeout_s)

    async def _retire_copy(self, name: str, *, kill_first: bool) -> None:
        """Drain ``name`` (in-flight requests), unload it, kill its stubs if the unload hangs."""
        if kill_first and self.stub_killer is not None:
            await asyncio.to_thread(self.stub_killer.kill, name)
        if self._in_flight.get(name):
            event = self._drained.setdefault(name, asyncio.Event())
            event.clear()
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(event.wait(), self.policy.drain_timeout_s)
            self._drained.pop(name, None)
        timeout = self.policy.unload_timeout_s
        unload = asyncio.ensure_future(self.control.unload_model(name, timeout_s=timeout * 3))
        try:
            await asyncio.wait_for(asyncio.shield(unload), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            LOGGER.warning("unloading %s takes longer than %g s: killing its stubs", name, timeout)
            if self.stub_killer is not None:
                await asyncio.to_thread(self.stub_killer.kill, name)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(unload, timeout * 2)
        except Exception as exc:
            LOGGER.warning("unloading %s failed: %s", name, exc)
        await asyncio.to_thread(self.entries.discard, name)

    def _switch(self, record: ModelRecord, staged: StagedEntry) -> None:
        record.active_name = staged.name
        contract = staged.record.get("contract") or {}
        _apply_facts(record, facts_from_contract(contract, staged.record.get("triton")))
        self.trackers[record.key] = ModelHealthTracker(self.health_policy, record.inference_time_hint_ms)
        self._hung.discard(record.key)
        self._notify_route(record, staged)

    def _notify_route(self, record: ModelRecord, staged: StagedEntry | None) -> None:
        for listener in self._route_listeners:
            try:
                listener(record, staged)
            except Exception:
                LOGGER.exception("route listener failed")

    def _reject(self, record: ModelRecord, reason: str, digest: str) -> None:
        LOGGER.warning("%s:%s keeps serving its running copy: %s", record.model_id, record.version, reason)
        record.rejected_change = RejectedChange(reason, time.time(), digest)
        record.note_error(reason)
        self._changed()

    def _other_slot(self, record: ModelRecord) -> str:
        first, second = slot_names(record.model_id, record.version)
        return second if record.active_name == first else first

    # ---- plumbing --------------------------------------------------------------------------------

    def _lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        tasks = [*self._recoveries.values(), *self._background]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._recoveries.clear()


def _apply_facts(record: ModelRecord, facts: dict[str, Any]) -> None:
    for key, value in facts.items():
        setattr(record, key, value)
