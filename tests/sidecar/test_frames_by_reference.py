"""Frames by reference without Triton: the frame pool's slots, what a call may register, reading a
referenced frame, the backend's ring, and the request path in front of a fake Triton."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from sidecar.errors import ErrorCode, InvalidInput, Overloaded
from sidecar.frame_ring import FrameRing
from sidecar.main import build_core
from sidecar.request.pipeline import FrameRequest
from sidecar.request.shared_frames import (
    CallRegions,
    FramePool,
    FrameReference,
    RegionPolicy,
    SharedMemoryError,
)
from sidecar.settings import SidecarSettings

POLICY = RegionPolicy(enabled=True, max_region_bytes=1 << 20, max_regions=2)


def policy(tmp_path, **overrides) -> RegionPolicy:
    fields = {"enabled": True, "max_region_bytes": 1 << 20, "max_regions": 2, "shm_dir": tmp_path}
    return RegionPolicy(**{**fields, **overrides})


def region(tmp_path, name: str, data: bytes) -> str:
    (tmp_path / name).write_bytes(data)
    return name


# ---- the pool ------------------------------------------------------------------------------------


def test_pool_carves_aligned_slots_and_merges_them_back(tmp_path):
    pool = FramePool(4096, shm_dir=tmp_path)
    try:
        a, b, c = pool.allocate(100), pool.allocate(64), pool.allocate(1000)
        assert (a.offset, b.offset, c.offset) == (0, 128, 192)
        assert len(a.view) == 100 and pool.in_use == 128 + 64 + 1024
        pool.release(b)
        assert pool.allocate(10).offset == 128  # first fit reuses the hole
        pool.release(a)
        pool.release(c)
        assert pool.free_bytes() == 4096 - 64  # the 10-byte slot still holds 64
    finally:
        asyncio.run(pool.close())
    assert not (tmp_path / pool.name).exists()


def test_pool_answers_overloaded_when_no_extent_is_large_enough(tmp_path):
    pool = FramePool(1024, shm_dir=tmp_path)
    try:
        pool.allocate(512)
        with pytest.raises(Overloaded, match="frame pool is full"):
            pool.allocate(600)
    finally:
        asyncio.run(pool.close())


async def test_pool_keeps_an_unanswered_slot_for_the_reuse_delay(tmp_path):
    pool = FramePool(1024, reuse_delay_s=0.05, shm_dir=tmp_path)
    try:
        slot = pool.allocate(1024)
        pool.release(slot, answered=False)
        with pytest.raises(Overloaded):
            pool.allocate(1)
        await asyncio.sleep(0.1)
        assert pool.allocate(1024).offset == 0
    finally:
        await pool.close()


def test_a_pool_larger_than_dev_shm_fails_at_start_with_the_reason():
    with pytest.raises(SharedMemoryError, match=r"does not fit in /dev/shm \(No space left on device\)"):
        FramePool(1 << 40)  # tmpfs refuses the whole reservation at once
    assert not [p for p in Path("/dev/shm").glob(f"ruth-sidecar-{os.getpid()}-*")]


async def test_pool_registers_once_and_drops_the_pools_of_sidecars_that_are_gone(tmp_path):
    class Registry:
        def __init__(self):
            self.regions = {"ruth-sidecar-1-dead": "/ruth-sidecar-1-dead", "other": "/other"}
            self.calls = []

        async def register_system_shared_memory(self, name, key, byte_size):
            self.calls.append(("register", name))
            self.regions[name] = key

        async def unregister_system_shared_memory(self, name):
            self.calls.append(("unregister", name))
            self.regions.pop(name)

        async def system_shared_memory_regions(self):
            return dict(self.regions)

    registry = Registry()
    pool = FramePool(1024, shm_dir=tmp_path)
    try:
        await asyncio.gather(pool.ensure_registered(registry), pool.ensure_registered(registry))
        assert registry.calls == [("unregister", "ruth-sidecar-1-dead"), ("register", pool.name)]
        assert registry.regions[pool.name] == pool.key and "other" in registry.regions
        pool.forget()
        await pool.ensure_registered(registry)
        assert registry.calls[-1] == ("register", pool.name)
    finally:
        await pool.close(registry)
    assert pool.name not in registry.regions


# ---- what a call may register ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "needle"),
    [
        (["ruth-frames-a", "ruth-frames-b", "ruth-frames-c"], "3 shared-memory regions on one call"),
        (["other-frames"], "must be 'ruth-frames-' followed by"),
        (["ruth-frames-../x"], "must be 'ruth-frames-' followed by"),
        (["ruth-frames-.."], "must be 'ruth-frames-' followed by"),
        (["ruth-frames-missing"], "does not exist on this host"),
        (["ruth-frames-big"], "holds 2097152 bytes; the limit is 1048576"),
        (["ruth-frames-dir"], "is not a shared-memory object"),
        (["ruth-frames-link"], "cannot be opened"),
    ],
)
def test_a_call_registers_only_allowed_regions(tmp_path, names, needle):
    region(tmp_path, "ruth-frames-big", bytes(2 << 20))
    (tmp_path / "ruth-frames-dir").mkdir()
    region(tmp_path, "ruth-frames-target", b"x")
    (tmp_path / "ruth-frames-link").symlink_to(tmp_path / "ruth-frames-target")
    with pytest.raises(InvalidInput, match=needle.replace("(", r"\(").replace(".", r"\.")):
        CallRegions.open(names, policy(tmp_path))


def test_nothing_is_registered_when_frames_by_reference_are_off(tmp_path):
    region(tmp_path, "ruth-frames-a", b"x")
    with pytest.raises(InvalidInput, match="frames by reference are off"):
        CallRegions.open(["ruth-frames-a"], policy(tmp_path, enabled=False))


def test_a_reference_reads_its_bytes_and_nothing_outside_its_region(tmp_path):
    region(tmp_path, "ruth-frames-a", bytes(range(256)))
    regions = CallRegions.open(["ruth-frames-a"], policy(tmp_path))
    try:
        assert regions.read(FrameReference("ruth-frames-a", 10, 5)) == bytes([10, 11, 12, 13, 14])
        with pytest.raises(InvalidInput, match="holds 6 bytes at offset 250; the reference needs 10"):
            regions.read(FrameReference("ruth-frames-a", 250, 10))
        with pytest.raises(InvalidInput, match="'ruth-frames-b' is not registered on this call"):
            regions.read(FrameReference("ruth-frames-b", 0, 1))
        os.truncate(tmp_path / "ruth-frames-a", 8)  # the owner shrinks it: a short read, never a fault
        with pytest.raises(InvalidInput, match="holds 0 bytes at offset 10"):
            regions.read(FrameReference("ruth-frames-a", 10, 5))
    finally:
        regions.close()


async def test_the_ring_writes_frames_that_the_sidecar_side_reads_back(tmp_path):
    with FrameRing(slots=2, slot_bytes=12, shm_dir=tmp_path) as ring:
        regions = CallRegions.open([ring.name], policy(tmp_path))
        first = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
        slot, reference = await ring.put(first)
        read = regions.read(FrameReference(reference.region, reference.offset, reference.size))
        assert read == first.tobytes()
        await ring.put(b"abc")
        waiting = asyncio.ensure_future(ring.put(b"def"))  # both slots taken: waits
        await asyncio.sleep(0.01)
        assert not waiting.done()
        ring.release(slot)
        third, reference = await waiting
        assert third == slot and regions.read(FrameReference(ring.name, reference.offset, 3)) == b"def"
        with pytest.raises(ValueError, match="does not fit a slot of 12"):
            await ring.put(bytes(13))
        regions.close()
    assert not (tmp_path / ring.name).exists()


# ---- the request path, in front of a fake Triton --------------------------------------------------


@pytest.fixture
async def shm_core(settings: SidecarSettings, fake_triton):
    shm = settings.model_copy(update={"shared_memory": True, "shared_memory_pool_bytes": 1 << 20})
    runtime = build_core(shm, fake_triton)
    await runtime.start()
    yield runtime
    await runtime.stop()


def raw_request(reference: FrameReference | None, width=16, height=8, **kw) -> FrameRequest:
    return FrameRequest("f1", "cam1", kw.pop("model_id", "rawcam"), "1.0.0", b"", kw.pop("fmt", "raw_rgb"),
                        width, height, reference=reference, **kw)


async def test_a_frame_by_reference_goes_to_triton_as_a_slot_of_the_pool(shm_core, fake_triton):
    pixels = np.random.default_rng(0).integers(0, 255, (8, 16, 3), dtype=np.uint8)
    with FrameRing(slots=1, slot_bytes=pixels.nbytes) as ring:
        _, ref = await ring.put(pixels)
        regions = await shm_core.open_regions([ring.name])
        try:
            outcome = await shm_core.infer(raw_request(FrameReference(ref.region, ref.offset, ref.size)),
                                           regions=regions)
        finally:
            regions.close()
    assert outcome.error is None
    pool = shm_core.pool
    assert fake_triton.shared_memory == {pool.name: pool.key}
    (sent,) = fake_triton.requests
    params = sent.inputs[0].parameters
    assert params["shared_memory_region"].string_param == pool.name
    assert params["shared_memory_byte_size"].int64_param == pixels.nbytes
    assert list(sent.inputs[0].shape) == [8, 16, 3] and not sent.raw_input_contents
    offset = params["shared_memory_offset"].int64_param
    with open(f"/dev/shm/{pool.name}", "rb") as f:  # what Triton reads: the frame's copy
        f.seek(offset)
        assert f.read(pixels.nbytes) == pixels.tobytes()
    assert pool.in_use == 0  # answered: the slot is free again


async def test_references_are_refused_with_a_reason(shm_core, settings, fake_triton, tmp_path):
    with FrameRing(slots=1, slot_bytes=16 * 8 * 3) as ring:
        await ring.put(bytes(16 * 8 * 3))
        regions = await shm_core.open_regions([ring.name])
        cases = [
            (raw_request(FrameReference(ring.name, 0, 16 * 8 * 3)), None, "not registered on this call"),
            (raw_request(FrameReference(ring.name, 0, 100)), regions, "raw frame holds 100 bytes but 16x8x3"),
            (raw_request(FrameReference(ring.name, 200, 384)), regions, "holds 184 bytes at offset 200"),
            (raw_request(FrameReference("ruth-frames-x", 0, 384)), regions, "'ruth-frames-x' is not regis"),
            (raw_request(FrameReference(ring.name, 0, 0)), regions, "frame.reference.size is 0 bytes"),
        ]
        try:
            for request, call_regions, needle in cases:
                outcome = await shm_core.infer(request, regions=call_regions)
                assert outcome.error.code is ErrorCode.INVALID_INPUT, needle
                assert needle in outcome.error.message
        finally:
            regions.close()
    assert shm_core.pool.in_use == 0 and not fake_triton.requests

    off = build_core(settings, fake_triton)
    await off.start()
    try:
        outcome = await off.infer(raw_request(FrameReference("ruth-frames-x", 0, 384)))
        assert "frames by reference are off" in outcome.error.message
    finally:
        await off.stop()


async def test_an_unanswered_reference_keeps_its_slot_until_the_reuse_delay(shm_core, fake_triton):
    fake_triton.behaviours["rawcam__1.0.0"] = lambda request: None  # never answers
    with FrameRing(slots=1, slot_bytes=384) as ring:
        _, ref = await ring.put(bytes(384))
        regions = await shm_core.open_regions([ring.name])
        try:
            outcome = await shm_core.infer(raw_request(FrameReference(ref.region, 0, 384), timeout_ms=50),
                                           regions=regions)
        finally:
            regions.close()
    assert outcome.error.code is ErrorCode.TIMEOUT
    assert shm_core.pool.in_use == 384  # Triton may still read it
