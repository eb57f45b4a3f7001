"""StreamSession in front of a fake Triton: one outcome per request, deadlines, backpressure."""

from __future__ import annotations

import asyncio
import dataclasses
import json

from sidecar.errors import ErrorCode, ModelNotReady
from sidecar.main import build_core
from sidecar.request.pipeline import FrameRequest, Outcome
from sidecar.request.stream import StreamSession
from tests.sidecar.abuse import until
from tests.sidecar.conftest import image_bytes

JPEG = image_bytes(32, 32)


def frame(model_id: str, frame_id: str, camera_id: str = "cam1", **kw) -> FrameRequest:
    return FrameRequest(frame_id, camera_id, model_id, kw.pop("version", "1.0.0"), JPEG, "jpeg", **kw)


def open_session(core, outcomes: list[Outcome]) -> StreamSession:
    """A session whose answers are 'written' as soon as they are emitted (a client that reads)."""

    def emit(outcome: Outcome) -> None:
        outcomes.append(outcome)
        session.written()

    session = core.open_stream(emit)
    return session


async def collect(session: StreamSession, outcomes: list[Outcome], requests: list[FrameRequest]) -> None:
    for request in requests:
        await session.submit(request)
    await session.drain()


async def test_stream_answers_each_request_once_when_models_and_cameras_are_mixed(settings, fake_triton):
    # a burst of 120 requests: the per-model share is the whole window, so none is OVERLOADED
    core = build_core(settings.model_copy(update={"max_in_flight_per_model": 64}), fake_triton)
    await core.start()
    fake_triton.delays["alpha__2.0.0"] = 0.01
    fake_triton.behaviours["alpha__2.0.0"] = lambda r: (
        "[RUTH:INFERENCE_ERROR] infer: boom"
        if int(r.parameters["frame_id"].string_param.split("-")[1]) % 3 == 2
        else json.dumps({"ok": True}).encode()
    )
    outcomes: list[Outcome] = []
    session = open_session(core, outcomes)
    requests = [
        frame(model, f"{camera}-{n}", camera, version=version)
        for n in range(20)
        for camera in ("c1", "c2", "c3")
        for model, version in (("alpha", "1.0.0"), ("alpha", "2.0.0"))
    ]
    await collect(session, outcomes, requests)
    assert len(outcomes) == len(requests) == 120
    seen = sorted((o.request.model_id, o.request.version, o.request.frame_id) for o in outcomes)
    assert seen == sorted((r.model_id, r.version, r.frame_id) for r in requests)
    failed = [o for o in outcomes if o.error is not None]
    assert all(o.error.code is ErrorCode.INFERENCE_ERROR and o.request.version == "2.0.0" for o in failed)
    assert len(failed) == 3 * len([n for n in range(20) if n % 3 == 2])
    assert len(fake_triton.streams) == 2  # one Triton stream per model of the client stream
    await core.stop()


async def test_stream_times_out_hung_model_without_stalling_the_others(core, fake_triton):
    fake_triton.behaviours["alpha__2.0.0"] = lambda r: None  # never answers
    outcomes: list[Outcome] = []
    session = open_session(core, outcomes)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await session.submit(frame("alpha", "hung", version="2.0.0", timeout_ms=1000))
    for n in range(10):
        await session.submit(frame("alpha", f"ok-{n}"))
    assert await until(lambda: len(outcomes) >= 10, 30)
    assert [o.request.frame_id for o in outcomes] == [f"ok-{n}" for n in range(10)]
    await session.drain()
    hung = outcomes[-1]
    assert hung.request.frame_id == "hung" and hung.error.code is ErrorCode.TIMEOUT
    assert 1.0 <= loop.time() - started < 5.0  # its own deadline, not the runtime's 7 s


async def test_stream_answers_overloaded_when_one_model_holds_its_share(settings, fake_triton):
    runtime = build_core(
        settings.model_copy(update={"max_in_flight_per_model": 2, "request_timeout_ms": 1000}), fake_triton
    )
    await runtime.start()
    try:
        fake_triton.behaviours["alpha__2.0.0"] = lambda r: None
        outcomes: list[Outcome] = []
        session = open_session(runtime, outcomes)
        for n in range(3):
            await session.submit(frame("alpha", f"h{n}", version="2.0.0"))
        await session.submit(frame("alpha", "other"))
        assert await until(lambda: len(outcomes) >= 2, 30)
        assert [(o.request.frame_id, o.error.code if o.error else None) for o in outcomes[:2]] == [
            ("h2", ErrorCode.OVERLOADED),
            ("other", None),
        ]
        await session.drain()
        assert sorted(o.request.frame_id for o in outcomes) == ["h0", "h1", "h2", "other"]
    finally:
        await runtime.stop()


async def test_stream_stops_taking_requests_when_window_is_full(settings, fake_triton):
    runtime = build_core(settings.model_copy(update={"max_in_flight_per_stream": 4}), fake_triton)
    await runtime.start()
    try:
        fake_triton.delays["alpha__1.0.0"] = 0.5
        outcomes: list[Outcome] = []
        session = open_session(runtime, outcomes)
        for n in range(4):
            await session.submit(frame("alpha", str(n)))
        assert session.in_flight == 4
        fifth = asyncio.ensure_future(session.submit(frame("alpha", "4")))
        await asyncio.sleep(0.05)
        assert not fifth.done()  # backpressure: the transport stops reading its client
        await asyncio.wait_for(fifth, 30)
        assert len(outcomes) >= 1
        await session.drain()
        assert len(outcomes) == 5
    finally:
        await runtime.stop()


async def test_stream_answers_check_errors_without_touching_triton(core, fake_triton):
    outcomes: list[Outcome] = []
    session = open_session(core, outcomes)
    await session.submit(frame("nope", "a"))
    await session.submit(FrameRequest("b", "c", "alpha", "", JPEG, "jpeg"))
    await session.submit(FrameRequest("c", "c", "alpha", "1.0.0", b"not an image", "jpeg"))
    await session.drain()
    assert [o.error.code for o in outcomes] == [
        ErrorCode.MODEL_NOT_FOUND,
        ErrorCode.VERSION_REQUIRED,
        ErrorCode.INVALID_INPUT,
    ]
    assert fake_triton.streams == []


async def test_stream_answers_pending_requests_when_triton_stream_breaks(core, fake_triton):
    fake_triton.behaviours["alpha__1.0.0"] = lambda r: None
    outcomes: list[Outcome] = []
    session = open_session(core, outcomes)
    for n in range(3):
        await session.submit(frame("alpha", str(n)))
    (stream,) = fake_triton.streams
    stream.on_close(ModelNotReady("inference server closed the stream"))
    assert sorted(o.request.frame_id for o in outcomes) == ["0", "1", "2"]
    assert {o.error.code for o in outcomes} == {ErrorCode.MODEL_NOT_READY}
    del fake_triton.behaviours["alpha__1.0.0"]
    await session.submit(frame("alpha", "after"))
    await session.drain()
    assert outcomes[-1].request.frame_id == "after" and outcomes[-1].error is None
    assert len(fake_triton.streams) == 2  # reopened


async def test_stream_resends_with_start_when_triton_released_the_sequence(core, fake_triton):
    calls: list[bool] = []

    def sequence(request):
        start = request.parameters["sequence_start"].bool_param
        calls.append(start)
        if len(calls) == 2:
            return "inference request for sequence cam1 to model 'x' must specify the START flag"
        return b'{"ok": true}'

    fake_triton.behaviours["tracker__1.0.0"] = sequence
    outcomes: list[Outcome] = []
    session = open_session(core, outcomes)
    await session.submit(frame("tracker", "1"))
    assert await until(lambda: len(outcomes) == 1, 30)
    await session.submit(frame("tracker", "2"))
    await session.drain()
    assert calls == [True, False, True]
    assert [o.error for o in outcomes] == [None, None]


async def test_stream_drops_pending_without_answers_when_client_goes_away(core, fake_triton):
    fake_triton.behaviours["alpha__1.0.0"] = lambda r: None
    outcomes: list[Outcome] = []
    session = open_session(core, outcomes)
    await session.submit(frame("alpha", "1"))
    await session.close()
    assert await until(lambda: session.in_flight == 0 and fake_triton.streams[0].closed, 30)
    await asyncio.sleep(0.05)
    assert outcomes == []


async def test_stream_stops_taking_requests_when_client_does_not_read_answers(settings, fake_triton):
    runtime = build_core(settings.model_copy(update={"max_in_flight_per_stream": 3}), fake_triton)
    await runtime.start()
    try:
        unread: list[Outcome] = []
        session = StreamSession(runtime.pipeline, unread.append)  # answers emitted, never written
        for n in range(3):
            await session.submit(frame("alpha", str(n)))
        assert await until(lambda: len(unread) == 3, 30)
        assert session.in_flight == 0
        fourth = asyncio.ensure_future(session.submit(frame("alpha", "3")))
        await asyncio.sleep(0.02)
        assert not fourth.done()
        session.written()  # the transport wrote one answer
        await asyncio.wait_for(fourth, 30)
        await session.drain()
        assert len(unread) == 4
    finally:
        await runtime.stop()


async def test_stream_restarts_a_released_sequence_once_when_several_frames_were_refused(core, fake_triton):
    released, seen = released_sequence(fake_triton)
    outcomes: list[Outcome] = []
    session = open_session(core, outcomes)
    await session.submit(frame("tracker", "a"))
    assert await until(lambda: len(outcomes) == 1, 30)
    released["on"] = True  # Triton released the idle sequence
    for frame_id in ("b", "c"):
        await session.submit(frame("tracker", frame_id))
    await session.drain()
    assert [o.error for o in outcomes] == [None, None, None]
    # b and c refused; b restarts the sequence, c follows it without START
    assert seen == [("a", True), ("b", False), ("c", False), ("b", True), ("c", False)]


async def test_stream_holds_a_lease_on_the_copy_each_request_went_to_until_it_is_answered(core):
    leases: list[tuple[str, str]] = []
    begin, end = core.leases.begin, core.leases.end
    core.leases.begin = lambda name: (leases.append(("begin", name)), begin(name))
    core.leases.end = lambda name: (leases.append(("end", name)), end(name))
    outcomes: list[Outcome] = []
    session = open_session(core, outcomes)
    requests = [frame("alpha", "a1"), frame("alpha", "a2")]
    for request in requests[:1]:
        await session.submit(request)
    # A reload publishes the version's route to its other copy while a1 is in flight: a2 goes there,
    # and the lease of a1 stays on the copy it was sent to.
    route = core.routes.get("alpha", "1.0.0")
    core.routes.publish(dataclasses.replace(route, triton_name="alpha__1.0.0__b"))
    await collect(session, outcomes, requests[1:])
    assert sorted(o.request.frame_id for o in outcomes) == ["a1", "a2"]
    assert sorted(leases) == sorted([
        ("begin", "alpha__1.0.0"), ("end", "alpha__1.0.0"),
        ("begin", "alpha__1.0.0__b"), ("end", "alpha__1.0.0__b"),
    ])
    assert core.leases.count("alpha__1.0.0") == core.leases.count("alpha__1.0.0__b") == 0


async def test_stream_ends_the_leases_of_pending_requests_when_the_client_goes_away(core, fake_triton):
    fake_triton.behaviours["alpha__1.0.0"] = lambda r: None
    session = open_session(core, [])
    await session.submit(frame("alpha", "1"))
    assert core.leases.count("alpha__1.0.0") == 1
    await session.close()
    assert core.leases.count("alpha__1.0.0") == 0


async def test_a_frame_sent_after_a_restart_began_but_ahead_of_its_resend_follows_it_without_start(
    core, fake_triton
):
    released, seen = released_sequence(fake_triton)
    outcomes: list[Outcome] = []
    session = open_session(core, outcomes)
    gate = asyncio.Event()
    resend = session._resend

    async def held(pending):  # a loaded machine: the restart's resend runs late
        await gate.wait()
        await resend(pending)

    session._resend = held
    await session.submit(frame("tracker", "a"))
    assert await until(lambda: len(outcomes) == 1, 30)
    released["on"] = True  # Triton released the idle sequence
    await session.submit(frame("tracker", "b"))
    assert await until(lambda: core.pipeline.sequences.restarting(), 30)  # b refused: restarting
    await session.submit(frame("tracker", "c"))  # sent before b's resend: refused too
    assert await until(lambda: seen[-1] == ("c", False), 30)
    gate.set()
    await session.drain()
    assert [o.error for o in outcomes] == [None, None, None]
    assert seen == [("a", True), ("b", False), ("c", False), ("b", True), ("c", False)]


def released_sequence(fake_triton) -> tuple[dict[str, bool], list[tuple[str, bool]]]:
    """The tracker behaves as Triton with a sequence: while ``released["on"]`` it refuses a frame
    without START; a START takes it back. ``seen`` records (frame_id, START) of every request."""
    released = {"on": False}
    seen: list[tuple[str, bool]] = []

    def sequence(request):
        start = request.parameters["sequence_start"].bool_param
        seen.append((request.parameters["frame_id"].string_param, start))
        if released["on"] and not start:
            return "inference request for sequence cam1 to model 'x' must specify the START flag"
        released["on"] = False
        return b'{"ok": true}'

    fake_triton.behaviours["tracker__1.0.0"] = sequence
    return released, seen
