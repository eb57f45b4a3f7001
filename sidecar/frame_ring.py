"""Frames by reference, the backend's side: a ring of slots in shared memory, and a stream using it.

For a backend on the sidecar's host, when the runtime runs with ``RUTH_SHARED_MEMORY=true``: raw
frames are written once into a POSIX shared-memory object the backend owns, and the requests carry
where they lie instead of the bytes (docs/sidecar.md, "Frames in shared memory").

    ring = FrameRing(slots=8, slot_bytes=1920 * 1080 * 3)
    async with AIRuntimeClient("127.0.0.1:50051") as client, RingStream(client, ring) as stream:
        await stream.send("person_detection", "1.0.0", rgb, "raw_rgb", frame_id="f1", camera_id="cam-1")
        response = await stream.read()          # its slot is free again
    ring.close()

:meth:`FrameRing.put` waits while every slot is taken (backpressure): a slot is free again when
the answer of its frame has been read. A unary call can take a frame by reference too:
``client.infer_request(request, metadata=ring.metadata)``.
"""

from __future__ import annotations

import asyncio
import collections
import mmap
import os
import secrets
from pathlib import Path
from typing import Any

import grpc

from sidecar._proto import airuntime_pb2 as pb
from sidecar.client import FORMATS, AIRuntimeClient
from sidecar.errors import REGION_KEY

__all__ = ["FrameRing", "RingStream"]

SHM_DIR = Path("/dev/shm")
PREFIX = "ruth-frames-"


class FrameRing:
    """``slots`` slots of ``slot_bytes`` each in the shared-memory object ``name`` (created here,
    readable by this user only, removed by :meth:`close`)."""

    def __init__(self, slots: int, slot_bytes: int, name: str | None = None, shm_dir: Path = SHM_DIR) -> None:
        if slots < 1 or slot_bytes < 1:
            raise ValueError("a ring needs at least one slot of at least one byte")
        self.name = name or f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.slots = slots
        self.slot_bytes = slot_bytes
        self._path = shm_dir / self.name
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, slots * slot_bytes)
            self._map = mmap.mmap(fd, slots * slot_bytes)
        except OSError:
            self._path.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        self._free: collections.deque[int] = collections.deque(range(slots))
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata that registers this ring's region with the sidecar."""
        return ((REGION_KEY, self.name),)

    @property
    def free(self) -> int:
        return len(self._free)

    async def put(self, data: Any) -> tuple[int, pb.FrameReference]:
        """Copy ``data`` (bytes or a C-contiguous array) into a free slot, waiting for one; returns the
        slot (give it back with :meth:`release`) and the reference to send."""
        view = memoryview(data).cast("B")
        if view.nbytes > self.slot_bytes:
            raise ValueError(f"a frame of {view.nbytes} bytes does not fit a slot of {self.slot_bytes}")
        while not self._free:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        slot = self._free.popleft()
        offset = slot * self.slot_bytes
        self._map[offset:offset + view.nbytes] = view
        return slot, pb.FrameReference(region=self.name, offset=offset, size=view.nbytes)

    def release(self, slot: int) -> None:
        """The answer of the slot's frame has arrived: the slot may take another frame."""
        self._free.append(slot)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    def close(self) -> None:
        """Remove the region (a sidecar that still has it open reads it until its call ends)."""
        self._path.unlink(missing_ok=True)
        self._map.close()

    def __enter__(self) -> FrameRing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RingStream:
    """An InferStream whose frames travel through ``ring``: :meth:`send` writes a frame into a slot
    and the request referencing it; :meth:`read` returns the next answer and frees its frame's slot.
    Frames in flight need distinct ``frame_id`` values (the answer names the slot to free). Several
    tasks may send at once; one task reads."""

    def __init__(self, client: AIRuntimeClient, ring: FrameRing) -> None:
        self._client = client
        self.ring = ring
        self._call: grpc.aio.StreamStreamCall | None = None
        self._slots: dict[str, int] = {}
        self._writing = asyncio.Lock()  # tasks may send concurrently: one write at a time on the call

    async def __aenter__(self) -> RingStream:
        self._call = self._client.open_stream(metadata=self.ring.metadata)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._call is not None:
            self._call.cancel()
        for slot in self._slots.values():
            self.ring.release(slot)
        self._slots.clear()

    @property
    def in_flight(self) -> int:
        return len(self._slots)

    async def send(
        self,
        model_id: str,
        version: str,
        frame: Any,
        format: int | str = pb.RAW_RGB,
        *,
        frame_id: str,
        camera_id: str = "",
        width: int = 0,
        height: int = 0,
        timestamp_ms: int = 0,
        timeout_ms: int = 0,
    ) -> None:
        """Send one frame by reference (an H x W x 3 array gives its own width and height)."""
        if frame_id in self._slots:
            raise ValueError(f"frame {frame_id!r} is already in flight on this stream")
        shape = getattr(frame, "shape", None)
        if shape is not None and len(shape) == 3:
            height, width = height or int(shape[0]), width or int(shape[1])
        slot, reference = await self.ring.put(frame)
        self._slots[frame_id] = slot
        request = pb.InferenceRequest(
            frame_id=frame_id, camera_id=camera_id, model_id=model_id, version=version,
            timestamp_ms=timestamp_ms, timeout_ms=timeout_ms,
            frame=pb.Frame(format=FORMATS[format] if isinstance(format, str) else format,
                           width=width, height=height, reference=reference),
        )  # fmt: skip
        try:
            async with self._writing:
                await self._stream.write(request)
        except BaseException:
            self.ring.release(self._slots.pop(frame_id))
            raise

    async def read(self) -> pb.InferenceResponse:
        """The next answer (in completion order); raises EOFError when the stream has ended."""
        response = await self._stream.read()
        if response is grpc.aio.EOF:
            raise EOFError("the stream has ended")
        slot = self._slots.pop(response.frame_id, None)
        if slot is not None:
            self.ring.release(slot)
        return response

    async def done_writing(self) -> None:
        await self._stream.done_writing()

    @property
    def _stream(self) -> grpc.aio.StreamStreamCall:
        if self._call is None:
            raise RuntimeError("use RingStream in 'async with'")
        return self._call
