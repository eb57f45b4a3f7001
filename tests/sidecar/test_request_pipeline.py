"""The runtime core in front of a fake Triton: routing, input checks, deadlines, unary inference,
loads from a read-only repository, recovery, health."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from ruthgen.writer import build_repository
from sidecar.control.health import Health
from sidecar.control.states import ModelState
from sidecar.core import RuntimeCore
from sidecar.errors import ErrorCode
from sidecar.main import build_core
from sidecar.request.messages import sequence_number
from sidecar.request.pipeline import FrameRequest, Outcome
from tests.sidecar.abuse import until
from tests.sidecar.conftest import FakeTriton, image_bytes, write_plugin

JPEG = image_bytes(64, 48)


async def answered(core: RuntimeCore, request: FrameRequest) -> Outcome:
    """``core.infer``, then one turn of the loop: the core accounts for an answer (health, metrics,
    the failure log) once the answer is on its way."""
    outcome = await core.infer(request)
    await asyncio.sleep(0)
    return outcome


def frame(model_id="alpha", version="1.0.0", data=JPEG, fmt="jpeg", **kw) -> FrameRequest:
    return FrameRequest(
        kw.pop("frame_id", "f1"), kw.pop("camera_id", "cam1"), model_id, version, data, fmt, **kw
    )


async def test_core_loads_every_valid_model_when_starting(core: RuntimeCore, fake_triton: FakeTriton):
    assert sorted(fake_triton.loads) == sorted(
        ["alpha__1.0.0", "alpha__2.0.0", "beta__1.0.0", "rawcam__1.0.0", "tracker__1.0.0"]
    )
    assert record(core, "alpha").state is ModelState.READY
    assert record(core, "broken").state is ModelState.INVALID


def record(core: RuntimeCore, model_id: str, version: str = "1.0.0"):
    return core.manager.registry.get(model_id, version)


async def test_core_records_failed_with_tritons_reason_when_a_load_fails(settings, fake_triton: FakeTriton):
    fake_triton.load_failures["beta__1.0.0"] = "Internal: LoadError: weights file is corrupt"
    runtime = build_core(settings, fake_triton)
    await runtime.start()
    try:
        beta = record(runtime, "beta")
        assert beta.state is ModelState.FAILED
        assert "weights file is corrupt" in beta.last_error
        assert record(runtime, "alpha").state is ModelState.READY
        outcome = await runtime.infer(frame("beta", fmt="png", data=image_bytes(fmt="PNG")))
        assert outcome.error.code is ErrorCode.MODEL_NOT_READY
        assert "FAILED" in outcome.error.message and "weights file is corrupt" in outcome.error.message
    finally:
        await runtime.stop()


@pytest.mark.parametrize(
    ("model_id", "version", "code", "needle"),
    [
        ("nope", "1.0.0", ErrorCode.MODEL_NOT_FOUND, "no model 'nope'"),
        ("alpha", "", ErrorCode.VERSION_REQUIRED, "available: 1.0.0, 2.0.0"),
        ("alpha", "9.9.9", ErrorCode.MODEL_NOT_FOUND, "no version '9.9.9'"),
        ("broken", "1.0.0", ErrorCode.MODEL_NOT_READY, "INVALID: unknown_input_format: input.format"),
    ],
)
async def test_core_answers_routing_error_when_model_cannot_serve(core, model_id, version, code, needle):
    outcome = await core.infer(frame(model_id, version))
    assert outcome.result is None
    assert outcome.error.code is code
    assert needle in outcome.error.message


@pytest.mark.parametrize(
    ("request_kwargs", "needle"),
    [
        ({"data": b""}, "frame.data is empty"),
        ({"fmt": "png"}, "takes jpeg frames, not png"),
        ({"fmt": ""}, "frame.format is missing"),
        ({"data": b"\xff\xd8garbage"}, "JPEG header is corrupt"),
        ({"data": b"GIF89a...."}, "not a JPEG image"),
        ({"data": image_bytes(4, 48)}, "frame is 4x48; alpha 1.0.0 accepts 8x8 to 1920x1080"),
        ({"data": image_bytes(2000, 20)}, "frame is 2000x20"),
        ({"width": 100}, "disagree with the jpeg header (64x48)"),
    ],
)
async def test_core_answers_invalid_input_when_frame_is_wrong(core, fake_triton, request_kwargs, needle):
    outcome = await core.infer(frame(**request_kwargs))
    assert outcome.error.code is ErrorCode.INVALID_INPUT
    assert needle in outcome.error.message
    assert fake_triton.requests == []  # checked before Triton


async def test_core_answers_invalid_input_when_frame_exceeds_size_limit(settings, fake_triton):
    runtime = build_core(settings.model_copy(update={"max_frame_bytes": 1024}), fake_triton)
    await runtime.start()
    try:
        outcome = await runtime.infer(frame(data=image_bytes(200, 200)))
        assert outcome.error.code is ErrorCode.INVALID_INPUT
        assert "the limit is 1024" in outcome.error.message
    finally:
        await runtime.stop()


async def test_core_checks_raw_frames_against_width_and_height(core, fake_triton):
    pixels = bytes(16 * 10 * 3)
    ok = await core.infer(frame("rawcam", data=pixels, fmt="raw_rgb", width=16, height=10))
    assert ok.error is None
    (request,) = fake_triton.requests
    assert list(request.inputs[0].shape) == [10, 16, 3]
    bad = await core.infer(frame("rawcam", data=pixels, fmt="raw_rgb", width=15, height=10))
    assert "15x10x3 needs 450" in bad.error.message
    missing = await core.infer(frame("rawcam", data=pixels, fmt="raw_rgb"))
    assert "need frame.width and frame.height" in missing.error.message


async def test_core_returns_result_and_counts_it_when_triton_answers(core, fake_triton):
    outcome = await answered(core, frame(frame_id="f-42"))
    assert outcome.error is None
    assert json.loads(outcome.result) == {"model": "alpha__1.0.0", "frame_id": "f-42"}
    (request,) = fake_triton.requests
    assert request.model_name == "alpha__1.0.0"
    assert list(request.inputs[0].shape) == [len(JPEG)]
    assert request.raw_input_contents[0] == JPEG
    assert request.parameters["camera_id"].string_param == "cam1"
    stats = core.manager.triage.snapshot(("alpha", "1.0.0"))
    assert (stats.requests, stats.successes) == (1, 1)


async def test_core_answers_with_the_models_own_time_and_the_wait_apart(core, fake_triton):
    fake_triton.model_ms["alpha__1.0.0"] = 2.5
    fake_triton.delays["alpha__1.0.0"] = 0.05  # the request takes longer than the model's own time
    outcome = await answered(core, frame())
    assert outcome.error is None
    assert outcome.model_ms == 2.5 and outcome.inference_ms == 2.5
    assert outcome.elapsed_ms >= 50.0 and outcome.wait_ms == pytest.approx(outcome.elapsed_ms - 2.5)
    stats = core.manager.triage.snapshot(("alpha", "1.0.0"))
    assert stats.avg_ms == 2.5 and stats.avg_wait_ms == pytest.approx(outcome.wait_ms)


async def test_core_judges_the_whole_time_when_the_model_does_not_report_its_own(core, fake_triton):
    fake_triton.delays["alpha__1.0.0"] = 0.02
    outcome = await answered(core, frame())
    assert outcome.model_ms is None and outcome.wait_ms == 0.0
    assert outcome.inference_ms == outcome.elapsed_ms >= 20.0
    assert core.manager.triage.snapshot(("alpha", "1.0.0")).avg_ms == pytest.approx(outcome.elapsed_ms)


async def test_core_maps_plugin_error_and_degrades_health_when_plugin_fails(core, fake_triton):
    fake_triton.behaviours["alpha__1.0.0"] = lambda r: "[RUTH:POSTPROCESS_ERROR] postprocess: KeyError: 'x'"
    outcome = await answered(core, frame())
    assert outcome.error.code is ErrorCode.POSTPROCESS_ERROR
    assert outcome.error.message == "postprocess: KeyError: 'x'"
    (view,) = core.model_status("alpha", "1.0.0")
    assert view.health is Health.DEGRADED  # 1 of 1 failed: too few requests to call it UNHEALTHY


async def test_core_answers_timeout_within_deadline_when_model_hangs(core, fake_triton):
    fake_triton.behaviours["alpha__1.0.0"] = lambda r: None
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome = await answered(core, frame(timeout_ms=200))
    elapsed = loop.time() - started
    assert outcome.error.code is ErrorCode.TIMEOUT
    assert 0.19 <= elapsed < 5.0  # its own deadline, not the runtime's 7 s
    assert core.manager.triage.snapshot(("alpha", "1.0.0")).timeouts == 1


def test_core_deadline_takes_the_smallest_of_setting_request_and_client(settings, fake_triton):
    pipeline = build_core(settings, fake_triton).pipeline
    assert pipeline.deadline_s(frame()) == pytest.approx(7.0)
    assert pipeline.deadline_s(frame(timeout_ms=500)) == pytest.approx(0.5)
    assert pipeline.deadline_s(frame(timeout_ms=500), client_remaining_s=0.2) == pytest.approx(0.18)
    assert pipeline.deadline_s(frame(), client_remaining_s=3.0) == pytest.approx(2.95)


def test_core_deadline_is_the_models_phase_limits_plus_margin_capped_by_the_runtime(settings, fake_triton):
    from sidecar.request.routes import Route

    pipeline = build_core(settings, fake_triton).pipeline
    quick = Route("m", "1.0.0", "READY", triton_name="m__1.0.0", limits_ms=1200)
    slow = Route("m", "1.0.0", "READY", triton_name="m__1.0.0", limits_ms=60_000)
    assert pipeline.deadline_s(frame(), route=quick) == pytest.approx(1.7)  # 1200 ms + the 500 ms margin
    assert pipeline.deadline_s(frame(), route=slow) == pytest.approx(7.0)  # the runtime's maximum
    assert pipeline.deadline_s(frame(timeout_ms=300), route=quick) == pytest.approx(0.3)
    assert pipeline.deadline_s(frame(), client_remaining_s=1.0, route=slow) == pytest.approx(0.95)


async def test_core_answers_overloaded_when_unary_limit_is_reached(settings, fake_triton):
    fake_triton.delays["alpha__1.0.0"] = 1.0
    runtime = build_core(settings.model_copy(update={"max_in_flight_unary": 2}), fake_triton)
    await runtime.start()
    try:
        outcomes = await asyncio.gather(*(runtime.infer(frame(frame_id=str(i))) for i in range(3)))
        codes = sorted(o.error.code.value if o.error else "OK" for o in outcomes)
        assert codes == ["OK", "OK", "OVERLOADED"]
    finally:
        await runtime.stop()


async def test_core_starts_sequence_once_per_camera_and_resends_when_triton_released_it(core, fake_triton):
    started: list[bool] = []

    def sequence(request):
        start = request.parameters["sequence_start"].bool_param
        started.append(start)
        assert request.parameters["sequence_id"].int64_param == sequence_number("cam7")
        assert request.parameters["camera_id"].string_param == "cam7"
        if len(started) == 3 and not start:  # Triton released the idle sequence
            return "inference request for sequence cam7 to model 'tracker__1.0.0' must specify the START flag"
        return b'{"ok": true}'

    fake_triton.behaviours["tracker__1.0.0"] = sequence
    for i in range(3):
        outcome = await core.infer(frame("tracker", camera_id="cam7", frame_id=str(i)))
        assert outcome.error is None
    assert started == [True, False, False, True]
    missing = await core.infer(frame("tracker", camera_id=""))
    assert "camera_id is required" in missing.error.message


async def test_core_marks_error_and_reloads_when_model_process_dies(core, fake_triton):
    fake_triton.behaviours["alpha__1.0.0"] = lambda r: "Stub process 'alpha__1.0.0_0_0' is not healthy."
    outcome = await answered(core, frame())
    assert outcome.error.code is ErrorCode.INTERNAL
    alpha = record(core, "alpha")
    assert alpha.state in (ModelState.ERROR, ModelState.LOADING)
    del fake_triton.behaviours["alpha__1.0.0"]
    assert await until(lambda: alpha.state is ModelState.READY, 30)
    assert fake_triton.unloads == ["alpha__1.0.0"]  # one copy in a read-only repository: out, then in
    assert fake_triton.loads.count("alpha__1.0.0") == 2
    assert (await core.infer(frame())).error is None


async def test_core_answers_not_ready_while_model_is_in_error(core, fake_triton):
    core.manager.recovery.fail(record(core, "alpha"), "the model's process died", hung=False, delay_s=60)
    outcome = await core.infer(frame())
    assert outcome.error.code is ErrorCode.MODEL_NOT_READY
    assert "is ERROR: the model's process died" in outcome.error.message


async def test_core_health_is_unhealthy_when_triton_is_not_ready(core, fake_triton):
    assert core.health().status is Health.HEALTHY
    fake_triton.ready = False
    await core.readiness.check()
    report = core.health()
    assert report.status is Health.UNHEALTHY and not report.server_ready
    assert not core.ready


async def test_core_reloads_what_triton_lost_when_triton_comes_back(core, fake_triton):
    fake_triton.ready = False
    assert await until(lambda: not core.readiness.ready, 30)  # a tick saw Triton gone
    fake_triton.index.clear()  # it restarted with nothing loaded
    loads = len(fake_triton.loads)
    fake_triton.ready = True
    assert await until(
        lambda: len(fake_triton.loads) >= loads + 5 and record(core, "tracker").state is ModelState.READY, 30
    )
    assert sorted(fake_triton.loads[loads:]) == sorted(
        ["alpha__1.0.0", "alpha__2.0.0", "beta__1.0.0", "rawcam__1.0.0", "tracker__1.0.0"]
    )
    assert (await core.infer(frame())).error is None


async def test_core_loads_new_versions_and_unloads_vanished_ones_when_the_manifest_changes(
    tmp_path, settings, fake_triton
):
    models, repository = tmp_path / "models", tmp_path / "repo"
    write_plugin(models, "alpha")
    write_plugin(models, "beta", format="png")
    build_repository(models, repository)
    settings = settings.model_copy(update={"model_repository": repository, "watch_models": True,
                                           "manifest_poll_s": 0.05})
    runtime = build_core(settings, fake_triton)
    await runtime.start()
    try:
        shutil.rmtree(models / "beta")
        write_plugin(models, "gamma")
        build_repository(models, repository)

        def swapped() -> bool:
            gamma, beta = record(runtime, "gamma"), record(runtime, "beta")
            return gamma is not None and gamma.state is ModelState.READY and beta.state is ModelState.UNLOADED

        assert await until(swapped, 30)
        assert record(runtime, "gamma").state is ModelState.READY
        assert record(runtime, "beta").state is ModelState.UNLOADED
        assert "beta__1.0.0" in fake_triton.unloads
        assert runtime.model_status("gamma")[0].record.model_id == "gamma"
        assert (await runtime.infer(frame("gamma"))).error is None
    finally:
        await runtime.stop()


async def test_core_holds_a_lease_on_the_copy_while_a_unary_request_is_in_flight(core, fake_triton):
    counts: list[int] = []
    real_infer = fake_triton.infer

    async def infer(request, timeout_s):
        counts.append(core.leases.count(request.model_name))
        return await real_infer(request, timeout_s)

    fake_triton.infer = infer
    outcome = await core.infer(frame())
    assert outcome.error is None
    assert counts == [1]
    assert core.leases.count("alpha__1.0.0") == 0


async def test_core_logs_one_line_per_failed_request_with_its_ids(core, fake_triton, caplog):
    fake_triton.behaviours["alpha__1.0.0"] = lambda r: "[RUTH:INFERENCE_ERROR] infer: ZeroDivisionError"
    with caplog.at_level("WARNING", logger="sidecar.requests"):
        await answered(core, frame(frame_id="f9", camera_id="cam7"))
    (line,) = [r for r in caplog.records if r.name == "sidecar.requests"]
    assert {k: line.ruth[k] for k in ("model_id", "version", "frame_id", "camera_id", "code", "phase")} == {
        "model_id": "alpha", "version": "1.0.0", "frame_id": "f9", "camera_id": "cam7",
        "code": "INFERENCE_ERROR", "phase": "infer",
    }
    assert line.ruth["latency_ms"] >= 0


def test_core_declares_the_installed_packages_version(core):
    import importlib.metadata

    assert core.capabilities()["version"] == importlib.metadata.version("ruth-ai-runtime")
