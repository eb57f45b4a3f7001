"""A small Python client of the AIRuntime service, for the backend and for tools.

    async with AIRuntimeClient("127.0.0.1:50051") as client:
        response = await client.infer("fall_detection", "1.0.0", jpeg_bytes, frame_id="f1")
        if response.HasField("error"): ...
        else: result = result_dict(response)

Unary errors come back as ``response.error`` too (the status code travels in the gRPC status and
the ``ruth-error-code`` trailer), so callers handle both paths the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from sidecar._proto import airuntime_pb2 as pb
from sidecar._proto import airuntime_pb2_grpc as pb_grpc
from sidecar.errors import ERROR_CODE_KEY

__all__ = ["AIRuntimeClient", "pb", "result_dict"]

FORMATS = {"jpeg": pb.JPEG, "jpg": pb.JPEG, "png": pb.PNG, "raw_rgb": pb.RAW_RGB, "raw_bgr": pb.RAW_BGR}
_MAX_MESSAGE = 64 * 1024 * 1024
_OPTIONS = [("grpc.max_send_message_length", _MAX_MESSAGE), ("grpc.max_receive_message_length", _MAX_MESSAGE)]


def result_dict(response: pb.InferenceResponse) -> dict[str, Any]:
    """``response.result`` as a plain dict (numbers are floats, as in any Struct)."""
    return json_format.MessageToDict(response.result)


def response_dict(response: pb.InferenceResponse) -> dict[str, Any]:
    """The whole response as JSON-ready dict (field names as in the .proto)."""
    return json_format.MessageToDict(response, preserving_proto_field_name=True)


def answer_dict(response: pb.InferenceResponse) -> dict[str, Any]:
    """The whole response as a JSON-ready dict, integral numbers as integers (``ruthgen infer``)."""
    return _plain(response_dict(response))


def format_of(path: str | Path) -> int:
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ValueError(f"cannot tell the image format of {path} (use .jpg, .jpeg or .png)")
    return FORMATS[suffix]


def make_request(
    model_id: str,
    version: str,
    data: bytes,
    format: int | str = pb.JPEG,
    *,
    frame_id: str = "",
    camera_id: str = "",
    width: int = 0,
    height: int = 0,
    timestamp_ms: int = 0,
    timeout_ms: int = 0,
) -> pb.InferenceRequest:
    fmt = FORMATS[format] if isinstance(format, str) else format
    return pb.InferenceRequest(
        frame_id=frame_id,
        camera_id=camera_id,
        model_id=model_id,
        version=version,
        frame=pb.Frame(data=data, format=fmt, width=width, height=height),
        timestamp_ms=timestamp_ms,
        timeout_ms=timeout_ms,
    )


class AIRuntimeClient:
    """asyncio client; ``credentials`` (grpc.ChannelCredentials) selects TLS."""

    def __init__(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        opts = [*_OPTIONS, *options]
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=opts)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=opts)
        self._stub = pb_grpc.AIRuntimeStub(self._channel)

    async def __aenter__(self) -> AIRuntimeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Wait until the channel is connected (raises TimeoutError)."""
        await asyncio.wait_for(self._channel.channel_ready(), timeout_s)

    async def infer(
        self,
        model_id: str,
        version: str,
        data: bytes,
        format: int | str = pb.JPEG,
        *,
        timeout_s: float | None = None,
        **fields: Any,
    ) -> pb.InferenceResponse:
        """One frame; errors are returned in ``response.error``, never raised."""
        return await self.infer_request(make_request(model_id, version, data, format, **fields), timeout_s)

    async def infer_request(
        self, request: pb.InferenceRequest, timeout_s: float | None = None
    ) -> pb.InferenceResponse:
        try:
            return await self._stub.Infer(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as e:
            return _error_response(request, e)

    def stream(self, requests: AsyncIterable[pb.InferenceRequest]) -> AsyncIterator[pb.InferenceResponse]:
        """InferStream: yields one response per request, in completion order."""
        return _responses(self._stub.InferStream(requests))

    def open_stream(self) -> grpc.aio.StreamStreamCall:
        """A raw InferStream call: ``await call.write(request)``, ``await call.read()``."""
        return self._stub.InferStream()

    async def health(self, timeout_s: float | None = 5.0) -> pb.HealthCheckResponse:
        return await self._stub.HealthCheck(pb.HealthCheckRequest(), timeout=timeout_s)

    async def status(
        self, model_id: str = "", version: str = "", timeout_s: float | None = 5.0
    ) -> pb.ModelStatusResponse:
        return await self._stub.GetModelStatus(
            pb.ModelStatusRequest(model_id=model_id, version=version), timeout=timeout_s
        )


async def _responses(call: grpc.aio.StreamStreamCall) -> AsyncIterator[pb.InferenceResponse]:
    async for response in call:
        yield response


_CODE_FROM_STATUS = {
    grpc.StatusCode.DEADLINE_EXCEEDED: pb.TIMEOUT,
    grpc.StatusCode.UNAVAILABLE: pb.MODEL_NOT_READY,
    grpc.StatusCode.RESOURCE_EXHAUSTED: pb.OVERLOADED,
}


def _error_response(request: pb.InferenceRequest, error: grpc.aio.AioRpcError) -> pb.InferenceResponse:
    code_name = ""
    for key, value in error.trailing_metadata() or ():
        if key == ERROR_CODE_KEY:
            code_name = value
    if code_name in pb.ErrorCode.keys():  # noqa: SIM118 (protobuf enum wrapper)
        code = pb.ErrorCode.Value(code_name)
    else:
        code = _CODE_FROM_STATUS.get(error.code(), pb.INTERNAL)
    return pb.InferenceResponse(
        frame_id=request.frame_id,
        camera_id=request.camera_id,
        model_id=request.model_id,
        version=request.version,
        timestamp_ms=request.timestamp_ms,
        error=pb.Error(code=code, message=error.details() or str(error.code())),
    )


def infer_files(
    target: str,
    model_id: str,
    version: str,
    paths: Sequence[str | Path],
    timeout_s: float = 10.0,
    connect_timeout_s: float | None = None,
) -> list[dict[str, Any]]:
    """Send each image file to ``model_id`` ``version`` through the sidecar at ``target``.

    Returns one JSON-ready dict per file (``image``, ``frame_id``, ``result`` or ``error``, ...).
    Raises ``ConnectionError`` when the sidecar cannot be reached (within ``connect_timeout_s``,
    default: ``timeout_s`` but at most 5 s).
    """
    connect = min(5.0, timeout_s) if connect_timeout_s is None else connect_timeout_s
    return asyncio.run(_infer_files(target, model_id, version, paths, timeout_s, connect))


async def _infer_files(
    target: str,
    model_id: str,
    version: str,
    paths: Sequence[str | Path],
    timeout_s: float,
    connect_timeout_s: float,
) -> list[dict[str, Any]]:
    async with AIRuntimeClient(target) as client:
        try:
            await client.wait_ready(connect_timeout_s)
        except (TimeoutError, asyncio.TimeoutError) as e:
            raise ConnectionError(f"cannot reach the sidecar at {target}") from e
        answers = []
        for path in paths:
            path = Path(path)
            response = await client.infer(
                model_id, version, path.read_bytes(), format_of(path), frame_id=path.name, timeout_s=timeout_s
            )
            answers.append({"image": str(path), **_plain(response_dict(response))})
        return answers


def _plain(value: Any) -> Any:
    """Struct numbers are doubles: show the integral ones as integers."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
