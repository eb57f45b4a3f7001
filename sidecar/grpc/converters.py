"""Conversions between ``ruth.airuntime.v1`` messages and the core's types (the only door to _proto).

``result`` is a ``google.protobuf.Struct`` built with ``Struct.update(json.loads(...))``: measured
against ``json_format.Parse`` (about 2x slower) and against encoding the Struct's wire format by
hand and parsing it in C (the same within 10%, so not worth its code); see
``benchmarks/bench_sidecar.py --micro``.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import struct_pb2

from sidecar._proto import airuntime_pb2 as pb
from sidecar.core import HealthReport, ModelView
from sidecar.errors import InternalError, SidecarError
from sidecar.request.pipeline import BatchItem, FrameRequest, Outcome
from sidecar.request.shared_frames import FrameReference

#: The contract's format names by the enum's values (0, unspecified: ""); the names are the
#: lower-case enum names (ruth_protocol.INPUT_FORMATS, a test checks both lists agree).
FORMAT_NAMES: tuple[str, ...] = tuple(
    "" if value == 0 else name.lower() for name, value in sorted(pb.ImageFormat.items(), key=lambda i: i[1])
)
FORMAT_VALUES: dict[str, int] = {name: value for value, name in enumerate(FORMAT_NAMES) if name}
_ERROR_CODES: dict[str, int] = dict(pb.ErrorCode.items())
_STATES: dict[str, int] = dict(pb.ModelState.items())
_HEALTH: dict[str, int] = dict(pb.HealthStatus.items())
_NUMBER_OF = len(FORMAT_NAMES)


def _format(value: int) -> str:
    return FORMAT_NAMES[value] if 0 <= value < _NUMBER_OF else f"format {value}"


def frame_request(message: pb.InferenceRequest) -> FrameRequest:
    frame = message.frame
    request = FrameRequest(
        message.frame_id,
        message.camera_id,
        message.model_id,
        message.version,
        frame.data,
        _format(frame.format),
        frame.width,
        frame.height,
        message.timestamp_ms,
        message.timeout_ms,
        [
            BatchItem(item.frame_id, item.camera_id, item.frame.data, _format(item.frame.format),
                      item.frame.width, item.frame.height, item.timestamp_ms, _reference(item.frame))
            for item in message.batch
        ] if message.batch else None,
        _reference(frame),
        message.sequence_start,
    )
    if message.models:
        request.models = [(m.model_id, m.version) for m in message.models]
    return request


def _reference(frame: pb.Frame) -> FrameReference | None:
    if not frame.HasField("reference"):
        return None
    reference = frame.reference
    return FrameReference(reference.region, reference.offset, reference.size)


def response(outcome: Outcome) -> pb.InferenceResponse:
    request = outcome.request
    message = pb.InferenceResponse(
        frame_id=request.frame_id,
        camera_id=request.camera_id,
        model_id=request.model_id,
        version=request.version,
        inference_ms=outcome.inference_ms,
        wait_ms=outcome.wait_ms,
        timestamp_ms=request.timestamp_ms,
    )
    if outcome.frames is not None:
        for frame in outcome.frames:
            item = frame.item
            answer = message.batch.add(frame_id=item.frame_id, camera_id=item.camera_id or request.camera_id)
            _set_outcome(answer, frame.result, frame.error)
        return message
    if outcome.answers is not None:
        for one in outcome.answers:
            answer = message.answers.add(
                model_id=one.request.model_id, version=one.request.version, inference_ms=one.inference_ms,
                wait_ms=one.wait_ms,
            )
            _set_outcome(answer, one.result, one.error)
        return message
    _set_outcome(message, outcome.result, outcome.error)
    return message


def _set_outcome(message: Any, result: bytes | None, error: SidecarError | None) -> None:
    """``result`` (a JSON object) or ``error`` into a message with the ``outcome`` oneof."""
    if error is None:
        try:
            document = json.loads(result)  # type: ignore[arg-type]
            if type(document) is dict:
                message.result.update(document)
                return
        except (ValueError, TypeError):
            pass
        error = InternalError("the model's result is not a JSON object")
    message.error.code = _ERROR_CODES[error.code.value]
    message.error.message = error.message


def to_struct(document: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(document)
    return message


def health_response(report: HealthReport) -> pb.HealthCheckResponse:
    return pb.HealthCheckResponse(
        status=_HEALTH[report.status.value],
        models=[
            pb.ModelHealth(
                model_id=m.record.model_id,
                version=m.record.version,
                state=_STATES[m.record.state.value],
                health=_HEALTH[m.health.value],
            )
            for m in report.models
        ],
        inference_server_ready=report.server_ready,
        models_ready=report.models_ready,
        models_total=len(report.models),
        runtime_id=report.runtime_id,
        draining=report.draining,
    )


def model_status(view: ModelView) -> pb.ModelStatus:
    record, snapshot = view.record, view.snapshot
    message = pb.ModelStatus(
        model_id=record.model_id,
        version=record.version,
        state=_STATES[record.state.value],
        health=_HEALTH[view.health.value],
        input_type=record.input_type or "",
        last_error=record.last_error or "",
    )
    if snapshot is not None:
        message.performance.CopyFrom(
            pb.ModelPerformance(
                requests=snapshot.requests,
                successes=snapshot.successes,
                errors=snapshot.errors,
                timeouts=snapshot.timeouts,
                error_rate=snapshot.error_rate,
                avg_inference_ms=snapshot.avg_ms or 0.0,
                last_inference_ms=snapshot.last_ms or 0.0,
                last_request_unix_ms=int((snapshot.last_request_at or 0.0) * 1000),
                consecutive_timeouts=snapshot.consecutive_timeouts,
                avg_wait_ms=snapshot.avg_wait_ms or 0.0,
            )
        )
    if record.contract is not None:
        message.accepted_formats.append(FORMAT_VALUES[record.contract.input.format])
        message.max_batch_size = record.frames_per_request
    if record.output_schema:
        message.output_schema.CopyFrom(to_struct(record.output_schema))
    for upstream in view.upstreams:
        message.upstreams.add(**upstream)
    if view.waiting:
        message.waiting_for = view.waiting
    if record.isolation is not None:
        message.isolation = record.isolation.level
        message.landlock_abi = record.isolation.landlock_abi
        message.isolation_detail = record.isolation.detail
    return message


def status_response(views: list[ModelView]) -> pb.ModelStatusResponse:
    return pb.ModelStatusResponse(models=[model_status(v) for v in views])
