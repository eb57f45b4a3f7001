"""The Triton messages of the request path: one frame, or a batch, along a route.

Requests are built by hand as ``ModelInferRequest`` with ``raw_input_contents`` (the cheapest path
measured here); the request path holds them as opaque messages and sends them with
:mod:`sidecar.triton_client`. The frame is the ``FRAME`` tensor (raw bytes, or a region of shared
memory Triton reads), and the ids and options the wrapper reads are request parameters
(:mod:`ruth_protocol <ruthgen.wrapper.ruth_protocol>`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from tritonclient.grpc import service_pb2 as pb

from ruthgen.interface import INPUT_NAME
from ruthgen.interface import ruth_protocol as param
from sidecar.request.routes import Route


@dataclass(frozen=True, slots=True)
class SharedInput:
    """FRAME's bytes in a region registered with Triton: ``size`` bytes at ``offset``."""

    region: str
    offset: int
    size: int


def build_request(
    route: Route,
    request_id: str,
    data: bytes | SharedInput,
    width: int,
    height: int,
    frame_id: str,
    camera_id: str,
    timestamp_ms: int,
    sequence_start: bool = False,
    upstreams: str | None = None,
    pixels: bool = False,
) -> pb.ModelInferRequest:
    """The Triton request for one frame sent along ``route``: FRAME as raw bytes, or (``data`` a
    :class:`SharedInput`) read by Triton from its shared-memory region; ids as parameters, and the
    upstreams' results (JSON) when the model declares upstreams. ``pixels``: FRAME holds the frame
    decoded (``width x height`` RGB) for a model that takes it encoded."""
    request = pb.ModelInferRequest(model_name=route.triton_name, id=request_id)
    tensor = request.inputs.add()
    tensor.name = INPUT_NAME
    tensor.datatype = "UINT8"
    shared = data if type(data) is SharedInput else None
    length = shared.size if shared is not None else len(data)  # type: ignore[arg-type]
    if route.raw:
        shape = (1, height, width, 3) if route.batched else (height, width, 3)
    else:
        shape = (1, length) if route.batched else (length,)
    tensor.shape.extend(shape)
    if shared is None:
        request.raw_input_contents.append(data)  # type: ignore[arg-type]
    else:
        _name_region(tensor, shared)
    params = request.parameters
    if pixels:
        params[param.PIXELS].string_param = f"{width}x{height}"
    if frame_id:
        params[param.FRAME_ID].string_param = frame_id
    if camera_id:
        params[param.CAMERA_ID].string_param = camera_id
    if timestamp_ms:
        params[param.TIMESTAMP_MS].string_param = str(timestamp_ms)
    if route.sequence:
        params[param.SEQUENCE_ID].int64_param = sequence_number(camera_id)
        params[param.SEQUENCE_START].bool_param = sequence_start
    if upstreams is not None:
        params[param.UPSTREAMS].string_param = upstreams
    return request


def _name_region(tensor: pb.ModelInferRequest.InferInputTensor, shared: SharedInput) -> None:
    """The tensor is read by Triton from ``shared``'s region instead of the request's bytes."""
    tensor_params = tensor.parameters
    tensor_params["shared_memory_region"].string_param = shared.region
    tensor_params["shared_memory_byte_size"].int64_param = shared.size
    tensor_params["shared_memory_offset"].int64_param = shared.offset


@functools.lru_cache(maxsize=65536)
def sequence_number(camera_id: str) -> int:
    """A camera's Triton sequence id: 63 bits of the BLAKE2b digest of its id, never 0.

    Cameras travel to Triton as numbers, not strings: Triton 2.51's Python backend corrupts its heap
    and aborts the whole server on a string sequence id longer than 20 bytes. The plugin still gets
    the camera's own id, from the ``camera_id`` parameter.
    """
    digest = hashlib.blake2b(camera_id.encode("utf-8"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") & (2**63 - 1)) or 1


def build_batch_request(
    route: Route,
    request_id: str,
    frames: Sequence[tuple[bytes | SharedInput, int, int]],
    ids: Sequence[dict[str, object]],
) -> pb.ModelInferRequest:
    """One Triton request carrying a batch along ``route``: ``frames`` as ``(data, width, height)``,
    stacked along the batch dimension (raw frames share one size; encoded ones are padded to the
    longest, their lengths in ``frame_lengths``), and each frame's ids in the ``batch`` parameter.
    A batch of one frame may lie in a shared-memory region (``data`` a :class:`SharedInput`)."""
    request = pb.ModelInferRequest(model_name=route.triton_name, id=request_id)
    tensor = request.inputs.add()
    tensor.name = INPUT_NAME
    tensor.datatype = "UINT8"
    params = request.parameters
    params[param.BATCH].string_param = json.dumps(ids, separators=(",", ":"))
    shared = frames[0][0] if len(frames) == 1 else None
    if type(shared) is SharedInput:
        _, width, height = frames[0]
        tensor.shape.extend((1, height, width, 3) if route.raw else (1, shared.size))
        _name_region(tensor, shared)
        if not route.raw:
            params[param.FRAME_LENGTHS].string_param = str(shared.size)
        return request
    if route.raw:
        _, width, height = frames[0]
        tensor.shape.extend((len(frames), height, width, 3))
        request.raw_input_contents.append(b"".join(data for data, _, _ in frames))
    else:
        longest = max(len(data) for data, _, _ in frames)
        tensor.shape.extend((len(frames), longest))
        request.raw_input_contents.append(b"".join(data.ljust(longest, b"\0") for data, _, _ in frames))
        params[param.FRAME_LENGTHS].string_param = ",".join(str(len(data)) for data, _, _ in frames)
    return request


def set_sequence_start(request: pb.ModelInferRequest, start: bool) -> None:
    """Mark a sequence request built by :func:`build_request` as starting (or continuing) its sequence."""
    request.parameters[param.SEQUENCE_START].bool_param = start
