"""Batches through the sidecar against the real embedded tritonserver: the backend's batch reaches
the plugin's infer() as one list (the ``sc_batch`` fixture reports the batch it saw)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sidecar.client import AIRuntimeClient, batch_frame, make_batch_request, pb, result_dict
from sidecar.main import Sidecar
from sidecar.settings import load_settings
from tests.fixture_repos import fixture_repository

pytestmark = pytest.mark.integration

V = "1.0.0"


def jpeg(width: int, height: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    return fixture_repository(tmp_path_factory, ("sc_batch", "sc_echo"))


@pytest.fixture(scope="module")
def triton(module_triton_factory, repository):
    return module_triton_factory(repository, load_models=[])


@pytest.fixture
async def client(triton, repository):
    settings = load_settings(grpc_port=0, http_port=0, triton_url=triton.grpc_url,
                             model_repository=repository, calibrate=False)
    async with Sidecar(settings) as running, AIRuntimeClient(f"127.0.0.1:{running.port}") as runtime_client:
        yield runtime_client


def frames(count: int, **overrides: bytes) -> list[pb.BatchFrame]:
    return [
        batch_frame(overrides.get(f"f{i}", jpeg(40 + i)), frame_id=f"f{i}", camera_id=f"cam{i % 3}")
        for i in range(count)
    ]


async def test_a_batch_reaches_infer_as_one_list_and_comes_back_in_order(client):
    response = await client.infer_batch("sc_batch", V, frames(5), camera_id="gate")
    assert not response.HasField("error"), response.error
    answers = [result_dict(a) for a in response.batch]
    assert [a["frame_id"] for a in answers] == ["f0", "f1", "f2", "f3", "f4"]
    assert [a["width"] for a in answers] == [40, 41, 42, 43, 44]
    assert {a["batch_size"] for a in answers} == {5}  # one infer() call saw the whole batch
    assert answers[0]["batch_frames"] == ["f0", "f1", "f2", "f3", "f4"]
    assert [a["camera_id"] for a in answers] == ["cam0", "cam1", "cam2", "cam0", "cam1"]
    assert [a.frame_id for a in response.batch] == ["f0", "f1", "f2", "f3", "f4"]


async def test_a_bad_frame_inside_a_batch_fails_alone(client):
    batch = frames(5, f1=b"\xff\xd8 not a jpeg")
    batch[3].frame_id = "fail-pre"
    response = await client.infer_batch("sc_batch", V, batch)
    codes = [pb.ErrorCode.Name(a.error.code) if a.HasField("error") else "OK" for a in response.batch]
    assert codes == ["OK", "INVALID_INPUT", "OK", "PREPROCESS_ERROR", "OK"]
    assert "preprocess refused this frame" in response.batch[3].error.message
    good = [result_dict(response.batch[i]) for i in (0, 2, 4)]
    assert {g["batch_size"] for g in good} == {3}  # infer() saw the three that passed


async def test_a_failing_infer_fails_every_frame_of_the_batch(client):
    batch = frames(3)
    batch[2].frame_id = "fail-infer"
    response = await client.infer_batch("sc_batch", V, batch)
    assert [pb.ErrorCode.Name(a.error.code) for a in response.batch] == ["INFERENCE_ERROR"] * 3
    assert all("inference failed on purpose" in a.error.message for a in response.batch)


@pytest.mark.parametrize(
    ("model_id", "count", "needle"),
    [
        ("sc_batch", 9, "a batch of 9 frames; sc_batch 1.0.0 takes 1 to 8"),
        ("sc_echo", 2, "sc_echo 1.0.0 takes one frame per request (its input type is frame)"),
    ],
)
async def test_a_batch_too_large_or_for_a_frame_model_is_refused_whole(client, model_id, count, needle):
    response = await client.infer_batch(model_id, V, frames(count))
    assert pb.ErrorCode.Name(response.error.code) == "INVALID_INPUT" and needle in response.error.message
    assert not response.batch


async def test_16_concurrent_batches_each_get_their_own_answers(client):
    async def one(n: int) -> pb.InferenceResponse:
        batch = [batch_frame(jpeg(40), frame_id=f"r{n}-{i}") for i in range(4)]
        return await client.infer_batch("sc_batch", V, batch)

    responses = await asyncio.gather(*(one(n) for n in range(16)))
    sizes = set()
    for n, response in enumerate(responses):
        assert [a.frame_id for a in response.batch] == [f"r{n}-{i}" for i in range(4)]
        answers = [result_dict(a) for a in response.batch]
        assert [a["frame_id"] for a in answers] == [f"r{n}-{i}" for i in range(4)]
        sizes.update(a["batch_size"] for a in answers)
    assert sizes <= {4, 8}  # Triton may merge two requests' batches up to the model's 8


async def test_infer_stream_takes_batches_and_single_frames_alike(client):
    async def requests():
        for n in range(6):
            if n % 2:
                yield make_batch_request("sc_batch", V, frames(3), frame_id=f"batch-{n}")
            else:
                yield make_batch_request("sc_batch", V, frames(1), frame_id=f"single-{n}")

    responses = {r.frame_id: r async for r in client.stream(requests())}
    assert sorted(responses) == ["batch-1", "batch-3", "batch-5", "single-0", "single-2", "single-4"]
    assert all(len(r.batch) == (3 if name.startswith("batch") else 1) for name, r in responses.items())
    assert all(not a.HasField("error") for r in responses.values() for a in r.batch)


async def test_one_frame_to_a_batch_model_is_a_batch_of_one(client):
    response = await client.infer("sc_batch", V, jpeg(50), frame_id="alone")
    assert result_dict(response)["batch_size"] == 1 and result_dict(response)["width"] == 50


async def test_model_status_says_the_input_type_and_the_largest_batch(client):
    status = await client.status()
    models = {m.model_id: m for m in status.models}
    assert (models["sc_batch"].input_type, models["sc_batch"].max_batch_size) == ("batch", 8)
    assert (models["sc_echo"].input_type, models["sc_echo"].max_batch_size) == ("frame", 1)
