"""Draining (SIGTERM) in front of the fake Triton: the sidecar says so in its health, refuses new work,
answers every request its open streams had read, then ends them; and the caller's own
``sequence_start`` restarts a temporal model's sequence."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.client import make_request, pb
from tests.sidecar.conftest import image_bytes

JPEG = image_bytes(32, 32)


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"runtime_id": "runtime-under-test", "shutdown_drain_s": 5.0})


async def grpc_health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        return answer.status


async def test_health_names_the_runtime_and_says_draining_once_it_drains(sidecar, client):
    before = await client.health()
    assert (before.runtime_id, before.draining) == ("runtime-under-test", False)
    assert await grpc_health(sidecar.port) == health_pb2.HealthCheckResponse.SERVING
    assert await sidecar.core.drain(1.0)  # no stream open: drained at once
    after = await client.health()
    assert (after.runtime_id, after.draining) == ("runtime-under-test", True)
    assert await grpc_health(sidecar.port) == health_pb2.HealthCheckResponse.NOT_SERVING
    ready, report = sidecar.core.readiness_report()
    assert (ready, report["draining"]) == (False, True)


async def test_a_draining_runtime_refuses_new_streams_and_calls_with_unavailable(sidecar, client):
    await sidecar.core.drain(1.0)
    refused = await client.infer("alpha", "1.0.0", JPEG, frame_id="late")
    assert refused.error.code == pb.MODEL_NOT_READY and "draining" in refused.error.message
    call = client.open_stream()
    await call.write(make_request("alpha", "1.0.0", JPEG, frame_id="late-stream"))
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await call.read()
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE and "draining" in ended.value.details()


async def test_drain_answers_every_request_the_stream_read_and_none_after(sidecar, client, fake_triton):
    fake_triton.delays["alpha__1.0.0"] = 0.2
    call = client.open_stream()
    answers: list[pb.InferenceResponse] = []
    sent = 0

    async def write_until_refused() -> None:
        nonlocal sent
        try:
            while sent < 200:
                await call.write(make_request("alpha", "1.0.0", JPEG, frame_id=f"f{sent}", camera_id="c"))
                sent += 1
                await asyncio.sleep(0.005)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            pass

    async def read_until_end() -> grpc.StatusCode:
        try:
            while (answer := await call.read()) is not grpc.aio.EOF:
                answers.append(answer)
        except grpc.aio.AioRpcError as e:
            return e.code()
        return grpc.StatusCode.OK

    writer = asyncio.create_task(write_until_refused())
    reader = asyncio.create_task(read_until_end())
    while len(fake_triton.requests) < 10:
        await asyncio.sleep(0.01)
    assert await sidecar.core.drain(5.0)  # every stream ended within the drain
    assert await reader == grpc.StatusCode.UNAVAILABLE
    writer.cancel()
    reached_triton = [r.parameters["frame_id"].string_param for r in fake_triton.requests]
    answered = [a.frame_id for a in answers]
    # every request that reached Triton was answered, each once, without an error; nothing else was
    assert sorted(answered) == sorted(reached_triton) and len(set(answered)) == len(answered)
    assert all(not a.HasField("error") for a in answers)
    assert 10 <= len(answered) < sent  # the client wrote on after the drain began: those it sends elsewhere
    assert sidecar.core.streams.open == 0


async def test_drain_waits_for_the_unary_calls_in_flight_and_they_are_answered(sidecar, client, fake_triton):
    fake_triton.delays["alpha__1.0.0"] = 0.3
    call = asyncio.create_task(client.infer("alpha", "1.0.0", JPEG, frame_id="in-flight"))
    while not fake_triton.requests:
        await asyncio.sleep(0.01)
    assert sidecar.core.unary_calls == 1
    assert await sidecar.core.drain(5.0)  # True: nothing left unanswered, the call included
    assert sidecar.core.unary_calls == 0
    assert not (await call).HasField("error")


async def test_the_callers_sequence_start_restarts_a_temporal_models_sequence(client, fake_triton):
    for n, start in enumerate([False, False, False, True, False]):
        request = make_request("tracker", "1.0.0", JPEG, frame_id=f"t{n}", camera_id="cam-1")
        request.sequence_start = start
        answer = await client.infer_request(request)
        assert not answer.HasField("error")
    sent = [r for r in fake_triton.requests if r.model_name == "tracker__1.0.0"]
    # the first frame starts the camera's sequence on this runtime; the caller restarts it at the fourth
    assert [r.parameters["sequence_start"].bool_param for r in sent] == [True, False, False, True, False]
