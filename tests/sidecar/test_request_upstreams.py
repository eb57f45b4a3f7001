"""Upstreams on the request path, in front of the fake Triton (the real path:
tests/integration/test_upstreams.py): the upstream runs once per frame, its result reaches the
dependent's request, failures and waiting upstreams answer with codes that name the upstream."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from ruthgen.writer import build_repository
from sidecar.errors import ErrorCode
from sidecar.main import build_core
from sidecar.request.pipeline import BatchItem, FrameRequest, Outcome
from sidecar.request.upstreams import UpstreamMemo
from sidecar.settings import load_settings
from tests.sidecar.conftest import image_bytes, write_plugin

JPEG = image_bytes()
PERSON = "person__1.0.0"


def _with_upstreams(models: Path, model_id: str, upstreams: list[str], extra: str = "", **input_spec) -> None:
    folder = write_plugin(models, model_id, **input_spec)
    entries = "".join(f'  - {{model_id: {u}, version: "1.0.0"}}\n' for u in upstreams)
    (folder / "model.yaml").write_text((folder / "model.yaml").read_text() + "upstreams:\n" + entries + extra)


@pytest.fixture(scope="module")
def upstream_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sidecar-upstreams")
    models = root / "models"
    write_plugin(models, "person")
    _with_upstreams(models, "helmet", ["person"])
    _with_upstreams(models, "crowd", ["person"], "performance: {recommended_batch_size: 4}\n", type="batch")
    _with_upstreams(models, "fall", ["person"], type="temporal")
    _with_upstreams(models, "orphan", ["ghost"])
    repository = root / "model_repository"
    build_repository(models, repository)
    return repository


@pytest.fixture
async def runtime(upstream_repository, fake_triton):
    settings = load_settings(
        grpc_port=0, http_port=None, model_repository=upstream_repository, triton_connect_timeout_s=0.5,
        refresh_interval_s=60.0, calibrate=False, watch_models=False, recovery_cooldown_s=60.0,
    )
    fake_triton.behaviours[PERSON] = lambda r: b'{"people": 2}'
    core = build_core(settings, fake_triton)  # type: ignore[arg-type]
    await core.start()
    yield core
    await core.stop()


def frame(model_id: str, frame_id: str = "f1", camera_id: str = "cam1") -> FrameRequest:
    return FrameRequest(frame_id, camera_id, model_id, "1.0.0", JPEG, "jpeg")


def sent_to(fake_triton, name: str) -> list:
    return [r for r in fake_triton.requests if r.model_name == name]


async def test_a_dependent_gets_its_upstreams_result_for_the_frame(runtime, fake_triton):
    outcome = await runtime.infer(frame("helmet"))
    assert outcome.error is None
    (upstream,) = sent_to(fake_triton, PERSON)
    assert upstream.parameters["frame_id"].string_param == "f1"
    assert upstream.raw_input_contents[0] == JPEG
    (dependent,) = sent_to(fake_triton, "helmet__1.0.0")
    assert json.loads(dependent.parameters["upstreams"].string_param) == {"person": {"people": 2}}


async def test_the_upstream_runs_once_for_dependents_asking_about_one_frame(runtime, fake_triton):
    fake_triton.delays[PERSON] = 0.05  # still running when the others ask
    outcomes = await asyncio.gather(*(runtime.infer(frame(m, "f7")) for m in ("helmet", "crowd", "fall")))
    assert [o.error for o in outcomes] == [None, None, None]
    later = await runtime.infer(frame("helmet", "f7"))  # a separate request for the same frame, later
    assert later.error is None
    assert len(sent_to(fake_triton, PERSON)) == 1
    assert runtime.pipeline.fanout.upstreams.memo.hits == 3


@pytest.mark.parametrize("upstream_first", [True, False])
async def test_separate_requests_to_the_upstream_and_its_dependents_run_it_once(
    runtime, fake_triton, upstream_first
):
    fake_triton.delays[PERSON] = 0.05
    names = ["person", "helmet", "fall", "crowd"] if upstream_first else ["helmet", "fall", "crowd", "person"]
    outcomes = await asyncio.gather(*(runtime.infer(frame(m, "f11")) for m in names))
    assert [o.error for o in outcomes] == [None] * 4
    (person,) = [o for o in outcomes if o.request.model_id == "person"]
    assert json.loads(person.result) == {"people": 2}
    assert len(sent_to(fake_triton, PERSON)) == 1
    assert (await runtime.infer(frame("person", "f11"))).result == person.result  # kept a while
    assert len(sent_to(fake_triton, PERSON)) == 1


async def test_frames_without_a_frame_id_or_of_other_cameras_are_not_shared(runtime, fake_triton):
    for request in (frame("helmet", ""), frame("helmet", ""), frame("helmet", "f1", "cam1"),
                    frame("helmet", "f1", "cam2")):
        assert (await runtime.infer(request)).error is None
    assert len(sent_to(fake_triton, PERSON)) == 4


async def test_a_batch_dependent_gets_each_frames_upstream_result(runtime, fake_triton):
    fake_triton.behaviours[PERSON] = lambda r: json.dumps(
        {"people": int(r.parameters["frame_id"].string_param[1:])}
    ).encode()
    request = FrameRequest("", "cam1", "crowd", "1.0.0", b"", "")
    request.batch = [BatchItem(f"b{n}", "cam1", JPEG, "jpeg") for n in range(3)]
    fake_triton.behaviours["crowd__1.0.0"] = lambda r: [b'{"ok": true}'] * 3
    outcome = await runtime.infer(request)
    assert [f.error for f in outcome.frames] == [None] * 3
    (sent,) = sent_to(fake_triton, "crowd__1.0.0")
    items = json.loads(sent.parameters["batch"].string_param)
    assert [item["upstreams"] for item in items] == [{"person": {"people": n}} for n in range(3)]


async def test_a_failing_upstream_answers_each_dependent_upstream_error_naming_it(runtime, fake_triton):
    fake_triton.behaviours[PERSON] = lambda r: "[RUTH:INFERENCE_ERROR] infer: RuntimeError: no weights"
    outcomes = await asyncio.gather(*(runtime.infer(frame(m, "f9")) for m in ("helmet", "fall")))
    for outcome in outcomes:
        assert outcome.error.code is ErrorCode.UPSTREAM_ERROR
        assert outcome.error.message.startswith("upstream person 1.0.0 answered INFERENCE_ERROR: infer:")
    assert sent_to(fake_triton, "helmet__1.0.0") == [] and sent_to(fake_triton, "fall__1.0.0") == []
    assert len(sent_to(fake_triton, PERSON)) == 1
    fake_triton.behaviours[PERSON] = lambda r: b'{"people": 1}'
    assert (await runtime.infer(frame("helmet", "f9"))).error is None  # a failure is not kept


async def test_an_upstream_that_times_out_answers_upstream_error_with_its_code(runtime, fake_triton):
    fake_triton.behaviours[PERSON] = lambda r: None  # never answers
    outcome = await runtime.infer(FrameRequest("f3", "cam1", "helmet", "1.0.0", JPEG, "jpeg", timeout_ms=200))
    assert outcome.error.code is ErrorCode.UPSTREAM_ERROR
    assert "upstream person 1.0.0 answered TIMEOUT" in outcome.error.message


async def test_a_model_whose_upstream_is_missing_does_not_serve_and_says_why(runtime):
    outcome = await runtime.infer(frame("orphan"))
    assert outcome.error.code is ErrorCode.MODEL_NOT_READY
    assert outcome.error.message == "orphan 1.0.0 is not serving: its upstream ghost 1.0.0 is not there"
    (view,) = runtime.model_status("orphan", "1.0.0")
    assert view.record.state.value == "READY" and view.health.value == "UNHEALTHY"
    assert view.waiting == "its upstream ghost 1.0.0 is not there"
    (item,) = runtime.models("orphan")
    assert item["upstreams"] == [{"model_id": "ghost", "version": "1.0.0"}]
    (entry,) = [m for m in runtime.capabilities()["models"] if m["model_id"] == "orphan"]
    assert entry["health"] == "UNHEALTHY"
    assert entry["reason"] == "not serving: its upstream ghost 1.0.0 is not there"


async def test_a_temporal_dependent_on_a_stream_keeps_each_cameras_order(runtime, fake_triton):
    real_infer = fake_triton.infer

    async def uneven(request, timeout_s):  # the upstream answers later frames first
        if request.model_name == PERSON:
            await asyncio.sleep(0.03 * (5 - int(request.parameters["frame_id"].string_param)))
        return await real_infer(request, timeout_s)

    fake_triton.infer = uneven
    outcomes: list[Outcome] = []
    session = runtime.open_stream(outcomes.append)
    for n in range(5):
        for camera in ("a", "b"):
            await session.submit(frame("fall", str(n), camera))
    await session.drain()
    assert len(outcomes) == 10 and all(o.error is None for o in outcomes)
    for camera in ("a", "b"):
        sent = [r.parameters["frame_id"].string_param for r in sent_to(fake_triton, "fall__1.0.0")
                if r.parameters["camera_id"].string_param == camera]
        assert sent == ["0", "1", "2", "3", "4"]


def test_the_memo_keeps_at_most_its_entries_bytes_and_age():
    now = [0.0]
    memo = UpstreamMemo(max_entries=3, max_bytes=10, max_age_s=1.0, clock=lambda: now[0])
    loop = asyncio.new_event_loop()
    try:
        def keep(n: int, payload: bytes) -> None:
            future = loop.create_future()
            memo.start(("m", "1", "c", str(n)), future)
            future.set_result(payload)
            memo.settle(("m", "1", "c", str(n)), future)

        for n in range(5):
            keep(n, b"ab")
        assert len(memo) == 3 and memo.bytes == 6  # the two oldest went
        assert memo.lookup(("m", "1", "c", "0")) is None and memo.lookup(("m", "1", "c", "4")) is not None
        keep(5, b"x" * 9)  # over the bytes: the oldest go until it fits
        assert memo.bytes <= 10 and memo.lookup(("m", "1", "c", "5")) is not None
        now[0] = 5.0
        assert memo.lookup(("m", "1", "c", "5")) is None and len(memo) == 0 and memo.bytes == 0
        failed = loop.create_future()
        memo.start(("m", "1", "c", "x"), failed)
        failed.set_exception(RuntimeError("no"))
        memo.settle(("m", "1", "c", "x"), failed)
        assert len(memo) == 0  # a failure is forgotten
    finally:
        loop.close()


def many(models: list[str], frame_id: str = "m1", camera_id: str = "cam1") -> FrameRequest:
    request = FrameRequest(frame_id, camera_id, "", "", JPEG, "jpeg")
    request.models = [(m, "1.0.0") for m in models]
    return request


async def test_one_request_for_several_models_runs_the_shared_upstream_once_and_answers_in_order(
    runtime, fake_triton
):
    fake_triton.delays[PERSON] = 0.02
    outcome = await runtime.infer(many(["helmet", "person", "fall", "crowd"]))
    assert outcome.error is None
    assert [(a.request.model_id, a.error) for a in outcome.answers] == [
        ("helmet", None), ("person", None), ("fall", None), ("crowd", None)
    ]
    assert json.loads(outcome.answers[1].result) == {"people": 2}  # the named upstream's own answer
    assert len(sent_to(fake_triton, PERSON)) == 1
    for name in ("helmet__1.0.0", "fall__1.0.0"):
        (sent,) = sent_to(fake_triton, name)
        assert json.loads(sent.parameters["upstreams"].string_param) == {"person": {"people": 2}}
    (sent,) = sent_to(fake_triton, "crowd__1.0.0")  # a batch model: in its one frame's batch item
    assert json.loads(sent.parameters["batch"].string_param)[0]["upstreams"] == {"person": {"people": 2}}


async def test_one_model_failing_in_a_request_for_several_leaves_the_others_answered(runtime, fake_triton):
    fake_triton.behaviours["helmet__1.0.0"] = lambda r: "[RUTH:POSTPROCESS_ERROR] postprocess: KeyError: 'x'"
    outcome = await runtime.infer(many(["person", "helmet", "orphan", "crowd"]))
    codes = [a.error.code.value if a.error else None for a in outcome.answers]
    assert codes == [None, "POSTPROCESS_ERROR", "MODEL_NOT_READY", None]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: setattr(r, "model_id", "person"), "not both"),
        (lambda r: setattr(r, "models", []), "1 to 16"),
        (lambda r: setattr(r, "models", [("person", "1.0.0")] * 2), "more than once"),
    ],
)
async def test_a_request_for_several_models_is_checked(runtime, change, message):
    request = many(["person"])
    change(request)
    outcome = await runtime.infer(request)
    assert outcome.error.code is ErrorCode.INVALID_INPUT and message in outcome.error.message


async def test_a_stream_answers_a_request_for_several_models_once_with_every_answer(runtime, fake_triton):
    outcomes: list[Outcome] = []
    session = runtime.open_stream(outcomes.append)
    for n in range(3):
        await session.submit(many(["person", "helmet", "fall"], str(n), "cam-s"))
    await session.drain()
    assert len(outcomes) == 3
    assert all([a.error for a in o.answers] == [None, None, None] for o in outcomes)
    assert len(sent_to(fake_triton, PERSON)) == 3
    sent = [r.parameters["frame_id"].string_param for r in sent_to(fake_triton, "fall__1.0.0")]
    assert sent == ["0", "1", "2"]


async def test_on_a_stream_the_upstream_asked_directly_and_by_its_dependents_runs_once(runtime, fake_triton):
    fake_triton.delays[PERSON] = 0.02
    outcomes: list[Outcome] = []
    session = runtime.open_stream(outcomes.append)
    for n in range(3):  # each frame to the upstream itself and to two dependents, as separate requests
        for model_id in ("person", "helmet", "crowd"):
            await session.submit(frame(model_id, f"s{n}", "cam-s"))
    await session.submit(frame("person", "s0", "cam-s"))  # the first frame again, later
    await session.drain()
    assert [o.error for o in outcomes] == [None] * 10
    assert len(sent_to(fake_triton, PERSON)) == 3  # once per frame
    direct = [json.loads(o.result) for o in outcomes if o.request.model_id == "person"]
    assert direct == [{"people": 2}] * 4
