"""Failed unary calls carry the standard rich error model (google.rpc.Status + ErrorInfo) besides the
``ruth-error-code`` key, decoded here as any gRPC client would: with ``grpc_status.rpc_status``, and by
a client that knows nothing but what the server's reflection tells it (what grpcurl does)."""

from __future__ import annotations

import asyncio
import base64
import json

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

from sidecar._proto import airuntime_pb2 as pb
from sidecar._proto import airuntime_pb2_grpc as pb_grpc
from sidecar.client import make_request
from sidecar.errors import ERROR_CODE_KEY, ERROR_DOMAIN
from sidecar.grpc.status import handle_errors
from tests.sidecar.conftest import image_bytes

JPEG = image_bytes(32, 32)


def error_info(error: grpc.aio.AioRpcError | grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """The one ErrorInfo of a failed call's google.rpc.Status, checked against the call's own status."""
    status = rpc_status.from_call(error)
    assert status is not None, "no grpc-status-details-bin in the trailing metadata"
    assert (status.code, status.message) == (error.code().value[0], error.details())
    (detail,) = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info), detail.type_url
    return info


def test_error_domain_is_the_api_package():
    assert ERROR_DOMAIN == pb.DESCRIPTOR.package == "ruth.airuntime.v1"


@pytest.mark.parametrize(
    ("args", "behaviour", "code", "status"),
    [
        (("nope", "1.0.0"), None, "MODEL_NOT_FOUND", grpc.StatusCode.NOT_FOUND),
        (("alpha", ""), None, "VERSION_REQUIRED", grpc.StatusCode.INVALID_ARGUMENT),
        (("broken", "1.0.0"), None, "MODEL_NOT_READY", grpc.StatusCode.UNAVAILABLE),
        (("alpha", "1.0.0"), "[RUTH:PREPROCESS_ERROR] preprocess: ValueError: no", "PREPROCESS_ERROR",
         grpc.StatusCode.INTERNAL),
    ],
)
async def test_failed_infer_carries_error_info_with_the_code_when_decoded_with_rpc_status(
    sidecar, fake_triton, args, behaviour, code, status
):
    if behaviour is not None:
        fake_triton.behaviours["alpha__1.0.0"] = lambda r: behaviour
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await pb_grpc.AIRuntimeStub(channel).Infer(make_request(*args, JPEG))
    error = raised.value
    assert error.code() is status
    info = error_info(error)
    assert (info.reason, info.domain) == (code, "ruth.airuntime.v1")
    assert (ERROR_CODE_KEY, code) in tuple(error.trailing_metadata())  # the key kept for older clients


class _Buggy:
    @handle_errors
    async def Call(self, request, context):
        raise RuntimeError("a detail the caller must not see")


async def test_unexpected_handler_failure_carries_internal_error_info_without_its_details():
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(_Buggy().Call)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Buggy", {"Call": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await channel.unary_unary("/test.Buggy/Call")(b"")
    finally:
        await server.stop(0)
    assert (raised.value.code(), raised.value.details()) == (grpc.StatusCode.INTERNAL, "internal error")
    info = error_info(raised.value)
    assert (info.reason, info.domain) == ("INTERNAL", ERROR_DOMAIN)


INFER = "ruth.airuntime.v1.AIRuntime/Infer"


def _call_by_reflection(
    target: str, method: str, request_json: str
) -> tuple[dict | None, grpc.RpcError | None]:
    """Call ``service/method`` knowing only the server: its types come from reflection, the request
    from JSON (as ``grpcurl -d JSON host:port ruth.airuntime.v1.AIRuntime/Infer`` does)."""
    with grpc.insecure_channel(target) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        service_name, method_name = method.split("/")
        found = pool.FindServiceByName(service_name).FindMethodByName(method_name)
        request_class = message_factory.GetMessageClass(found.input_type)
        response_class = message_factory.GetMessageClass(found.output_type)
        call = channel.unary_unary(
            f"/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        try:
            response = call(json_format.Parse(request_json, request_class()), timeout=10)
        except grpc.RpcError as e:
            return None, e
        return json_format.MessageToDict(response, preserving_proto_field_name=True), None


async def test_a_client_without_the_proto_reads_results_and_error_codes_through_reflection(sidecar):
    target = f"127.0.0.1:{sidecar.port}"
    frame = {"data": base64.b64encode(JPEG).decode(), "format": "JPEG"}
    ok = json.dumps({"model_id": "alpha", "version": "1.0.0", "frame_id": "f1", "frame": frame})
    answer, error = await asyncio.to_thread(_call_by_reflection, target, INFER, ok)
    assert error is None and answer is not None
    assert answer["frame_id"] == "f1" and answer["result"] == {"model": "alpha__1.0.0", "frame_id": "f1"}

    failing = json.dumps({"model_id": "alpha", "version": "", "frame": frame})
    answer, error = await asyncio.to_thread(_call_by_reflection, target, INFER, failing)
    assert answer is None and error is not None
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(error)
    assert (info.reason, info.domain) == ("VERSION_REQUIRED", "ruth.airuntime.v1")
