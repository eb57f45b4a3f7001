"""RuntimeCore in front of a fake Triton: routing, input checks, deadlines, unary inference, loads."""

from __future__ import annotations

import asyncio
import json

import pytest

from sidecar.core import FrameRequest, RuntimeCore
from sidecar.errors import ErrorCode
from sidecar.registry import Health, ModelState
from tests.sidecar.conftest import FakeTriton, image_bytes

JPEG = image_bytes(64, 48)


def frame(model_id="alpha", version="1.0.0", data=JPEG, fmt="jpeg", **kw) -> FrameRequest:
    return FrameRequest(
        kw.pop("frame_id", "f1"), kw.pop("camera_id", "cam1"), model_id, version, data, fmt, **kw
    )


async def test_core_loads_every_valid_model_when_starting(core: RuntimeCore, fake_triton: FakeTriton):
    assert sorted(fake_triton.loads) == sorted(
        ["alpha__1.0.0", "alpha__2.0.0", "beta__1.0.0", "rawcam__1.0.0", "tracker__1.0.0"]
    )
    assert core.registry.get("alpha", "1.0.0").state is ModelState.READY
    assert core.registry.get("broken", "1.0.0").state is ModelState.INVALID


async def test_core_records_failed_with_tritons_reason_when_a_load_fails(settings, fake_triton: FakeTriton):
    fake_triton.load_failures["beta__1.0.0"] = "Internal: LoadError: weights file is corrupt"
    fake_triton.index["alpha__1.0.0"] = ("READY", "")
    runtime = RuntimeCore(settings, fake_triton)
    await runtime.start()
    try:
        record = runtime.registry.get("beta", "1.0.0")
        assert record.state is ModelState.FAILED
        assert "weights file is corrupt" in record.last_error
        assert "alpha__1.0.0" not in fake_triton.loads  # already READY in Triton
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
        ("broken", "1.0.0", ErrorCode.MODEL_NOT_READY, "INVALID: unknown_input_format: bad format"),
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
    runtime = RuntimeCore(settings.model_copy(update={"max_frame_bytes": 1024}), fake_triton)
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
    outcome = await core.infer(frame(frame_id="f-42"))
    assert outcome.error is None
    assert json.loads(outcome.result) == {"model": "alpha__1.0.0", "frame_id": "f-42"}
    (request,) = fake_triton.requests
    assert request.model_name == "alpha__1.0.0"
    assert list(request.inputs[0].shape) == [len(JPEG)]
    assert request.raw_input_contents[0] == JPEG
    assert request.parameters["camera_id"].string_param == "cam1"
    stats = core.registry.get("alpha", "1.0.0").stats
    assert (stats.requests, stats.successes) == (1, 1)


async def test_core_maps_plugin_error_and_degrades_health_when_plugin_fails(core, fake_triton):
    fake_triton.behaviours["alpha__1.0.0"] = lambda r: "[RUTH:POSTPROCESS_ERROR] postprocess: KeyError: 'x'"
    outcome = await core.infer(frame())
    assert outcome.error.code is ErrorCode.POSTPROCESS_ERROR
    assert outcome.error.message == "postprocess: KeyError: 'x'"
    assert core.registry.get("alpha", "1.0.0").health is Health.UNHEALTHY  # 1 of 1 failed


async def test_core_answers_timeout_within_deadline_when_model_hangs(core, fake_triton):
    fake_triton.behaviours["alpha__1.0.0"] = lambda r: None
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome = await core.infer(frame(timeout_ms=200))
    elapsed = loop.time() - started
    assert outcome.error.code is ErrorCode.TIMEOUT
    assert 0.19 <= elapsed < 0.22
    assert core.registry.get("alpha", "1.0.0").stats.timeouts == 1


def test_core_deadline_takes_the_smallest_of_setting_request_and_client(settings, fake_triton):
    runtime = RuntimeCore(settings, fake_triton)
    assert runtime.deadline_s(frame()) == pytest.approx(7.0)
    assert runtime.deadline_s(frame(timeout_ms=500)) == pytest.approx(0.5)
    assert runtime.deadline_s(frame(timeout_ms=500), client_remaining_s=0.2) == pytest.approx(0.18)
    assert runtime.deadline_s(frame(), client_remaining_s=3.0) == pytest.approx(2.95)


async def test_core_answers_overloaded_when_unary_limit_is_reached(settings, fake_triton):
    fake_triton.delays["alpha__1.0.0"] = 0.2
    runtime = RuntimeCore(settings.model_copy(update={"max_in_flight_unary": 2}), fake_triton)
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
        assert request.parameters["sequence_id"].string_param == "cam7"
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
    outcome = await core.infer(frame())
    assert outcome.error.code is ErrorCode.INTERNAL
    record = core.registry.get("alpha", "1.0.0")
    del fake_triton.behaviours["alpha__1.0.0"]
    for _ in range(100):
        if record.state is ModelState.READY and "alpha__1.0.0" in fake_triton.unloads:
            break
        await asyncio.sleep(0.01)
    assert record.state is ModelState.READY
    assert fake_triton.loads.count("alpha__1.0.0") == 2
    assert (await core.infer(frame())).error is None


async def test_core_answers_not_ready_while_model_is_in_error(core, fake_triton):
    record = core.registry.get("alpha", "1.0.0")
    record.set_state(ModelState.ERROR, "the model's process died")
    outcome = await core.infer(frame())
    assert outcome.error.code is ErrorCode.MODEL_NOT_READY
    assert "is ERROR: the model's process died" in outcome.error.message


async def test_core_health_is_unhealthy_when_triton_is_not_ready(core, fake_triton):
    assert core.health().status is Health.HEALTHY
    fake_triton.ready = False
    await core.lifecycle.refresh()
    report = core.health()
    assert report.status is Health.UNHEALTHY and not report.server_ready


async def test_core_rereads_manifest_and_loads_new_models_when_it_changes(core, fake_triton, repository):
    from tests.sidecar.conftest import manifest_entry, write_manifest

    path = write_manifest(repository, [manifest_entry("alpha"), manifest_entry("gamma")])
    import os

    os.utime(path, ns=(1, 1))  # a different mtime even within the same clock tick
    await core.lifecycle.refresh()
    assert core.registry.get("gamma", "1.0.0").state is ModelState.READY
    assert core.registry.get("beta", "1.0.0") is None
    assert core.model_status("gamma")[0].model_id == "gamma"


async def test_core_holds_a_lease_on_the_copy_while_a_unary_request_is_in_flight(core, fake_triton):
    events: list[str] = []
    core.begin = lambda name: events.append(f"begin {name}")
    core.end = lambda name: events.append(f"end {name}")
    real_infer = fake_triton.infer

    async def infer(request, timeout_s):
        events.append(f"sent {request.model_name}")
        return await real_infer(request, timeout_s)

    fake_triton.infer = infer
    outcome = await core.infer(frame())
    assert outcome.error is None
    assert events == ["begin alpha__1.0.0", "sent alpha__1.0.0", "end alpha__1.0.0"]
