"""``ruthgen infer``: the frames of one camera to a model through the sidecar's InferStream.

Images (files, or folders of them in name order) or the frames of a video are one camera's
sequence: every frame carries the same ``camera_id`` (``--camera``, else one of the run's own), so a
temporal model sees them in order as one camera. They are sent at ``--fps``, at the video's own frame
rate (``--realtime``), or as fast as the model answers (at most :data:`WINDOW` frames in flight).
To a model whose input type is ``batch`` the frames go as batches of up to its ``max_batch_size``
(consecutive frames, one request each). With several models (``StreamOptions.models``) each frame
goes to all of them in one request (``InferenceRequest.models``), and its answer holds one answer
per model. Each answer is handed to ``on_answer`` as it arrives
(``ruthgen infer`` prints it as one JSON line); ``--annotate`` draws them on the images or into one
video.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from ruthstack.annotate import annotate, annotate_frame, output_paths
from ruthstack.media import OrderedVideo, SourceFrame, encode, is_video_path
from sidecar.client import (
    AIRuntimeClient,
    answer_dict,
    batch_frame,
    format_of,
    make_batch_request,
    make_models_request,
    make_request,
    pb,
)

#: Frames in flight at most when sending as fast as the model answers (the sidecar answers OVERLOADED
#: beyond its per-model window, 32 by default).
WINDOW = 8
#: The frame rate of an annotated video made from images sent without --fps.
DEFAULT_VIDEO_FPS = 10.0


def own_camera_id() -> str:
    """A camera id of this run's own (a temporal model starts a new sequence for it)."""
    return f"ruthgen-{uuid.uuid4().hex[:8]}"


@dataclass
class StreamOptions:
    """Where the frames go and how fast (``fps`` None: as fast as the model answers)."""

    target: str
    model_id: str
    version: str
    camera_id: str = field(default_factory=own_camera_id)
    fps: float | None = None
    timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    models: list[tuple[str, str]] | None = None  # several models: each frame to all, in one request


Answer = Callable[[SourceFrame, dict[str, Any]], None]


def stream_frames(options: StreamOptions, frames: Iterable[SourceFrame], on_answer: Answer) -> None:
    """Send ``frames`` in order on one InferStream and call ``on_answer(frame, answer)`` for each answer.

    Raises ``ConnectionError`` when the sidecar cannot be reached.
    """
    asyncio.run(_stream(options, frames, on_answer))


async def _stream(options: StreamOptions, frames: Iterable[SourceFrame], on_answer: Answer) -> None:
    async with AIRuntimeClient(options.target) as client:
        try:
            await client.wait_ready(options.connect_timeout_s)
        except (TimeoutError, asyncio.TimeoutError) as e:  # the same class from Python 3.11 on
            raise ConnectionError(f"cannot reach the sidecar at {options.target}") from e
        formats, batch = await _model_facts(client, options)
        window = asyncio.Semaphore(WINDOW)
        pending: dict[str, list[SourceFrame]] = {}
        loop = asyncio.get_running_loop()
        started_ms = time.time() * 1000

        async def requests() -> Any:
            start = loop.time()
            group: list[SourceFrame] = []
            for frame in frames:
                if options.fps:
                    await asyncio.sleep(max(0.0, start + frame.index / options.fps - loop.time()))
                group.append(frame)
                if len(group) >= batch:
                    await window.acquire()
                    request = _batch_or_frame(options, group, formats, started_ms)
                    pending[request.frame_id] = group
                    group = []
                    yield request
            if group:
                await window.acquire()
                request = _batch_or_frame(options, group, formats, started_ms)
                pending[request.frame_id] = group
                yield request

        async for response in client.stream(requests()):
            window.release()
            sent = pending.pop(response.frame_id)
            for frame, answer in _answers(sent, response):
                on_answer(frame, answer)


def _batch_or_frame(
    options: StreamOptions, frames: list[SourceFrame], formats: list[str], started_ms: float
) -> pb.InferenceRequest:
    """One frame's request, or, for a batch model, one request carrying ``frames`` as its batch."""
    if len(frames) == 1:
        return _request(options, frames[0], formats, started_ms)
    items = []
    for frame in frames:
        single = _request(options, frame, formats, started_ms)
        items.append(batch_frame(single.frame.data, single.frame.format, frame_id=frame.frame_id,
                                 width=single.frame.width, height=single.frame.height,
                                 timestamp_ms=single.timestamp_ms))
    return make_batch_request(
        options.model_id, options.version, items, frame_id=f"batch:{frames[0].frame_id}",
        camera_id=options.camera_id, timeout_ms=round(options.timeout_s * 1000),
    )  # fmt: skip


def _answers(frames: list[SourceFrame], response: pb.InferenceResponse) -> Iterator[tuple[SourceFrame, dict]]:
    """Each frame's answer: the response itself, or for a batch its answer for that frame."""
    if len(frames) == 1:
        yield frames[0], answer_dict(response)
        return
    whole = answer_dict(response)
    common = {k: v for k, v in whole.items() if k not in ("batch", "error", "frame_id")}
    if response.HasField("error"):  # the batch as a whole was refused
        for frame in frames:
            yield frame, {**common, "frame_id": frame.frame_id, "error": whole["error"]}
        return
    for frame, answer in zip(frames, response.batch, strict=True):
        yield frame, {**common, **answer_dict(answer), "batch_size": len(frames)}


async def _model_facts(client: AIRuntimeClient, options: StreamOptions) -> tuple[list[str], int]:
    """The model's frame formats, first the one video frames are encoded in (none known: jpeg), and
    the frames one request carries (a batch model's max_batch_size, else 1; several models: 1)."""
    if options.models:
        return ["jpeg"], 1
    try:
        status = await client.status(options.model_id, options.version, timeout_s=options.timeout_s)
    except grpc.RpcError:  # an unknown model: every frame's answer says so
        return ["jpeg"], 1
    for model in status.models:
        if model.model_id == options.model_id and model.version == options.version:
            formats = [pb.ImageFormat.Name(f).lower() for f in model.accepted_formats] or ["jpeg"]
            batch = max(1, model.max_batch_size) if model.input_type == "batch" else 1
            return formats, batch
    return ["jpeg"], 1


def _request(
    options: StreamOptions, frame: SourceFrame, formats: list[str], started_ms: float
) -> pb.InferenceRequest:
    timestamp_ms = 0 if frame.position_ms is None else round(started_ms + frame.position_ms)
    fields: dict[str, Any] = {
        "frame_id": frame.frame_id, "camera_id": options.camera_id, "timestamp_ms": timestamp_ms,
        "timeout_ms": round(options.timeout_s * 1000),
    }
    if frame.path is not None:  # an image file goes as it is
        data, fmt = frame.path.read_bytes(), format_of(frame.path)
    else:
        assert frame.rgb is not None
        fmt = formats[0]
        data = encode(frame.rgb, fmt)
        fields.update(width=frame.rgb.shape[1], height=frame.rgb.shape[0])
    if options.models:
        return make_models_request(options.models, data, fmt, **fields)
    return make_request(options.model_id, options.version, data, fmt, **fields)


class Annotations:
    """What ``--annotate OUT`` writes: one image per image, or, when OUT is a video file, one video
    of every frame in order (at ``fps``). ``add`` takes each answer as it arrives."""

    def __init__(self, out: Path, sources: list[Path] | None, fps: float) -> None:
        self.video = OrderedVideo(out, fps) if is_video_path(out) else None
        self.outputs = dict(zip(sources, output_paths(out, sources), strict=True)) if sources else {}
        self.boxes = 0
        self.notes: list[str] = []

    def add(self, frame: SourceFrame, answer: dict[str, Any]) -> None:
        if self.video is not None:
            drawn, boxes = annotate_frame(frame.image(), answer)
            self.video.add(frame.index, drawn)
            self.boxes += boxes
        elif frame.path is not None and "result" in answer:
            out = self.outputs[frame.path]
            boxes = annotate(frame.path, answer["result"], out)
            self.boxes += boxes
            self.notes.append(f"annotated {out} ({boxes} box{'es' if boxes != 1 else ''})")

    def close(self) -> Iterator[str]:
        """Finish the video; the lines to tell the user."""
        yield from self.notes
        if self.video is not None:
            frames = self.video.close()
            yield f"annotated {self.video.path} ({frames} frames, {self.boxes} boxes)"
