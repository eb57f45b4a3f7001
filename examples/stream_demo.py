"""Two cameras through one InferStream: a person who falls, a flame that grows, a crowd count.

Camera ``cam-hall`` sends a person standing, then falling and lying (to fall_detection 1.0.0);
camera ``cam-store`` sends a flame that flickers and grows (to fire_detection 2.1.0). Frames are
synthetic 640x480 JPEGs (examples/scenes.py) sent at ``--fps`` per camera, interleaved on one
stream; each round's frames of both cameras also go as one batch to crowd_count 1.0.0 (people per
camera and in all), unless ``--no-crowd``. Each reply is printed as it arrives.

With ``--several`` each frame of ``cam-hall`` goes in one request to fall_detection, person_detection
and helmet_detection (``InferenceRequest.models``): the frame crosses once, the person detector runs
once for the three, and the reply holds one answer per model.

With ``--shared-memory`` the frames travel by reference: each is written into a slot of a
shared-memory ring (:mod:`sidecar.frame_ring`) and the request names the slot; the runtime must run
on this host with frames by reference on (``RUTH_SHARED_MEMORY=true make up``).

Start the runtime first (``make up`` or ``ruthgen up``), then:

    .venv/bin/python examples/stream_demo.py [--target 127.0.0.1:50051] [--fps 5] [--no-crowd]
        [--shared-memory] [--several]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scenes

from sidecar.client import (
    AIRuntimeClient,
    batch_frame,
    make_batch_request,
    make_models_request,
    make_request,
    pb,
    result_dict,
)
from sidecar.frame_ring import FrameRing

CAMERAS = {
    "cam-hall": ("fall_detection", "1.0.0", lambda: scenes.fall_sequence("camera")),
    "cam-store": ("fire_detection", "2.1.0", lambda: scenes.flame_sequence(frames=18)),
}
CROWD = ("crowd_count", "1.0.0")
#: With --several, the models each cam-hall frame goes to, in one request.
SEVERAL = {
    "cam-hall": [("fall_detection", "1.0.0"), ("person_detection", "1.0.0"), ("helmet_detection", "0.1.0")],
}


def _jpeg(rgb: Any) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


class ByReference:
    """Frames written into ``ring``; the slots of a request are freed when its reply arrives."""

    def __init__(self, ring: FrameRing) -> None:
        self.ring = ring
        self.slots: dict[str, list[int]] = {}

    async def frame(self, request_id: str, data: bytes) -> pb.Frame:
        slot, reference = await self.ring.put(data)
        self.slots.setdefault(request_id, []).append(slot)
        return pb.Frame(format=pb.JPEG, reference=reference)

    def answered(self, response: pb.InferenceResponse) -> None:
        for slot in self.slots.pop(response.frame_id, ()):
            self.ring.release(slot)


async def _requests(
    fps: float, crowd: bool, shared: ByReference | None = None, several: bool = False
) -> AsyncIterator[pb.InferenceRequest]:
    """Both cameras' frames, interleaved, one round every 1/fps seconds; a crowd batch per round."""
    streams = {camera: iter(make()) for camera, (_, _, make) in CAMERAS.items()}
    index = 0
    while streams:
        batch = []
        for camera in list(streams):
            model_id, version, _ = CAMERAS[camera]
            item = next(streams[camera], None)
            if item is None:
                del streams[camera]
                continue
            rgb, timestamp_ms = item
            data, frame_id = _jpeg(rgb), f"{camera}-{index:03d}"
            if several and camera in SEVERAL:
                request = make_models_request(SEVERAL[camera], data, "jpeg", camera_id=camera,
                                              frame_id=frame_id, timestamp_ms=timestamp_ms + 1)
            else:
                request = make_request(model_id, version, data, "jpeg", camera_id=camera,
                                       frame_id=frame_id, timestamp_ms=timestamp_ms + 1)
            entry = batch_frame(data, frame_id=frame_id, camera_id=camera, timestamp_ms=timestamp_ms + 1)
            if shared is not None:
                request.frame.CopyFrom(await shared.frame(frame_id, data))
                if crowd:
                    entry.frame.CopyFrom(await shared.frame(f"crowd-{index:03d}", data))
            yield request
            batch.append(entry)
        if crowd and batch:
            yield make_batch_request(*CROWD, batch, frame_id=f"crowd-{index:03d}")
        index += 1
        await asyncio.sleep(1.0 / fps)


def describe(response: pb.InferenceResponse, elapsed_s: float) -> str:
    if response.answers:  # one request for several models: a line per model
        lines = []
        for answer in response.answers:
            one = pb.InferenceResponse(frame_id=response.frame_id, camera_id=response.camera_id,
                                       model_id=answer.model_id, version=answer.version)
            if answer.HasField("error"):
                one.error.CopyFrom(answer.error)
            else:
                one.result.CopyFrom(answer.result)
            lines.append(describe(one, elapsed_s))
        return "\n".join(lines)
    head = f"{elapsed_s:6.2f}s  {response.camera_id:<9} {response.frame_id:<14} {response.model_id:<15}"
    if response.HasField("error"):
        return f"{head} ERROR {pb.ErrorCode.Name(response.error.code)}: {response.error.message}"
    if response.batch:
        counts = [(a.camera_id, result_dict(a)) for a in response.batch if not a.HasField("error")]
        total = counts[0][1]["total"] if counts else 0
        people = ", ".join(f"{camera} {int(r['count'])}" for camera, r in counts)
        return f"{head} people: {people}; {int(total)} in all"
    result = result_dict(response)
    boxes = ", ".join(f"{b['label']}@({int(b['x'])},{int(b['y'])},{int(b['width'])}x{int(b['height'])})"
                      for b in result.get("bounding_boxes", []))
    if "confidence" not in result:
        return f"{head} {result['event_type']:<15} {boxes}"
    return f"{head} {result['event_type']:<15} conf {result['confidence']:.2f}  {boxes}"


async def run(
    target: str,
    fps: float = 5.0,
    emit: Callable[[str], None] = print,
    crowd: bool = True,
    shared_memory: bool = False,
    several: bool = False,
) -> list[pb.InferenceResponse]:
    """Stream both cameras to the sidecar at ``target``; returns the replies in arrival order."""
    replies = []
    ring = FrameRing(slots=32, slot_bytes=512 * 1024) if shared_memory else None
    shared = ByReference(ring) if ring is not None else None
    try:
        async with AIRuntimeClient(target) as client:
            try:
                await client.wait_ready(timeout_s=10)
            except (TimeoutError, asyncio.TimeoutError) as exc:  # the same class from Python 3.11 on
                message = f"no AIRuntime sidecar answers at {target}: start it with `make up`"
                raise SystemExit(message) from exc
            start = time.monotonic()
            metadata = ring.metadata if ring is not None else None
            async for response in client.stream(_requests(fps, crowd, shared, several), metadata):
                if shared is not None:
                    shared.answered(response)
                replies.append(response)
                emit(describe(response, time.monotonic() - start))
    finally:
        if ring is not None:
            ring.close()
    return replies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="127.0.0.1:50051", help="the sidecar's gRPC address")
    parser.add_argument("--fps", type=float, default=5.0, help="frames per second per camera")
    parser.add_argument("--no-crowd", action="store_true", help="no crowd_count batches")
    parser.add_argument("--several", action="store_true",
                        help="cam-hall's frames to fall, person and helmet detection in one request each")
    parser.add_argument("--shared-memory", action="store_true",
                        help="send the frames by reference through a shared-memory ring (same host)")
    args = parser.parse_args(argv)
    replies = asyncio.run(
        run(args.target, args.fps, crowd=not args.no_crowd, shared_memory=args.shared_memory,
            several=args.several)
    )
    answers = [a for r in replies for a in r.answers if a.HasField("result")]
    events = [result_dict(r)["event_type"] for r in replies
              if r.HasField("result") and not r.batch] + [result_dict(a)["event_type"] for a in answers]
    print(f"{len(replies)} replies: {events.count('fall_detected')} with fall_detected, "
          f"{events.count('fire_detected')} with fire_detected")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
