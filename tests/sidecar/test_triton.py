"""The Triton adapter's pure parts: error translation, request building, RESULT parsing."""

from __future__ import annotations

import json
import struct

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb

from sidecar.errors import (
    ErrorCode,
    ModelNotLoaded,
    ModelNotReady,
    ModelProcessDied,
    PluginError,
    RequestTimeout,
    SequenceNotStarted,
)
from sidecar.request.messages import build_batch_request, build_request, sequence_number, set_sequence_start
from sidecar.request.routes import Route
from sidecar.triton_client import element_error, elements, error_from_triton, first_element, result_of


@pytest.mark.parametrize(
    ("message", "status", "kind", "code", "text"),
    [
        ("[RUTH:INFERENCE_ERROR] infer: boom", None, PluginError, ErrorCode.INFERENCE_ERROR, "infer: boom"),
        (
            "[RUTH:OUTPUT_SCHEMA_VIOLATION] validate: x",
            None,
            PluginError,
            ErrorCode.OUTPUT_SCHEMA_VIOLATION,
            None,
        ),
        (
            "[RUTH:TIMEOUT] infer: exceeded 400 ms",
            None,
            RequestTimeout,
            ErrorCode.TIMEOUT,
            "infer: exceeded 400 ms",
        ),
        ("Deadline Exceeded", grpc.StatusCode.DEADLINE_EXCEEDED, RequestTimeout, ErrorCode.TIMEOUT, None),
        (
            "[RUTH:RESOURCE_EXHAUSTED] infer: OutOfMemoryError: CUDA out of memory",
            None,
            PluginError,
            ErrorCode.RESOURCE_EXHAUSTED,
            "infer: OutOfMemoryError",
        ),
        ("[RUTH:GPU_ERROR] infer: CUDA error: x", None, PluginError, ErrorCode.GPU_ERROR, "CUDA error"),
        (
            "Stub process 'm__1.0.0_0_0' is not healthy.",
            None,
            ModelProcessDied,
            ErrorCode.INTERNAL,
            "m__1.0.0_0_0",
        ),
        (
            "request for sequence cam1 to model 'm' must specify the START flag on the first request",
            None,
            SequenceNotStarted,
            ErrorCode.INTERNAL,
            None,
        ),
        ("Request for unknown model: 'm' is not found", None, ModelNotLoaded, ErrorCode.MODEL_NOT_READY, ""),
        ("failed to connect", grpc.StatusCode.UNAVAILABLE, ModelNotReady, ErrorCode.MODEL_NOT_READY, None),
        (
            "[request id: 7] Server is stopping, scheduler for model has stopped accepting new inference "
            "requests",
            None,
            ModelNotReady,
            ErrorCode.MODEL_NOT_READY,
            "the inference server is stopping",
        ),
        ("something else", None, Exception, ErrorCode.INTERNAL, "something else"),
    ],
)
def test_error_from_triton_maps_messages_to_codes(message, status, kind, code, text):
    error = error_from_triton(message, status)
    assert isinstance(error, kind)
    assert error.code is code
    if text:
        assert text in error.message


def record(**kw) -> Route:
    return Route("m", "1.0.0", "READY", triton_name="m__1.0.0", **kw)


@pytest.mark.parametrize(
    ("kw", "shape"),
    [
        ({"format": "jpeg", "batched": False}, [5]),
        ({"format": "jpeg", "batched": True}, [1, 5]),
        ({"format": "raw_rgb", "batched": False}, [3, 2, 3]),
        ({"format": "raw_bgr", "batched": True}, [1, 3, 2, 3]),
    ],
)
def test_build_request_shapes_frame_for_the_entry(kw, shape):
    request = build_request(record(**kw), "7", b"12345", 2, 3, "f", "c", 99)
    assert request.model_name == "m__1.0.0" and request.id == "7"
    assert request.inputs[0].name == "FRAME" and request.inputs[0].datatype == "UINT8"
    assert list(request.inputs[0].shape) == shape
    assert request.raw_input_contents[0] == b"12345"
    assert {k: v.string_param for k, v in request.parameters.items()} == {
        "frame_id": "f",
        "camera_id": "c",
        "timestamp_ms": "99",
    }


def test_build_request_sends_camera_as_sequence_id_when_temporal():
    request = build_request(
        record(format="jpeg", batched=True, sequence=True), "1", b"x", 0, 0, "", "cam9", 0, True
    )
    assert request.parameters["sequence_id"].int64_param == sequence_number("cam9") > 0
    assert request.parameters["camera_id"].string_param == "cam9"
    assert request.parameters["sequence_start"].bool_param is True
    assert "frame_id" not in request.parameters
    set_sequence_start(request, False)
    assert request.parameters["sequence_start"].bool_param is False


def serialised(*items: bytes) -> bytes:
    return b"".join(len(item).to_bytes(4, "little") + item for item in items)


def test_result_of_hands_over_the_serialised_tensor_and_its_elements_are_read_apart():
    response = pb.ModelInferResponse(raw_output_contents=[serialised(b'{"a":1}')])
    result, model_ms = result_of(response)
    assert first_element(result) == b'{"a":1}'
    assert model_ms is None  # an entry built without MODEL_MS
    with pytest.raises(Exception, match="truncated"):
        first_element((9).to_bytes(4, "little") + b"{}")
    with pytest.raises(Exception, match="without a RESULT"):
        result_of(pb.ModelInferResponse())


def test_elements_read_a_batch_answer_and_its_per_frame_errors():
    raw = serialised(b'{"n":1}', b"[RUTH:PREPROCESS_ERROR] preprocess: ValueError: bad", b'{"n":3}')
    found = elements(raw, 3)
    assert found[0] == b'{"n":1}' and found[2] == b'{"n":3}'
    errors = [element_error(e) for e in found]
    assert errors[0] is None and errors[2] is None
    assert errors[1].code is ErrorCode.PREPROCESS_ERROR and errors[1].message == "preprocess: ValueError: bad"
    with pytest.raises(Exception, match="fewer than the batch's 4 answers"):
        elements(raw, 4)


def test_build_batch_request_stacks_raw_frames_and_pads_encoded_ones():
    raw_route = Route("m", "1.0.0", "READY", triton_name="m__1.0.0", format="raw_rgb", batched=True)
    frames = [(bytes([i]) * 12, 2, 2) for i in range(3)]
    ids = [{"frame_id": str(i)} for i in range(3)]
    request = build_batch_request(raw_route, "9", frames, ids)
    assert list(request.inputs[0].shape) == [3, 2, 2, 3]
    assert request.raw_input_contents[0] == b"".join(f for f, _, _ in frames)
    assert json.loads(request.parameters["batch"].string_param) == ids
    assert "frame_lengths" not in request.parameters
    jpeg_route = Route("m", "1.0.0", "READY", triton_name="m__1.0.0", format="jpeg", batched=True)
    request = build_batch_request(jpeg_route, "10", [(b"abc", 1, 1), (b"defgh", 1, 1)], ids[:2])
    assert list(request.inputs[0].shape) == [2, 5]
    assert request.raw_input_contents[0] == b"abc\0\0defgh"
    assert request.parameters["frame_lengths"].string_param == "3,5"


def test_cameras_get_distinct_stable_sequence_numbers_whatever_their_length():
    prefix = "site-7/building-C/floor-3/camera-"
    long_a, long_b = prefix + "a" * 40, prefix + "b" * 40
    numbers = {sequence_number(c) for c in ("cam1", "cam2", long_a, long_b)}
    assert len(numbers) == 4 and all(0 < n < 2**63 for n in numbers)
    assert sequence_number(long_a) == sequence_number(long_a)


def test_result_of_reads_the_models_own_time_from_model_ms():
    response = pb.ModelInferResponse()
    response.outputs.add(name="RESULT", datatype="BYTES", shape=[2, 1])
    response.outputs.add(name="MODEL_MS", datatype="FP64", shape=[2, 1])
    response.raw_output_contents.extend([serialised(b'{"a":1}', b'{"a":2}'), struct.pack("<2d", 12.5, 12.5)])
    result, model_ms = result_of(response)
    assert elements(result, 2) == [b'{"a":1}', b'{"a":2}']
    assert model_ms == 12.5
