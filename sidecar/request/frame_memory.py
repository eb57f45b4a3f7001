"""The frames the request path keeps in the frame pool: frames by reference and frames decoded once.

A frame by reference (a region the call registered, :mod:`sidecar.request.shared_frames`) is copied
into a slot of the frame pool, which Triton reads; a batch's frames by reference are read into the
batch's tensor instead. A JPEG or PNG frame that one call sends to several models taking it encoded
is decoded once into a slot (:meth:`FrameMemory.decode_once`), which each model's request names with
the ``pixels`` parameter. A slot is released when the requests that read it are settled.
"""

from __future__ import annotations

import asyncio
import logging

from sidecar.errors import InvalidInput, Overloaded, SidecarError
from sidecar.request.images import SIZE_READERS, decode_rgb_into
from sidecar.request.messages import SharedInput
from sidecar.request.records import FrameRequest, Pending
from sidecar.request.routes import RouteTable
from sidecar.request.shared_frames import CallRegions, FramePool, FrameReference, SharedSlot, Slot
from sidecar.settings import SidecarSettings
from sidecar.triton_client import TritonAdapter

LOGGER = logging.getLogger(__name__)

class FrameMemory:
    def __init__(
        self, settings: SidecarSettings, adapter: TritonAdapter, routes: RouteTable, pool: FramePool | None
    ) -> None:
        self.settings = settings
        self.adapter = adapter
        self.routes = routes
        self.pool = pool
        self._max_frame_bytes = settings.max_frame_bytes
        #: why frames are not decoded once (None while they are): off, or the pool is unusable
        self.decode_off: str | None = (
            "decode_once is off" if not settings.decode_once else "no frame pool" if pool is None else None
        )
        #: frames decoded once, and the model requests that read them instead of decoding
        self.decoded = {"frames": 0, "reads": 0}

    def hold(self, pending: Pending, pixels: SharedSlot) -> None:
        """``pending`` reads the decoded frame ``pixels`` (let go of when it is settled)."""
        pixels.hold()
        pending.pixels = pixels
        self.decoded["reads"] += 1

    def copy_in(self, reference: FrameReference, regions: CallRegions | None) -> Slot:
        """The referenced frame, copied into a slot of the frame pool."""
        regions = self._regions_for(reference, regions)
        slot = self.pool.allocate(reference.size)  # type: ignore[union-attr]
        try:
            regions.read_into(reference, slot.view)
        except SidecarError:
            self.pool.release(slot)  # type: ignore[union-attr]
            raise
        return slot

    def read(self, reference: FrameReference, regions: CallRegions | None) -> bytes:
        """A batch's frame by reference: read into the batch's tensor (no pool slot)."""
        return self._regions_for(reference, regions).read(reference)

    def _regions_for(self, reference: FrameReference, regions: CallRegions | None) -> CallRegions:
        """The call's regions, when frames by reference are on and ``reference`` may be read."""
        if self.pool is None or not self.settings.shared_memory:
            raise InvalidInput("frames by reference are off on this runtime (RUTH_SHARED_MEMORY=true turns "
                               "them on, for backends on the same host)")
        if regions is None:
            raise InvalidInput(f"frame.reference.region {reference.region!r} is not registered on this call "
                               "(metadata ruth-frame-region)")
        if not 0 < reference.size <= self._max_frame_bytes:
            raise InvalidInput(f"frame.reference.size is {reference.size} bytes; frames hold 1 to "
                               f"{self._max_frame_bytes}")
        return regions

    async def register(self, request: FrameRequest) -> None:
        """Before a frame by reference: register the frame pool with Triton if Triton forgot it."""
        pool = self.pool
        if pool is not None and not pool.registered and request.reference is not None:
            await pool.ensure_registered(self.adapter)

    def release(self, pending: Pending, answered: bool) -> None:
        """Free the request's pool slot, if it has one, and let go of the decoded frame it read
        (``answered``: Triton answered it)."""
        slot = pending.slot
        if slot is not None:
            pending.slot = None
            self.pool.release(slot, answered)  # type: ignore[union-attr]
        pixels = pending.pixels
        if pixels is not None:
            pending.pixels = None
            pixels.let_go(answered)

    async def decode_once(self, request: FrameRequest, models: list[tuple[str, str]]) -> SharedSlot | None:
        """The request's frame decoded into a pool slot, when two or more of ``models`` take it
        encoded in its format; None when it goes encoded (one such model, a frame by reference, a
        frame that does not decode to its header's size, the pool full or unusable)."""
        fmt = request.format
        if self.decode_off is not None or request.reference is not None or fmt not in SIZE_READERS:
            return None
        routes = self.routes
        takers = sum(1 for key in models if (route := routes.get(*key)) is not None and route.format == fmt)
        if takers < 2 or not 0 < len(request.data) <= self._max_frame_bytes:
            return None
        try:
            width, height = SIZE_READERS[fmt](request.data)
        except InvalidInput:
            return None  # each model says why
        pool = self.pool
        assert pool is not None  # decode_off says so otherwise
        if not pool.registered and not await self._register_for_decoding(pool):
            return None
        try:
            slot = pool.allocate(width * height * 3)
        except Overloaded:
            return None
        work = asyncio.get_running_loop().run_in_executor(
            None, decode_rgb_into, request.data, slot.view, width, height
        )
        try:
            decoded = await asyncio.shield(work)
        except BaseException:
            work.add_done_callback(lambda _: pool.release(slot))  # the decoder writes on: free it after
            raise
        if not decoded:
            pool.release(slot)
            return None
        self.decoded["frames"] += 1
        return SharedSlot(pool, slot, width, height, SharedInput(pool.name, slot.offset, slot.size))

    async def _register_for_decoding(self, pool: FramePool) -> bool:
        """Register the pool for decoded frames; a Triton that is up and still refuses it cannot read
        this sidecar's /dev/shm: frames go encoded from then on (the reason in ``decode_off``)."""
        try:
            await pool.ensure_registered(self.adapter)
        except SidecarError as e:
            if await self.adapter.server_ready():
                self.decode_off = f"the inference server cannot read the frame pool: {e}"
                LOGGER.warning("frames sent to several models go encoded to each: %s (Triton must share "
                               "the sidecar's /dev/shm to read decoded frames)", self.decode_off)
                if not self.settings.shared_memory:
                    await pool.close(self.adapter)
            return False
        return True
