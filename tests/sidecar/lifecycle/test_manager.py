"""The lifecycle manager in front of fake Triton control and a fake entry source."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from sidecar.control.health import Health
from sidecar.control.manager import LifecycleManager, route_of
from sidecar.control.states import ModelState
from sidecar.control.watcher import Change
from sidecar.errors import (
    ErrorCode,
    InternalError,
    ModelNotLoaded,
    ModelProcessDied,
    PluginError,
    RequestTimeout,
    SidecarError,
)
from sidecar.request.routes import Leases, RouteTable

S = ModelState
A, B = "m__1.0.0", "m__1.0.0__b"


def route(manager: LifecycleManager, model_id: str = "m", version: str = "1.0.0") -> str | None:
    """The copy requests for the version go to now (None when they are refused)."""
    published = manager.routes.get(model_id, version)
    return published.triton_name if published is not None and published.serving else None


def observe(manager, model_id="m", version="1.0.0", error: SidecarError | None = None, *, name=None,
            latency_ms=1.0) -> None:
    """One answered request, as the pipeline reports it (``name``: the copy it went to)."""
    sent = route_of(manager.registry.get(model_id, version))
    if name is not None:
        sent = dataclasses.replace(sent, triton_name=name)
    manager.triage.observe(sent, error, latency_ms)


def dead_stub() -> ModelProcessDied:
    return ModelProcessDied("the model's process (m__1.0.0_0_0) died")


def timeout() -> RequestTimeout:
    return RequestTimeout("no answer within 1000 ms")


async def _until(predicate, timeout=30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _states(record):
    return [t.target for t in record.history]


async def test_rescan_loads_a_new_plugin_to_ready(manager, control, entries):
    entries.add("m", "1.0.0", input_type="batch")
    await manager.rescan()
    record = manager.registry.get("m", "1.0.0")
    assert _states(record) == [S.DISCOVERED, S.VALIDATING, S.LOADING, S.READY]
    assert record.active_name == A and route(manager) == A
    assert record.input_type == "batch" and control.loaded == {A}


async def test_rescan_marks_an_invalid_plugin_invalid_without_loading(manager, control, entries):
    entries.add("m", "1.0.0", valid=False, reason="model_yaml_missing: create it")
    await manager.rescan()
    record = manager.registry.get("m", "1.0.0")
    assert record.state is S.INVALID and "model_yaml_missing" in record.reason
    assert control.calls == [] and route(manager) is None


@pytest.mark.parametrize(
    ("reason", "kept"),
    [
        ("load failed for model 'm__1.0.0': Internal: ModuleNotFoundError: No module named 'cv9'",
         "No module named 'cv9'"),
        ("Internal: [RUTH:LOAD_FAILED] load: RESOURCE_EXHAUSTED: MemoryError: out of memory",
         "load: RESOURCE_EXHAUSTED: MemoryError"),
    ],
)
async def test_load_failure_keeps_tritons_reason_and_is_not_retried(manager, control, entries, reason, kept):
    entries.add("m", "1.0.0")
    control.fail[A] = reason
    await manager.rescan()
    record = manager.registry.get("m", "1.0.0")
    assert record.state is S.FAILED and kept in record.reason
    await manager.on_changes([Change("other", None)])
    await manager.rescan()  # a rescan without changes and without force does not retry
    assert control.count("load") == 1


async def test_forced_rescan_retries_a_failed_load(manager, control, entries):
    entries.add("m", "1.0.0")
    control.fail[A] = "boom"
    await manager.rescan()
    del control.fail[A]
    await manager.rescan(force=True)
    record = manager.registry.get("m", "1.0.0")
    assert record.state is S.READY
    assert _states(record)[-6:] == [S.UNLOADING, S.UNLOADED, S.DISCOVERED, S.VALIDATING, S.LOADING, S.READY]


async def test_load_timeout_fails_and_abandons_the_load(manager, control, entries, killer):
    entries.add("m", "1.0.0")
    control.hang_load.add(A)
    await manager.rescan()
    record = manager.registry.get("m", "1.0.0")
    assert record.state is S.FAILED and "did not finish within 0.5 s; abandoned" in record.reason
    await _until(lambda: control.count("unload", A) == 1)
    assert killer.killed == [A]


async def test_new_version_loads_without_touching_the_running_one(manager, control, entries):
    entries.add("m", "1.0.0")
    await manager.rescan()
    entries.add("m", "1.1.0")
    await manager.on_changes([Change("m", "1.1.0")])
    assert route(manager, "m", "1.1.0") == "m__1.1.0" and route(manager) == A
    assert control.calls == [("load", A), ("load", "m__1.1.0")]


async def test_changed_plugin_reloads_into_the_other_copy_then_unloads_the_old(manager, control, entries):
    plugin = entries.add("m", "1.0.0")
    await manager.rescan()
    manager.leases.begin(A)  # a request in flight on the old copy
    plugin.digest = "d2"
    task = asyncio.ensure_future(manager.on_changes([Change("m", "1.0.0")]))
    await _until(lambda: route(manager) == B)
    await asyncio.sleep(0.05)
    assert control.count("unload", A) == 0, "the old copy is unloaded only after its requests finished"
    manager.leases.end(A)
    await task
    record = manager.registry.get("m", "1.0.0")
    assert record.state is S.READY and _states(record)[-1] is S.READY and record.source_digest == "d2"
    assert control.calls[-2:] == [("load", B), ("unload", A)]
    plugin.digest = "d3"
    await manager.on_changes([Change("m", "1.0.0")])
    assert route(manager) == A and control.calls[-2:] == [("load", A), ("unload", B)]
    assert B in entries.discarded


async def test_invalid_change_is_rejected_and_the_running_copy_keeps_serving(manager, control, entries):
    plugin = entries.add("m", "1.0.0")
    await manager.rescan()
    plugin.digest, plugin.valid, plugin.reason = "d2", False, "output_schema_invalid: bad type"
    await manager.on_changes([Change("m", "1.0.0")])
    record = manager.registry.get("m", "1.0.0")
    assert record.state is S.READY and route(manager) == A
    assert "output_schema_invalid" in record.rejected_change.reason
    assert control.calls == [("load", A)]
    assert record.to_dict()["rejected_change"]["source_digest"] == "d2"


async def test_failed_load_of_a_change_rolls_back_to_the_running_copy(manager, control, entries):
    plugin = entries.add("m", "1.0.0")
    await manager.rescan()
    plugin.digest = "d2"
    control.fail[B] = "Internal: warmup.infer: ZeroDivisionError"
    await manager.on_changes([Change("m", "1.0.0")])
    record = manager.registry.get("m", "1.0.0")
    assert route(manager) == A and record.state is S.READY
    assert "warmup.infer" in record.rejected_change.reason and control.count("unload", A) == 0


async def test_deleted_plugin_is_unloaded_after_in_flight_requests(manager, control, entries):
    entries.add("m", "1.0.0")
    await manager.rescan()
    manager.leases.begin(A)
    del entries.plugins_[("m", "1.0.0")]
    task = asyncio.ensure_future(manager.on_changes([Change("m", None)]))
    record = manager.registry.get("m", "1.0.0")
    await _until(lambda: record.state is S.UNLOADING)
    assert route(manager) is None and control.count("unload") == 0
    manager.leases.end(A)
    await task
    assert record.state is S.UNLOADED and control.calls[-1] == ("unload", A)
    assert entries.forgotten == [("m", "1.0.0")]
    entries.add("m", "1.0.0")
    await manager.on_changes([Change("m", "1.0.0")])
    assert record.state is S.READY


async def test_dead_stub_moves_to_error_then_recovers_by_reload(manager, control, entries):
    entries.add("m", "1.0.0")
    await manager.rescan()
    observe(manager, error=dead_stub())
    record = manager.registry.get("m", "1.0.0")
    assert record.state is S.ERROR and route(manager) is None
    await _until(lambda: record.state is S.READY)
    assert _states(record)[-3:] == [S.ERROR, S.LOADING, S.READY]
    assert route(manager) == B
    await _until(lambda: control.count("unload", A) == 1)


async def test_consecutive_timeouts_kill_the_hung_stubs_and_reload(manager, control, entries, killer):
    entries.add("m", "1.0.0")
    await manager.rescan()
    for _ in range(2):
        observe(manager, error=timeout(), latency_ms=1000.0)
    assert manager.registry.get("m", "1.0.0").state is S.READY
    observe(manager, error=timeout(), latency_ms=1000.0)
    record = manager.registry.get("m", "1.0.0")
    assert record.state is S.READY and manager.triage.trackers[record.key].health is Health.UNHEALTHY
    await _until(lambda: record.state is S.ERROR)  # the hang check: nothing finished meanwhile
    assert "3 consecutive timeouts and nothing finished" in record.reason
    await _until(lambda: record.state is S.READY)
    assert killer.killed == [A] and route(manager) == B
    assert manager.triage.trackers[record.key].health is Health.HEALTHY


async def test_consecutive_timeouts_of_a_slow_instance_that_still_answers_do_not_kill_it(
    manager, control, entries, killer
):
    entries.add("m", "1.0.0")
    await manager.rescan()
    finished = iter(range(1, 1000))

    async def answering(name):  # the instance finishes one execution per look: late, but alive
        return {"execution_count": str(next(finished))}

    control.model_statistics = answering
    for _ in range(3):
        observe(manager, error=timeout(), latency_ms=1000.0)
    record = manager.registry.get("m", "1.0.0")
    await _until(lambda: "slow, not hung" in (record.last_error or ""))
    assert record.state is S.READY and killer.killed == [] and route(manager) == A
    assert manager.triage.trackers[record.key].health is Health.UNHEALTHY  # still late: the backend sees it


async def test_model_that_keeps_failing_ends_in_error_after_max_retries(manager, control, entries):
    entries.add("m", "1.0.0")
    await manager.rescan()
    record = manager.registry.get("m", "1.0.0")
    for _ in range(3):  # each death reloads it
        observe(manager, error=dead_stub())
        assert record.state is S.ERROR
        await _until(lambda: record.state is S.READY)
    observe(manager, error=dead_stub())
    await _until(lambda: "gave up" in (record.last_error or ""))
    assert record.state is S.ERROR and record.recovery_attempts == 3
    assert "gave up after 3 reloads" in record.last_error
    loads = control.count("load")
    await asyncio.sleep(0.2)
    assert control.count("load") == loads, "no more automatic reloads"
    await manager.rescan(force=True)
    assert record.state is S.READY


async def test_recovery_reload_failure_stays_error_and_retries(manager, control, entries):
    entries.add("m", "1.0.0")
    await manager.rescan()
    control.fail_prefix["m__"] = "Internal: initialize() raised"
    observe(manager, error=dead_stub())
    record = manager.registry.get("m", "1.0.0")
    await _until(lambda: record.recovery_attempts == 3 and record.state is S.ERROR
                 and "gave up" in (record.last_error or ""))
    assert [t.target for t in record.history][-6:] == [S.LOADING, S.ERROR] * 3


async def test_success_after_recovery_resets_the_retry_budget(manager, control, entries):
    entries.add("m", "1.0.0")
    await manager.rescan()
    observe(manager, error=dead_stub())
    record = manager.registry.get("m", "1.0.0")
    await _until(lambda: record.state is S.READY)
    assert record.recovery_attempts == 1
    observe(manager)
    assert record.recovery_attempts == 0


async def test_answers_from_a_retired_copy_are_ignored(manager, control, entries):
    entries.add("m", "1.0.0")
    await manager.rescan()
    observe(manager, error=dead_stub(), name=B)
    assert manager.registry.get("m", "1.0.0").state is S.READY


async def test_runtime_health_follows_the_models(manager, control, entries):
    assert manager.triage.runtime_health().status is Health.UNHEALTHY
    entries.add("a", "1.0.0")
    entries.add("b", "1.0.0")
    await manager.rescan()
    assert manager.triage.runtime_health().status is Health.HEALTHY
    for _ in range(3):
        observe(manager, "a", error=timeout(), latency_ms=5.0)
    health = manager.triage.runtime_health()
    assert (health.status, health.healthy, health.unhealthy) == (Health.DEGRADED, 1, 1)


async def test_calibration_sets_the_fps_capacity(manager, entries):
    class Capacity:
        async def calibrate(self, route, max_batch_size, instance_count):
            assert (route.triton_name, max_batch_size, instance_count) == (A, 0, 1)
            return 123.456

    manager.capacity.capacity = Capacity()
    entries.add("m", "1.0.0")
    await manager.rescan()
    await _until(lambda: manager.registry.get("m", "1.0.0").fps_capacity == 123.5)


async def test_capacity_is_refreshed_from_live_statistics(manager, control, entries):
    from sidecar.control.capacity import Capacity

    manager.capacity.capacity = Capacity(control)
    entries.add("m", "1.0.0")
    await manager.rescan()
    control.stats[A] = {"inference_count": 100, "inference_stats": {"compute_infer": {"ns": 500_000_000}}}
    changes = []
    manager.on_change(lambda: changes.append(1))
    await manager.capacity.refresh()
    assert manager.registry.get("m", "1.0.0").fps_capacity == 200.0 and changes


async def test_a_request_error_that_is_the_callers_does_not_count_against_the_model(manager, entries):
    entries.add("m", "1.0.0")
    await manager.rescan()
    for _ in range(20):
        observe(manager, error=InternalError("inference server error: boom"))
    assert manager.triage.snapshot(("m", "1.0.0")).errors == 20
    from sidecar.errors import InvalidInput, Overloaded

    observe(manager, error=InvalidInput("frame.data is empty"))
    observe(manager, error=Overloaded("slow down"))
    assert manager.triage.snapshot(("m", "1.0.0")).errors == 20


async def test_a_model_the_server_lost_is_reloaded_at_once(manager, control, entries):
    entries.add("m", "1.0.0")
    await manager.rescan()
    observe(manager, error=ModelNotLoaded("the model is not loaded in the inference server"))
    record = manager.registry.get("m", "1.0.0")
    assert record.state in (S.ERROR, S.LOADING)
    await _until(lambda: record.state is S.READY)
    assert "lost it" in record.last_error and route(manager) == B


async def test_one_copy_source_reloads_in_place_on_change_and_recovers_out_then_in(manager, control, entries):
    entries.one_copy = True
    plugin = entries.add("m", "1.0.0")
    await manager.rescan()
    plugin.digest = "d2"
    await manager.on_changes([Change("m", "1.0.0")])
    record = manager.registry.get("m", "1.0.0")
    assert record.state is S.READY and record.source_digest == "d2" and route(manager) == A
    assert control.calls == [("load", A), ("load", A)]  # Triton swaps the copy in place
    observe(manager, error=dead_stub())
    await _until(lambda: record.state is S.READY)
    assert control.calls[-2:] == [("unload", A), ("load", A)] and route(manager) == A


async def test_resync_reloads_the_versions_the_server_no_longer_serves(manager, control, entries):
    entries.add("m", "1.0.0")
    entries.add("n", "1.0.0")
    await manager.rescan()
    control.loaded.discard(A)  # the server restarted and has not loaded m again
    await manager.resync()
    record = manager.registry.get("m", "1.0.0")
    await _until(lambda: record.state is S.READY and route(manager) == B)
    assert manager.registry.get("n", "1.0.0").recovery_attempts == 0


def out_of_memory() -> SidecarError:
    return PluginError("infer: OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB",
                       ErrorCode.RESOURCE_EXHAUSTED)


async def test_out_of_memory_moves_to_error_and_recovers_after_the_cooldown(manager, control, entries):
    entries.add("m", "1.0.0")
    await manager.rescan()
    observe(manager, error=out_of_memory())
    record = manager.registry.get("m", "1.0.0")
    assert record.state is S.ERROR and record.reason.startswith("RESOURCE_EXHAUSTED: infer:")
    await _until(lambda: record.state is S.READY)
    assert _states(record)[-3:] == [S.ERROR, S.LOADING, S.READY] and route(manager) == B


async def test_gpu_error_moves_to_error_like_out_of_memory(manager, entries):
    entries.add("m", "1.0.0")
    await manager.rescan()
    observe(manager, error=PluginError("infer: CUDA error: an illegal memory access", ErrorCode.GPU_ERROR))
    assert manager.registry.get("m", "1.0.0").state is S.ERROR


async def test_recovery_reload_out_of_memory_is_failed_and_not_retried(manager, control, entries):
    entries.add("m", "1.0.0")
    await manager.rescan()
    control.fail[B] = ("load failed for model 'm__1.0.0__b': version 1 is at UNAVAILABLE state: Internal: "
                       "[RUTH:LOAD_FAILED] load: RESOURCE_EXHAUSTED: OutOfMemoryError: CUDA out of memory")
    observe(manager, error=out_of_memory())
    record = manager.registry.get("m", "1.0.0")
    await _until(lambda: record.state is S.FAILED)
    assert "lack of resources" in record.reason and "RESOURCE_EXHAUSTED" in record.reason
    await _until(lambda: control.count("unload", A) == 1)  # the broken copy gives its memory back
    loads = control.count("load")
    await asyncio.sleep(0.2)
    assert control.count("load") == loads and route(manager) is None


async def test_a_request_failure_is_the_versions_last_error_with_its_time(manager, entries):
    entries.add("m", "1.0.0")
    await manager.rescan()
    violation = PluginError("validate: data must contain ['ok']", ErrorCode.OUTPUT_SCHEMA_VIOLATION)
    observe(manager, error=violation)
    record = manager.registry.get("m", "1.0.0")
    assert record.state is S.READY and record.last_error.startswith("OUTPUT_SCHEMA_VIOLATION: validate:")
    assert record.last_error_at is not None
    observe(manager, error=SidecarError("bad frame", ErrorCode.INVALID_INPUT))
    assert record.last_error.startswith("OUTPUT_SCHEMA_VIOLATION"), "the caller's errors are not the model's"


async def test_a_version_whose_limits_exceed_the_runtimes_gets_a_warning(control, entries, policy):
    manager = LifecycleManager(control, entries, RouteTable(), Leases(), policy=policy,
                               request_timeout_ms=5000)
    entries.add("m", "1.0.0")  # the default limits: 1000 + 5000 + 1000 ms
    await manager.rescan()
    record = manager.registry.get("m", "1.0.0")
    assert record.state is S.READY
    assert [w.split(":")[0] for w in record.warnings] == ["timeouts_exceed_runtime"]
    assert record.to_dict()["warnings"] == record.warnings
    assert route_of(record).limits_ms == 7000


def _gpu_manager(control, entries, policy, free_mb: list[int], preferred=()):
    from ruthgen.hardware import GpuInfo

    gpus = tuple(GpuInfo(i, memory_total_mb=16384, memory_available_mb=mb) for i, mb in enumerate(free_mb))
    return LifecycleManager(control, entries, RouteTable(), Leases(), policy=policy, gpus=lambda: gpus,
                            preferred_versions=preferred)


@pytest.mark.parametrize(("preferred", "loaded", "skipped"), [((), "2.0.0", "1.0.0"),
                                                              (("m:1.0.0",), "1.0.0", "2.0.0")])
async def test_versions_that_need_more_gpu_memory_than_is_free_load_in_priority_order(
    control, entries, policy, preferred, loaded, skipped
):
    manager = _gpu_manager(control, entries, policy, [10_000], preferred)
    for version in ("1.0.0", "2.0.0"):
        entries.add("m", version, min_gpu_memory_mb=6000)
    entries.add("cpu_model", "1.0.0")
    await manager.rescan()
    assert manager.registry.get("m", loaded).state is S.READY
    left_out = manager.registry.get("m", skipped)
    assert left_out.state is S.FAILED and left_out.reason.startswith("RESOURCE_EXHAUSTED: not loaded")
    assert "needs 6000 MB" in left_out.reason
    assert "GPU 0 has 4000 MB free after the versions" in left_out.reason
    assert control.count("load", f"m__{skipped}") == 0, "never sent to the inference server"
    assert manager.registry.get("cpu_model", "1.0.0").state is S.READY


async def test_gpu_memory_is_checked_on_every_gpu_the_instances_land_on(control, entries, policy):
    manager = _gpu_manager(control, entries, policy, [12_000, 3_000])
    entries.add("m", "1.0.0", min_gpu_memory_mb=4000)
    await manager.rescan()
    record = manager.registry.get("m", "1.0.0")
    assert record.state is S.FAILED and "GPU 1 has 3000 MB free;" in record.reason
    await manager.rescan()
    assert control.count("load") == 0 and record.state is S.FAILED  # not retried without a rescan asking
