"""The AIRuntime gRPC service in-process (real server on port 0, real stubs, fake Triton)."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sidecar._proto import airuntime_pb2 as pb
from sidecar._proto import airuntime_pb2_grpc as pb_grpc
from sidecar.client import make_request, result_dict
from sidecar.errors import ErrorCode
from sidecar.grpc import converters
from sidecar.grpc.status import GRPC_STATUS
from tests.sidecar.abuse import until
from tests.sidecar.conftest import image_bytes

JPEG = image_bytes(32, 32)


async def test_infer_returns_result_struct_when_model_answers(client, fake_triton):
    fake_triton.behaviours["alpha__1.0.0"] = lambda r: json.dumps(
        {"label": "person", "boxes": [{"x": 1, "score": 0.5}], "empty": None, "flag": False}
    ).encode()
    response = await client.infer("alpha", "1.0.0", JPEG, frame_id="f1", camera_id="c1", timestamp_ms=5)
    assert not response.HasField("error")
    assert (response.frame_id, response.camera_id, response.timestamp_ms) == ("f1", "c1", 5)
    assert result_dict(response) == {
        "label": "person",
        "boxes": [{"x": 1.0, "score": 0.5}],
        "empty": None,
        "flag": False,
    }
    assert response.inference_ms > 0


@pytest.mark.parametrize(
    ("args", "code", "status"),
    [
        (("nope", "1.0.0"), pb.MODEL_NOT_FOUND, grpc.StatusCode.NOT_FOUND),
        (("alpha", ""), pb.VERSION_REQUIRED, grpc.StatusCode.INVALID_ARGUMENT),
        (("broken", "1.0.0"), pb.MODEL_NOT_READY, grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_infer_fails_with_mapped_status_and_code_when_routing_fails(sidecar, args, code, status):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        stub = pb_grpc.AIRuntimeStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Infer(make_request(*args, JPEG))
    assert raised.value.code() is status
    assert ("ruth-error-code", pb.ErrorCode.Name(code)) in tuple(raised.value.trailing_metadata())


async def test_infer_answers_internal_without_details_when_the_handler_itself_fails(sidecar, monkeypatch):
    def broken(message):
        raise RuntimeError("a detail the caller must not see")

    monkeypatch.setattr(converters, "frame_request", broken)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await pb_grpc.AIRuntimeStub(channel).Infer(make_request("alpha", "1.0.0", JPEG))
    assert (raised.value.code(), raised.value.details()) == (grpc.StatusCode.INTERNAL, "internal error")
    assert ("ruth-error-code", "INTERNAL") in tuple(raised.value.trailing_metadata())


async def test_client_turns_unary_errors_into_response_errors(client, fake_triton):
    fake_triton.behaviours["alpha__1.0.0"] = lambda r: "[RUTH:PREPROCESS_ERROR] preprocess: ValueError: no"
    response = await client.infer("alpha", "1.0.0", JPEG, frame_id="f9")
    assert response.frame_id == "f9"
    assert response.error.code == pb.PREPROCESS_ERROR
    assert response.error.message == "preprocess: ValueError: no"


async def test_infer_answers_timeout_before_a_short_client_deadline(client, fake_triton):
    fake_triton.behaviours["alpha__1.0.0"] = lambda r: None
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await client.infer("alpha", "1.0.0", JPEG, timeout_s=0.3)
    assert response.error.code == pb.TIMEOUT
    assert loop.time() - started < 0.3


async def test_infer_stream_answers_every_request_with_its_frame_id(client, fake_triton):
    fake_triton.behaviours["alpha__2.0.0"] = lambda r: "[RUTH:INFERENCE_ERROR] infer: no"

    async def requests():
        for n in range(30):
            yield make_request("alpha", "1.0.0" if n % 2 else "2.0.0", JPEG, frame_id=str(n), camera_id="c")
        yield make_request("alpha", "1.0.0", b"junk", frame_id="junk")

    responses = [r async for r in client.stream(requests())]
    assert sorted(r.frame_id for r in responses) == sorted([str(n) for n in range(30)] + ["junk"])
    by_id = {r.frame_id: r for r in responses}
    assert by_id["junk"].error.code == pb.INVALID_INPUT
    assert all(by_id[str(n)].error.code == pb.INFERENCE_ERROR for n in range(0, 30, 2))
    assert all(by_id[str(n)].HasField("result") for n in range(1, 30, 2))


async def test_infer_stream_ends_cleanly_when_client_cancels(client, sidecar, fake_triton):
    fake_triton.behaviours["alpha__1.0.0"] = lambda r: None
    call = client.open_stream()
    await call.write(make_request("alpha", "1.0.0", JPEG, frame_id="1"))
    assert await until(lambda: fake_triton.streams and fake_triton.streams[0].sent, 30)
    call.cancel()
    assert await until(lambda: fake_triton.streams[0].closed, 30)


async def test_health_check_and_model_status_answer_from_kept_state(client, fake_triton):
    await client.infer("alpha", "1.0.0", JPEG)
    requests_before = len(fake_triton.requests)
    health = await client.health()
    assert health.status == pb.HEALTHY  # every VALID model serves; the INVALID one is listed apart
    assert health.inference_server_ready and (health.models_ready, health.models_total) == (5, 6)
    assert {(m.model_id, m.state, m.health) for m in health.models if m.model_id == "broken"} == {
        ("broken", pb.INVALID, pb.UNHEALTHY)
    }
    status = await client.status("alpha", "1.0.0")
    assert len(fake_triton.requests) == requests_before  # no Triton round trip
    (model,) = status.models
    assert model.state == pb.READY and model.health == pb.HEALTHY
    assert model.performance.requests == 1 and model.performance.successes == 1
    assert list(model.accepted_formats) == [pb.JPEG]
    assert model.output_schema["type"] == "object"
    everything = await client.status()
    assert {(m.model_id, m.version) for m in everything.models} >= {("alpha", "1.0.0"), ("broken", "1.0.0")}


async def test_model_status_fails_not_found_when_nothing_matches(sidecar):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await pb_grpc.AIRuntimeStub(channel).GetModelStatus(pb.ModelStatusRequest(model_id="zzz"))
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND


async def test_standard_health_service_follows_the_runtimes_readiness(sidecar, fake_triton):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ruth.airuntime.v1.AIRuntime"):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        fake_triton.ready = False
        await sidecar.core.readiness.check()
        for _ in range(1500):  # up to 30 s: the servicer hears the change on a later turn of the loop
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""))
            if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.02)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_services_and_no_management_rpc(sidecar):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask():
            yield reflection_pb2.ServerReflectionRequest(list_services="")
            yield reflection_pb2.ServerReflectionRequest(file_containing_symbol="ruth.airuntime.v1.AIRuntime")

        replies = [r async for r in stub.ServerReflectionInfo(ask())]
    names = {s.name for s in replies[0].list_services_response.service}
    assert names == {
        "ruth.airuntime.v1.AIRuntime",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    assert replies[1].file_descriptor_response.file_descriptor_proto
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["AIRuntime"].methods}
    assert methods == {"Infer", "InferStream", "HealthCheck", "GetModelStatus"}


def test_every_error_code_has_a_grpc_status_and_a_proto_value():
    assert set(GRPC_STATUS) == set(ErrorCode)
    assert {c.value for c in ErrorCode} <= set(pb.ErrorCode.keys())


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"a": 1, "b": -2.5, "c": "text ünïcode", "d": True, "e": False, "f": None},
        {"nested": {"list": [1, "two", [3.0, {"x": None}], {}, []], "big": 1e300}, "k" * 300: "v" * 70000},
    ],
)
def test_response_carries_the_result_as_a_struct(document):
    from sidecar.request.pipeline import FrameRequest, Outcome

    expected = struct_pb2.Struct()
    expected.update(document)
    request = FrameRequest("f", "c", "m", "1.0.0", b"", "jpeg")
    message = converters.response(Outcome(request, json.dumps(document).encode(), None, 1.0))
    assert message.result == expected and not message.HasField("error")


def test_response_reports_internal_when_result_is_not_an_object():
    from sidecar.request.pipeline import FrameRequest, Outcome

    request = FrameRequest("f", "c", "m", "1.0.0", b"", "jpeg")
    for result in (b"[1, 2]", b"not json", None):
        message = converters.response(Outcome(request, result, None, 1.0))
        assert message.error.code == pb.INTERNAL
