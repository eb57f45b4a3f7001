"""The reference plugins end to end: the generator builds them (each in its own environment),
the embedded tritonserver serves them side by side, and the sidecar answers the same detection
checks as tests/plugins, with JPEG frames over gRPC (Infer) and camera streams (InferStream)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import pytest_asyncio

from ruthgen.writer import build_repository
from sidecar.client import AIRuntimeClient, batch_frame, make_request, pb, result_dict
from sidecar.main import Sidecar
from sidecar.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))
import scenes  # noqa: E402

# one sidecar for the module: its fixture and the tests share the module's event loop
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800), pytest.mark.asyncio(loop_scope="module")]

MODELS = {
    "person_detection": "1.0.0",
    "crowd_count": "1.0.0",
    "fall_detection": "1.0.0",
    "fire_detection": "2.1.0",
    "helmet_detection": "0.1.0",
}


def jpeg(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


def photo(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[:, :, :3].astype(np.uint8))


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    models = tmp_path_factory.mktemp("models")
    for model_id, version in MODELS.items():
        shutil.copytree(ROOT / "ai" / "models" / model_id / version, models / model_id / version)
    repo = tmp_path_factory.mktemp("repo") / "model_repository"
    result = build_repository(models, repo)
    assert all(report.valid for report in result.reports), [r.to_dict() for r in result.reports]
    return repo


@pytest.fixture(scope="module")
def triton(module_triton_factory, repository):
    return module_triton_factory(repository, load_models=[])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sidecar(triton, repository):
    settings = load_settings(grpc_port=0, http_port=0, triton_url=triton.grpc_url,
                             model_repository=repository, refresh_interval_s=0.5, request_timeout_ms=60_000,
                             shared_memory=True, calibrate=False)  # no calibration frames among the tests
    async with Sidecar(settings) as running:
        yield running


@pytest.fixture
def sidecar_port(sidecar) -> int:
    return sidecar.port


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(sidecar):
    async with AIRuntimeClient(f"127.0.0.1:{sidecar.port}") as runtime_client:
        yield runtime_client


async def infer(client, model_id, rgb, **fields):
    response = await client.infer(model_id, MODELS[model_id], jpeg(rgb), "jpeg", timeout_s=120, **fields)
    assert not response.HasField("error"), response.error
    return result_dict(response)


async def stream(client, model_id, frames, camera_id):
    """One camera's frames through InferStream, one at a time (the next after the reply)."""
    call = client.open_stream()
    results = []
    for index, (rgb, timestamp_ms) in enumerate(frames):
        await call.write(make_request(model_id, MODELS[model_id], jpeg(rgb), "jpeg", camera_id=camera_id,
                                      frame_id=f"{camera_id}-{index}", timestamp_ms=timestamp_ms or 1))
        response = await call.read()
        assert not response.HasField("error"), response.error
        assert response.frame_id == f"{camera_id}-{index}"
        results.append(result_dict(response))
    await call.done_writing()
    return results


async def test_reference_models_all_load_side_by_side_in_their_own_environments(client, repository):
    status = {m.model_id: m for m in (await client.status()).models}
    for model_id in MODELS:
        assert status[model_id].state == pb.READY, status[model_id]
    envs = {(repository / f"{m}__{v}" / "env").resolve() for m, v in MODELS.items()}
    assert len(envs) >= 2  # mediapipe's lock and numpy/opencv-only plugins do not share one env


@pytest.mark.parametrize("name", ["astronaut", "camera"])
async def test_reference_models_person_detection_finds_the_person_in_a_photo_of_one(client, name):
    result = await infer(client, "person_detection", photo(name))
    assert result["event_type"] == "person_detected" and result["count"] == 1


@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket"])
async def test_reference_models_person_detection_finds_nobody_in_photos_without_people(client, name):
    result = await infer(client, "person_detection", photo(name))
    assert result["event_type"] == "no_person" and result["count"] == 0


async def test_reference_models_crowd_count_counts_a_batch_of_cameras_in_one_pass(client):
    names = ["astronaut", "coffee", "camera", "rocket"]
    frames = [batch_frame(jpeg(photo(n)), frame_id=n, camera_id=f"cam{i}") for i, n in enumerate(names)]
    response = await client.infer_batch("crowd_count", "1.0.0", frames, timeout_s=60)
    assert not response.HasField("error"), response.error
    answers = [result_dict(a) for a in response.batch]
    assert [a["count"] for a in answers] == [1, 0, 1, 0]
    assert {a["total"] for a in answers} == {2} and {a["batch_size"] for a in answers} == {4}
    assert [a.camera_id for a in response.batch] == ["cam0", "cam1", "cam2", "cam3"]


async def test_reference_models_fall_detection_raises_a_fall_only_for_the_falling_camera(client):
    falling = await stream(client, "fall_detection", scenes.fall_sequence("camera"), "e2e-fall")
    upright = await stream(client, "fall_detection", scenes.upright_sequence("camera"), "e2e-upright")
    assert falling[-1]["event_type"] == "fall_detected"
    assert all(r["event_type"] != "fall_detected" for r in upright)


async def test_reference_models_fire_detection_raises_fire_for_a_growing_flame_only(client):
    flame = await stream(client, "fire_detection", scenes.flame_sequence(), "e2e-flame")
    orange = await stream(client, "fire_detection", scenes.static_orange_sequence(), "e2e-orange")
    assert flame[-1]["event_type"] == "fire_detected"
    assert all(r["event_type"] == "no_fire" for r in orange)


async def test_reference_models_helmet_detection_tells_a_hard_hat_from_a_bare_head(client):
    bare = photo("astronaut")
    hatted = bare.copy()
    cv2.ellipse(hatted, (224, 70), (62, 52), 0, 180, 360, (250, 210, 20), -1)
    cv2.rectangle(hatted, (150, 64), (298, 76), (250, 210, 20), -1)
    assert (await infer(client, "helmet_detection", bare))["event_type"] == "helmet_missing"
    assert (await infer(client, "helmet_detection", hatted))["event_type"] == "all_helmeted"


@pytest.mark.parametrize("shared_memory", [False, True], ids=["by-value", "by-reference"])
async def test_reference_models_stream_demo_prints_the_fall_and_the_fire_as_they_arrive(
    client, sidecar_port, shared_memory
):
    import stream_demo

    lines: list[str] = []
    replies = await stream_demo.run(f"127.0.0.1:{sidecar_port}", fps=20.0, emit=lines.append,
                                    shared_memory=shared_memory)
    frames = [len(list(make())) for _, _, make in stream_demo.CAMERAS.values()]
    assert len(replies) == len(lines) == sum(frames) + max(frames)  # and a crowd batch per round
    assert not [line for line in lines if " ERROR " in line]
    assert any("cam-hall" in line and "fall_detected" in line for line in lines)
    assert any("cam-store" in line and "fire_detected" in line for line in lines)
    crowd = [r for r in replies if r.batch]
    assert len(crowd) == max(frames) and {len(r.batch) for r in crowd} <= {1, 2}
    assert any("people: cam-hall 1" in line for line in lines)


async def test_ruthgen_infer_sends_several_images_to_a_batch_model_as_one_batch(sidecar_port, tmp_path):
    import asyncio

    from typer.testing import CliRunner

    from ruthstack.cli import app

    images = []
    for name in ("astronaut", "coffee", "camera"):
        images.append(tmp_path / f"{name}.jpg")
        images[-1].write_bytes(jpeg(photo(name)))
    args = ["infer", "--model", "crowd_count", "--version", MODELS["crowd_count"],
            "--sidecar", f"127.0.0.1:{sidecar_port}", "--timeout", "120", *map(str, images)]
    result = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert result.exit_code == 0, result.output
    answers = [json.loads(line) for line in result.output.splitlines()]
    assert [a["frame_id"] for a in answers] == ["astronaut.jpg", "coffee.jpg", "camera.jpg"]
    assert [a["result"]["count"] for a in answers] == [1, 0, 1]
    assert {a["result"]["batch_size"] for a in answers} == {3}
    assert {a["result"]["total"] for a in answers} == {2}


async def test_ruthgen_infer_annotate_draws_the_persons_found_when_given_a_photo(sidecar_port, tmp_path):
    import asyncio

    from typer.testing import CliRunner

    from ruthstack.cli import app

    image = tmp_path / "astronaut.jpg"
    image.write_bytes(jpeg(photo("astronaut")))
    out = tmp_path / "annotated.png"
    args = ["infer", "--model", "person_detection", "--version", MODELS["person_detection"],
            "--sidecar", f"127.0.0.1:{sidecar_port}", "--timeout", "120", "--annotate", str(out), str(image)]
    run = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert run.exit_code == 0, run.output
    assert out.is_file()
    drawn = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB).astype(int)
    original = cv2.cvtColor(cv2.imdecode(np.frombuffer(image.read_bytes(), np.uint8), cv2.IMREAD_COLOR),
                            cv2.COLOR_BGR2RGB).astype(int)
    assert drawn.shape == original.shape
    answer = json.loads(next(line for line in run.output.splitlines() if line.startswith("{")))
    boxes = [b for b in answer["result"]["bounding_boxes"] if b["label"] == "person"]
    assert boxes, answer
    x, y, h = boxes[0]["x"], boxes[0]["y"], boxes[0]["height"]
    edge = np.abs(drawn[y + 20 : y + h - 20, x] - original[y + 20 : y + h - 20, x]).max(axis=1)
    assert (edge > 30).mean() > 0.9, "the box's left edge is drawn along its height"


async def test_reference_models_stream_demo_sends_each_hall_frame_to_three_models_in_one_request(
    client, sidecar_port
):
    import stream_demo

    lines: list[str] = []
    replies = await stream_demo.run(f"127.0.0.1:{sidecar_port}", fps=20.0, emit=lines.append, crowd=False,
                                    several=True)
    hall = [r for r in replies if r.camera_id == "cam-hall"]
    assert hall and all([a.model_id for a in r.answers] == [m for m, _ in stream_demo.SEVERAL["cam-hall"]]
                        for r in hall)
    assert not [a for r in hall for a in r.answers if a.HasField("error")]
    events = {a.model_id: result_dict(a)["event_type"] for r in hall for a in r.answers}
    assert set(events) == {"fall_detection", "person_detection", "helmet_detection"}
    assert any("fall_detected" in line for line in lines) and not [x for x in lines if " ERROR " in x]
