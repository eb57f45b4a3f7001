"""Frames by reference against the real tritonserver: raw 1080p frames through shared memory give the
results the same frames give by value; bad references are INVALID_INPUT; the sidecar and Triton
survive a backend that dies mid-stream with its region; off unless turned on."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from sidecar.client import AIRuntimeClient, batch_frame, make_request, pb, result_dict
from sidecar.frame_ring import FrameRing, RingStream
from sidecar.main import Sidecar
from sidecar.settings import load_settings
from tests.fixture_repos import fixture_repository

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
V = "1.0.0"
FULL_HD = (1080, 1920)


def pixels(seed: int, shape=FULL_HD) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (*shape, 3), dtype=np.uint8)


def jpeg(seed: int = 0, size=(96, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels(seed, (size[1], size[0]))).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    return fixture_repository(tmp_path_factory, ("shm_digest", "sc_echo", "sc_batch"))


@pytest.fixture(scope="module")
def triton(module_triton_factory, repository):
    return module_triton_factory(repository, load_models=[])


def settings(triton, repository, **overrides):
    return load_settings(grpc_port=0, http_port=0, triton_url=triton.grpc_url, model_repository=repository,
                         calibrate=False, request_timeout_ms=20_000, **overrides)


@pytest.fixture
async def sidecar(triton, repository):
    async with Sidecar(settings(triton, repository, shared_memory=True)) as running:
        yield running


@pytest.fixture
async def client(sidecar):
    async with AIRuntimeClient(f"127.0.0.1:{sidecar.port}") as runtime_client:
        yield runtime_client


async def test_full_hd_frames_by_reference_match_the_same_frames_by_value(client, sidecar):
    frames = [pixels(seed) for seed in range(4)]
    with FrameRing(slots=2, slot_bytes=frames[0].nbytes) as ring:
        async with RingStream(client, ring) as stream:
            answers = {}
            for index, frame in enumerate(frames):  # 4 frames through 2 slots: the ring waits for answers
                if stream.in_flight == ring.slots:
                    response = await stream.read()
                    answers[response.frame_id] = response
                await stream.send("shm_digest", V, frame, frame_id=f"f{index}", camera_id=f"cam-{index}")
            while stream.in_flight:
                response = await stream.read()
                answers[response.frame_id] = response
        unary = await client.infer_request(
            pb.InferenceRequest(model_id="shm_digest", version=V, frame_id="u",
                                frame=pb.Frame(format=pb.RAW_RGB, width=1920, height=1080,
                                               reference=(await ring.put(frames[0]))[1])),
            timeout_s=30, metadata=ring.metadata,
        )  # fmt: skip
    by_value = [
        await client.infer("shm_digest", V, frame.tobytes(), "raw_rgb", width=1920, height=1080, timeout_s=30)
        for frame in frames
    ]
    for index, frame in enumerate(frames):
        expected = {"width": 1920, "height": 1080, "sha256": hashlib.sha256(frame.tobytes()).hexdigest(),
                    "camera_id": f"cam-{index}"}
        assert not answers[f"f{index}"].HasField("error"), answers[f"f{index}"].error
        assert result_dict(answers[f"f{index}"]) == expected
        assert not by_value[index].HasField("error"), by_value[index].error
        assert result_dict(by_value[index]) == {**expected, "camera_id": ""}
    assert result_dict(unary)["sha256"] == hashlib.sha256(frames[0].tobytes()).hexdigest()
    assert sidecar.core.pool.in_use == 0


async def test_encoded_frames_and_batches_by_reference(client):
    images = [jpeg(seed) for seed in range(3)]
    with FrameRing(slots=3, slot_bytes=max(map(len, images))) as ring:
        references = [(await ring.put(data))[1] for data in images]
        single = await client.infer_request(
            pb.InferenceRequest(model_id="sc_echo", version=V, frame_id="one",
                                frame=pb.Frame(format=pb.JPEG, reference=references[0])),
            timeout_s=30, metadata=ring.metadata,
        )  # fmt: skip
        frames = [pb.BatchFrame(frame_id=f"b{i}", frame=pb.Frame(format=pb.JPEG, reference=ref))
                  for i, ref in enumerate(references)]
        batch = await client.infer_request(
            pb.InferenceRequest(model_id="sc_batch", version=V, batch=frames),
            timeout_s=30, metadata=ring.metadata,
        )
        by_value = await client.infer_batch(
            "sc_batch", V, [batch_frame(data, frame_id=f"b{i}") for i, data in enumerate(images)],
            timeout_s=30,
        )
    assert result_dict(single)["width"] == 96 and result_dict(single)["height"] == 64
    assert [a.frame_id for a in batch.batch] == ["b0", "b1", "b2"]
    assert [a.result for a in batch.batch] == [a.result for a in by_value.batch]
    assert not any(a.HasField("error") for a in batch.batch)


async def test_bad_references_are_invalid_input_and_the_stream_goes_on(client, triton):
    frame = pixels(7, (64, 64))
    with FrameRing(slots=4, slot_bytes=frame.nbytes) as ring:
        call = client.open_stream(metadata=ring.metadata)
        _, good = await ring.put(frame)

        def request(frame_id, region=ring.name, offset=good.offset, size=good.size):
            reference = pb.FrameReference(region=region, offset=offset, size=size)
            frame = pb.Frame(format=pb.RAW_RGB, width=64, height=64, reference=reference)
            return pb.InferenceRequest(model_id="shm_digest", version=V, frame_id=frame_id, frame=frame)

        await call.write(request("outside", offset=ring.slots * ring.slot_bytes - 10))
        await call.write(request("unregistered", region="ruth-frames-someone-else"))
        await call.write(request("good"))
        answers = {}
        for _ in range(3):
            response = await call.read()
            answers[response.frame_id] = response
        os.truncate(f"/dev/shm/{ring.name}", 100)  # the owner shrinks its region under the sidecar
        await call.write(request("shrunk"))
        answers["shrunk"] = await call.read()
        await call.done_writing()
    assert answers["outside"].error.code == pb.INVALID_INPUT
    assert "holds 10 bytes at offset" in answers["outside"].error.message
    assert answers["unregistered"].error.code == pb.INVALID_INPUT
    assert "'ruth-frames-someone-else' is not registered" in answers["unregistered"].error.message
    assert result_dict(answers["good"])["sha256"] == hashlib.sha256(frame.tobytes()).hexdigest()
    assert answers["shrunk"].error.code == pb.INVALID_INPUT
    assert "holds 100 bytes at offset 0; the reference needs 12288" in answers["shrunk"].error.message
    assert triton.is_ready()


@pytest.mark.parametrize(
    ("region", "needle"),
    [("ruth-frames-does-not-exist", "does not exist on this host"), ("pytriton-x", "must be 'ruth-frames-'")],
)
async def test_a_stream_registering_a_region_it_may_not_is_refused(client, region, needle):
    call = client.open_stream(metadata=(("ruth-frame-region", region),))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call.read()
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert needle in refused.value.details()
    assert ("ruth-error-code", "INVALID_INPUT") in tuple(refused.value.trailing_metadata())


async def test_frames_by_reference_are_off_unless_turned_on(triton, repository):
    async with Sidecar(settings(triton, repository)) as running, \
            AIRuntimeClient(f"127.0.0.1:{running.port}") as off_client:
        pool = running.core.pool  # decode_once's, reserved at its first decoded frame: none here
        assert pool is not None and not pool.reserved and not (Path("/dev/shm") / pool.name).exists()
        with FrameRing(slots=1, slot_bytes=16) as ring:
            call = off_client.open_stream(metadata=ring.metadata)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call.read()
        reference = pb.FrameReference(region="ruth-frames-x", size=192)
        reply = await off_client.infer_request(pb.InferenceRequest(
            model_id="shm_digest", version=V, frame_id="r",
            frame=pb.Frame(format=pb.RAW_RGB, width=8, height=8, reference=reference),
        ))
    assert "frames by reference are off on this runtime" in refused.value.details()
    assert reply.error.code == pb.INVALID_INPUT and "frames by reference are off" in reply.error.message


BACKEND = textwrap.dedent("""
    import asyncio, sys
    import numpy as np
    from sidecar.client import AIRuntimeClient
    from sidecar.frame_ring import FrameRing, RingStream

    async def main(address):
        ring = FrameRing(slots=4, slot_bytes=1920 * 1080 * 3)
        print(ring.name, flush=True)
        frame = np.zeros((1080, 1920, 3), np.uint8)
        async with AIRuntimeClient(address) as client, RingStream(client, ring) as stream:
            for index in range(10_000):
                if stream.in_flight == ring.slots:
                    await stream.read()
                    if index == 8:
                        print("answered", flush=True)
                await stream.send("shm_digest", "1.0.0", frame, frame_id=str(index), camera_id="cam")

    asyncio.run(main(sys.argv[1]))
""")


async def test_the_runtime_survives_a_backend_that_dies_mid_stream_with_its_region(client, sidecar, triton):
    backend = subprocess.Popen([sys.executable, "-c", BACKEND, f"127.0.0.1:{sidecar.port}"],
                               stdout=subprocess.PIPE, text=True, cwd=ROOT)
    name = await asyncio.to_thread(backend.stdout.readline)  # type: ignore[union-attr]
    try:
        assert (await asyncio.to_thread(backend.stdout.readline)).strip() == "answered"  # type: ignore[union-attr]
        backend.send_signal(signal.SIGKILL)  # frames in flight, its region left behind
        await asyncio.to_thread(backend.wait)
    finally:
        backend.kill()
        Path("/dev/shm", name.strip()).unlink(missing_ok=True)
    frame = pixels(3, (64, 64))
    with FrameRing(slots=1, slot_bytes=frame.nbytes) as ring:
        async with RingStream(client, ring) as stream:
            await stream.send("shm_digest", V, frame, frame_id="after")
            after = await stream.read()
    assert result_dict(after)["sha256"] == hashlib.sha256(frame.tobytes()).hexdigest()
    health = await client.health()
    assert health.status == pb.HEALTHY and triton.is_ready()
    by_value = await client.infer_request(make_request("sc_echo", V, jpeg(), "jpeg"), timeout_s=30)
    assert result_dict(by_value)["width"] == 96
