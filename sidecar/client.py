"""A small Python client of the AIRuntime service, for the backend and for tools.

    async with AIRuntimeClient("127.0.0.1:50051") as client:
        response = await client.infer("fall_detection", "1.0.0", jpeg_bytes, frame_id="f1")
        if response.HasField("error"): ...
        else: result = result_dict(response)

Unary errors come back as ``response.error`` too (the status code travels in the gRPC status and
the ``ruth-error-code`` trailer), so callers handle both paths the same way.

A model whose input type is ``batch`` takes several frames in one request:

    frames = [batch_frame(jpeg, frame_id=f"f{i}", camera_id=f"cam{i}") for i, jpeg in enumerate(jpegs)]
    response = await client.infer_batch("crowd_counter", "1.0.0", frames)
    for answer in response.batch:     # one per frame, in order: answer.result or answer.error
        ...

Several models look at one frame in one call (the frame crosses once; an upstream that several of
them need runs once):

    response = await client.infer_models([("person_detection", "1.0.0"), ("helmet_detection", "0.1.0")],
                                         jpeg, frame_id="f1", camera_id="gate-3")
    for answer in response.answers:   # one per model, in order: answer.result or answer.error
        ...
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

FORMATS = {name.lower(): value for name, value in pb.ImageFormat.items() if value} | {"jpg": pb.JPEG}
_MAX_MESSAGE = 64 * 1024 * 1024
#: Keepalive: ping the sidecar every 30 s, between calls too, and drop the connection (failing its
#: calls with UNAVAILABLE) when a ping is not answered within 10 s, so that a stream to a sidecar
#: that vanished fails within ~40 s; the sidecar accepts pings every 10 s or less often.
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.ping_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
#: The channel options of every client of this module and of :mod:`sidecar.fleet`.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", _MAX_MESSAGE), ("grpc.max_receive_message_length", _MAX_MESSAGE),
    *KEEPALIVE_OPTIONS,
]


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
    return pb.InferenceRequest(
        frame_id=frame_id,
        camera_id=camera_id,
        model_id=model_id,
        version=version,
        frame=_frame(data, format, width, height),
        timestamp_ms=timestamp_ms,
        timeout_ms=timeout_ms,
    )


def make_models_request(
    models: Sequence[tuple[str, str]], data: bytes, format: int | str = pb.JPEG, **fields: Any
) -> pb.InferenceRequest:
    """A request for several models on one frame (``InferenceRequest.models``)."""
    request = make_request("", "", data, format, **fields)
    request.models.extend(pb.ModelRef(model_id=m, version=v) for m, v in models)
    return request


def _frame(data: bytes, format: int | str, width: int, height: int) -> pb.Frame:
    fmt = FORMATS[format] if isinstance(format, str) else format
    return pb.Frame(data=data, format=fmt, width=width, height=height)


def batch_frame(data: bytes, format: int | str = pb.JPEG, **ids: Any) -> pb.BatchFrame:
    """One frame of a batch request: ``ids`` are :func:`make_request`'s ``frame_id``, ``camera_id``
    (empty: the request's), ``width``, ``height`` and ``timestamp_ms``."""
    one = make_request("", "", data, format, **ids)
    return pb.BatchFrame(frame_id=one.frame_id, camera_id=one.camera_id, timestamp_ms=one.timestamp_ms,
                         frame=one.frame)


def make_batch_request(
    model_id: str,
    version: str,
    frames: Sequence[pb.BatchFrame],
    *,
    frame_id: str = "",
    camera_id: str = "",
    timestamp_ms: int = 0,
    timeout_ms: int = 0,
) -> pb.InferenceRequest:
    """A request carrying ``frames`` as one batch, for a model whose input type is ``batch``."""
    return pb.InferenceRequest(
        frame_id=frame_id, camera_id=camera_id, model_id=model_id, version=version,
        timestamp_ms=timestamp_ms, timeout_ms=timeout_ms, batch=list(frames),
    )


class AIRuntimeClient:
    """asyncio client; ``credentials`` (grpc.ChannelCredentials) selects TLS."""

    def __init__(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        opts = [*CHANNEL_OPTIONS, *options]
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

    async def infer_models(
        self,
        models: Sequence[tuple[str, str]],
        data: bytes,
        format: int | str = pb.JPEG,
        *,
        timeout_s: float | None = None,
        **fields: Any,
    ) -> pb.InferenceResponse:
        """One frame to several models ``(model_id, version)``: ``response.answers`` holds an answer
        per model, in order (one failing leaves the others answered)."""
        return await self.infer_request(make_models_request(models, data, format, **fields), timeout_s)

    async def infer_batch(
        self,
        model_id: str,
        version: str,
        frames: Sequence[pb.BatchFrame],
        *,
        timeout_s: float | None = None,
        **fields: Any,
    ) -> pb.InferenceResponse:
        """One batch: ``response.batch`` holds an answer per frame, in order; a refusal of the whole
        batch comes back in ``response.error``."""
        return await self.infer_request(make_batch_request(model_id, version, frames, **fields), timeout_s)

    async def infer_request(
        self,
        request: pb.InferenceRequest,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> pb.InferenceResponse:
        """``metadata``: e.g. a :class:`~sidecar.frame_ring.FrameRing`'s, for a frame by reference."""
        try:
            return await self._stub.Infer(request, timeout=timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as e:
            return _error_response(request, e)

    def stream(
        self, requests: AsyncIterable[pb.InferenceRequest], metadata: Sequence[tuple[str, str]] | None = None
    ) -> AsyncIterator[pb.InferenceResponse]:
        """InferStream: yields one response per request, in completion order (``metadata``: e.g. a
        :class:`~sidecar.frame_ring.FrameRing`'s, when the requests carry frames by reference)."""
        return _responses(self._stub.InferStream(requests, metadata=metadata))

    def open_stream(self, metadata: Sequence[tuple[str, str]] | None = None) -> grpc.aio.StreamStreamCall:
        """A raw InferStream call: ``await call.write(request)``, ``await call.read()`` (``metadata``:
        e.g. a :class:`~sidecar.frame_ring.FrameRing`'s, to send frames by reference)."""
        return self._stub.InferStream(metadata=metadata)

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
        size = await _batch_size(client, model_id, version)
        if size > 1:  # a batch model: the images go as batches of its size
            return await _infer_batches(client, model_id, version, [Path(p) for p in paths], size, timeout_s)
        answers = []
        for path in paths:
            path = Path(path)
            response = await client.infer(
                model_id, version, path.read_bytes(), format_of(path), frame_id=path.name, timeout_s=timeout_s
            )
            answers.append({"image": str(path), **_plain(response_dict(response))})
        return answers


async def _batch_size(client: AIRuntimeClient, model_id: str, version: str) -> int:
    """How many frames one request to the model may carry (1 when it is unknown or not a batch model)."""
    try:
        status = await client.status(model_id, version)
    except grpc.aio.AioRpcError:
        return 1
    return max([m.max_batch_size for m in status.models if m.input_type == "batch"], default=1)


async def _infer_batches(
    client: AIRuntimeClient, model_id: str, version: str, paths: list[Path], size: int, timeout_s: float
) -> list[dict[str, Any]]:
    answers = []
    for start in range(0, len(paths), size):
        chunk = paths[start : start + size]
        frames = [batch_frame(p.read_bytes(), format_of(p), frame_id=p.name) for p in chunk]
        response = await client.infer_batch(model_id, version, frames, timeout_s=timeout_s)
        common = {k: v for k, v in _plain(response_dict(response)).items() if k not in ("batch", "error")}
        if response.HasField("error"):  # the batch as a whole was refused
            error = _plain(response_dict(response))["error"]
            answers.extend({"image": str(p), **common, "frame_id": p.name, "error": error} for p in chunk)
            continue
        for path, answer in zip(chunk, response.batch, strict=True):
            item = _plain(response_dict(answer))
            answers.append({"image": str(path), **common, **item, "batch_size": len(chunk)})
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
