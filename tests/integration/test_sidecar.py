"""The sidecar against the real embedded tritonserver, on a repository the generator built from
the ``tests/testdata/plugins/sc_*`` fixtures (see each fixture's model.yaml for what it does)."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image
from typer.testing import CliRunner

from ruthstack.cli import app
from sidecar.client import AIRuntimeClient, infer_files, make_request, pb, result_dict
from sidecar.main import Sidecar
from sidecar.settings import load_settings
from tests.fixture_repos import PLUGINS, fixture_repository

pytestmark = pytest.mark.integration


V = "1.0.0"


def jpeg(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


FRAME = jpeg()


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    return fixture_repository(tmp_path_factory, [plugin.name for plugin in sorted(PLUGINS.glob("sc_*"))])


@pytest.fixture(scope="module")
def triton(module_triton_factory, repository):
    # nothing loaded: the sidecar loads every VALID model at startup
    return module_triton_factory(repository, load_models=[])


def sidecar_settings(triton, repository, **overrides):
    return load_settings(
        grpc_port=0,
        http_port=0,
        triton_url=triton.grpc_url,
        model_repository=repository,
        refresh_interval_s=0.5,
        recovery_cooldown_s=0.5,
        **overrides,
    )


@pytest.fixture
async def sidecar(triton, repository):
    async with Sidecar(sidecar_settings(triton, repository, request_timeout_ms=1500)) as running:
        yield running


@pytest.fixture
async def client(sidecar):
    async with AIRuntimeClient(f"127.0.0.1:{sidecar.port}") as runtime_client:
        yield runtime_client


async def test_sidecar_returns_result_through_infer(client):
    response = await client.infer("sc_echo", V, FRAME, frame_id="f-1", camera_id="cam-1", timestamp_ms=7)
    assert not response.HasField("error"), response.error
    assert result_dict(response) == {"label": "ok", "width": 320, "height": 240, "frame_id": "f-1"}
    assert (response.frame_id, response.camera_id, response.model_id, response.version) == (
        "f-1",
        "cam-1",
        "sc_echo",
        V,
    )
    assert response.inference_ms > 0


async def test_sidecar_loads_models_at_startup_and_records_failures_with_tritons_reason(client, triton):
    index = {m["name"]: m for m in triton.repository_index()}
    assert index["sc_echo__1.0.0"]["state"] == "READY"
    status = {m.model_id: m for m in (await client.status()).models}
    assert status["sc_echo"].state == pb.READY
    assert status["sc_broken_load"].state == pb.FAILED
    assert "weights file is corrupt" in status["sc_broken_load"].last_error
    assert status["sc_invalid"].state == pb.INVALID
    assert status["sc_temporal"].input_type == "temporal"


@pytest.mark.parametrize(
    ("model_id", "version", "data", "fmt", "frame_id", "code", "needle"),
    [
        ("sc_nope", V, FRAME, "jpeg", "x", pb.MODEL_NOT_FOUND, "no model 'sc_nope'"),
        ("sc_echo", "2.0.0", FRAME, "jpeg", "x", pb.MODEL_NOT_FOUND, "no version '2.0.0'"),
        ("sc_echo", "", FRAME, "jpeg", "x", pb.VERSION_REQUIRED, "version is required"),
        ("sc_broken_load", V, FRAME, "jpeg", "x", pb.MODEL_NOT_READY, "FAILED"),
        ("sc_invalid", V, FRAME, "jpeg", "x", pb.MODEL_NOT_READY, "INVALID"),
        ("sc_echo", V, FRAME, "png", "x", pb.INVALID_INPUT, "takes jpeg frames, not png"),
        ("sc_echo", V, jpeg(4, 4), "jpeg", "x", pb.INVALID_INPUT, "frame is 4x4"),
        ("sc_echo", V, b"GIF89a", "jpeg", "x", pb.INVALID_INPUT, "not a JPEG"),
        ("sc_echo", V, FRAME[:400], "jpeg", "x", pb.INVALID_INPUT, "decode"),  # plugin-side decode error
        ("sc_echo", V, FRAME, "jpeg", "sleep", pb.TIMEOUT, "exceeded 400 ms"),
        ("sc_echo", V, FRAME, "jpeg", "fail-pre", pb.PREPROCESS_ERROR, "preprocess refused this frame"),
        ("sc_echo", V, FRAME, "jpeg", "fail-infer", pb.INFERENCE_ERROR, "inference failed on purpose"),
        ("sc_echo", V, FRAME, "jpeg", "fail-post", pb.POSTPROCESS_ERROR, "postprocess failed on purpose"),
        ("sc_echo", V, FRAME, "jpeg", "bad-schema", pb.OUTPUT_SCHEMA_VIOLATION, "validate"),
    ],
)
async def test_sidecar_answers_error_code_when_provoked(
    client, model_id, version, data, fmt, frame_id, code, needle
):
    for call in ("unary", "stream"):
        request = make_request(model_id, version, data, fmt, frame_id=frame_id)
        if call == "unary":
            response = await client.infer_request(request)
        else:
            responses = [r async for r in client.stream(_once(request))]
            assert len(responses) == 1
            response = responses[0]
        assert response.error.code == code, (call, response)
        assert needle in response.error.message, (call, response.error.message)
        assert response.frame_id == frame_id


async def _once(request):
    yield request


async def test_sidecar_answers_overloaded_when_a_caller_exceeds_the_model_window(triton, repository):
    settings = sidecar_settings(triton, repository, request_timeout_ms=800, max_in_flight_per_model=1)
    async with Sidecar(settings) as running, AIRuntimeClient(f"127.0.0.1:{running.port}") as client:
        requests = [make_request("sc_hang", V, FRAME, frame_id=f"h{n}") for n in range(2)]
        requests.append(make_request("sc_echo", V, FRAME, frame_id="e"))

        async def write():
            for request in requests:
                yield request

        responses = {r.frame_id: r async for r in client.stream(write())}
    assert responses["h1"].error.code == pb.OVERLOADED
    assert responses["h0"].error.code == pb.TIMEOUT
    assert responses["e"].HasField("result")


async def test_sidecar_answers_internal_then_recovers_when_model_process_dies(client):
    response = await client.infer("sc_crash", V, FRAME, frame_id="crash")
    assert response.error.code == pb.INTERNAL
    assert "process" in response.error.message and "died" in response.error.message
    response = await client.infer("sc_crash", V, FRAME, frame_id="after")
    assert response.error.code == pb.MODEL_NOT_READY
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = await client.infer("sc_crash", V, FRAME, frame_id="later")
        if not response.HasField("error"):
            break
        await asyncio.sleep(0.25)
    assert result_dict(response) == {"alive": True}
    (status,) = (await client.status("sc_crash", V)).models
    assert status.state == pb.READY and "died" in status.last_error


async def test_hung_plugin_times_out_within_deadline_while_another_model_answers(client):
    deadline_s = 1.5
    loop = asyncio.get_running_loop()

    async def hung(call: str) -> tuple[pb.InferenceResponse, float]:
        started = loop.time()
        request = make_request("sc_hang", V, FRAME, frame_id=f"hang-{call}")
        if call == "unary":
            response = await client.infer_request(request)
        else:
            (response,) = [r async for r in client.stream(_once(request))]
        return response, loop.time() - started

    async def others() -> list[float]:
        latencies = []
        end = loop.time() + deadline_s
        while loop.time() < end:
            started = loop.time()
            response = await client.infer("sc_echo", V, FRAME, frame_id="alive")
            assert response.HasField("result"), response.error
            latencies.append(loop.time() - started)
        return latencies

    (unary, unary_s), (streamed, streamed_s), latencies = await asyncio.gather(
        hung("unary"), hung("stream"), others()
    )
    for response, elapsed in ((unary, unary_s), (streamed, streamed_s)):
        assert response.error.code == pb.TIMEOUT
        assert deadline_s * 0.95 <= elapsed < deadline_s + 3.0, elapsed  # the plugin would answer at 6 s
    assert len(latencies) >= 2
    assert max(latencies) < 1.0  # none waited for the hung requests' 1.5 s deadline


async def test_unary_answer_arriving_after_its_deadline_never_reaches_a_later_request(client):
    # Unary requests travel on reused Triton streams: the sidecar answers "sleep" TIMEOUT at 150 ms;
    # the plugin's own TIMEOUT comes later and must never reach one of the requests after it.
    late = await client.infer("sc_echo", V, FRAME, frame_id="sleep", timeout_ms=150)
    assert late.error.code == pb.TIMEOUT
    for n in range(12):
        response = await client.infer("sc_echo", V, FRAME, frame_id=f"after-{n}")
        assert not response.HasField("error"), response.error
        assert result_dict(response)["frame_id"] == f"after-{n}"


async def test_unary_request_is_answered_at_once_when_the_inference_server_goes_away(
    triton_factory, repository
):
    triton = triton_factory(repository, load_models=[])
    async with Sidecar(sidecar_settings(triton, repository, request_timeout_ms=5000)) as running:
        runtime_client = AIRuntimeClient(f"127.0.0.1:{running.port}")
        async with runtime_client:
            before = await runtime_client.infer("sc_echo", V, FRAME, frame_id="before")
            assert before.HasField("result"), before.error
            await asyncio.to_thread(triton.stop)  # the reused Triton streams break under the sidecar
            started = time.monotonic()
            after = await runtime_client.infer("sc_echo", V, FRAME, frame_id="after")
            assert after.error.code == pb.MODEL_NOT_READY, after
            assert time.monotonic() - started < 3.0  # not at its 5 s deadline


async def test_hung_model_does_not_hold_back_other_models_on_the_same_stream(client):
    loop = asyncio.get_running_loop()
    started = loop.time()
    requests = [make_request("sc_hang", V, FRAME, frame_id="hang")]
    requests += [make_request("sc_echo", V, FRAME, frame_id=f"e{n}") for n in range(10)]
    arrivals: dict[str, tuple[float, pb.InferenceResponse]] = {}

    async def write():
        for request in requests:
            yield request

    async for response in client.stream(write()):
        arrivals[response.frame_id] = (loop.time() - started, response)
    assert len(arrivals) == 11
    echo_times = [arrivals[f"e{n}"][0] for n in range(10)]
    assert all(arrivals[f"e{n}"][1].HasField("result") for n in range(10))
    hang_time, hang = arrivals["hang"]
    assert max(echo_times) < hang_time  # none waited for the hung frame's answer
    assert hang.error.code == pb.TIMEOUT and 1.4 <= hang_time < 1.5 + 3.0  # its deadline; the plugin: 6 s


async def test_infer_stream_800_frames_over_8_cameras_and_2_models(client):
    cameras = [f"cam{c}" for c in range(8)]
    models = ("sc_echo", "sc_flaky")
    expected = {(m, f"{cam}-{n}") for n in range(50) for cam in cameras for m in models}
    window = asyncio.Semaphore(16)  # the client keeps 16 in flight

    async def write():
        for n in range(50):
            for cam in cameras:
                for model in models:
                    await window.acquire()
                    yield make_request(model, V, FRAME, frame_id=f"{cam}-{n}", camera_id=cam)

    responses = []
    async for response in client.stream(write()):
        responses.append(response)
        window.release()
    assert len(responses) == 800
    got = [(r.model_id, r.frame_id) for r in responses]
    assert len(set(got)) == 800 and set(got) == expected
    for response in responses:
        n = int(response.frame_id.rsplit("-", 1)[1])
        if response.model_id == "sc_flaky" and n % 3 == 2:
            assert response.error.code == pb.INFERENCE_ERROR
            assert response.frame_id in response.error.message
        else:
            assert response.HasField("result"), response.error
            assert result_dict(response)["frame_id"] == response.frame_id


async def test_temporal_model_gets_sequence_start_and_restarts_after_idle_release(client):
    async def count(camera: str) -> dict:
        response = await client.infer("sc_temporal", V, FRAME, camera_id=camera, frame_id="t")
        assert response.HasField("result"), response.error
        return result_dict(response)

    assert await count("camA") == {"camera_id": "camA", "count": 1, "start": True}
    assert await count("camB") == {"camera_id": "camB", "count": 1, "start": True}
    assert await count("camA") == {"camera_id": "camA", "count": 2, "start": False}
    await asyncio.sleep(3.0)  # longer than the fixture's sequence_idle_ms (1000): Triton releases it
    assert await count("camA") == {"camera_id": "camA", "count": 1, "start": True}
    assert await count("camA") == {"camera_id": "camA", "count": 2, "start": False}


async def test_temporal_model_takes_long_camera_ids_apart(client, triton):
    # Triton 2.51 aborts on string sequence ids over 20 bytes: the sidecar sends numbers
    cameras = [f"site-7/building-C/camera-{uuid}" for uuid in ("0f8e2c1a-9b7d-4e3f-a2c5-6d1b8e9f0a7c",
                                                                  "0f8e2c1a-9b7d-4e3f-a2c5-6d1b8e9f0a7d")]
    for count in (1, 2, 3):
        for camera in cameras:
            response = await client.infer("sc_temporal", V, FRAME, camera_id=camera, frame_id=str(count))
            assert result_dict(response) == {"camera_id": camera, "count": count, "start": count == 1}
    assert triton.is_ready()


async def test_temporal_model_on_a_stream_keeps_camera_order_and_restarts_after_idle_release(client):
    async def stream_counts(camera: str, frames: int) -> list[dict]:
        async def write():
            for n in range(frames):
                yield make_request("sc_temporal", V, FRAME, camera_id=camera, frame_id=str(n))

        responses = sorted([r async for r in client.stream(write())], key=lambda r: int(r.frame_id))
        assert all(r.HasField("result") for r in responses), responses
        return [result_dict(r) for r in responses]

    first = await stream_counts("camS", 3)
    assert [(r["count"], r["start"]) for r in first] == [(1, True), (2, False), (3, False)]
    await asyncio.sleep(3.0)  # Triton releases the idle sequence: the sidecar resends with START
    again = await stream_counts("camS", 2)
    assert [(r["count"], r["start"]) for r in again] == [(1, True), (2, False)]


async def test_standard_health_and_reflection_answer(sidecar):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        async def ask():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        replies = [
            r async for r in reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(ask())
        ]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"ruth.airuntime.v1.AIRuntime", "grpc.health.v1.Health"} <= names
    async with AIRuntimeClient(f"127.0.0.1:{sidecar.port}") as client:
        report = await client.health()
    assert report.inference_server_ready
    assert report.models_total == 8


def test_up_stack_starts_triton_and_sidecar_together(tmp_path):
    from ruthstack.stack import SidecarOptions, UpOptions, running_stack

    models = tmp_path / "models"
    shutil.copytree(PLUGINS / "sc_echo", models / "sc_echo")
    options = UpOptions(models_dir=models, repository=tmp_path / "repo", log_path=tmp_path / "triton.log")
    companion = SidecarOptions(port=0, http_port=0, log_path=tmp_path / "sidecar.log")
    image = _write(tmp_path / "frame.jpg", FRAME)
    with running_stack(options, companion) as stack:
        assert stack.sidecar is not None and stack.sidecar.port
        process = stack.sidecar.process
        answers = infer_files(stack.sidecar.address, "sc_echo", V, [image])
        cli = CliRunner().invoke(
            app,
            ["infer", "--model", "sc_echo", "--version", V, "--sidecar", stack.sidecar.address, str(image)],
        )
        failed = CliRunner().invoke(
            app,
            ["infer", "--model", "sc_echo", "--version", "", "--sidecar", stack.sidecar.address, str(image)],
        )
    assert answers[0]["result"] == {"label": "ok", "width": 320, "height": 240, "frame_id": "frame.jpg"}
    assert cli.exit_code == 0, cli.output
    printed = json.loads(cli.output)
    assert printed["result"]["width"] == 320 and printed["frame_id"] == "frame.jpg"
    assert failed.exit_code == 1 and json.loads(failed.output)["error"]["code"] == "VERSION_REQUIRED"
    assert process.poll() is not None  # stopped with the stack


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_up_stack_reports_a_sidecar_that_cannot_bind_its_port(tmp_path):
    import socket

    from ruthgen.embedded.errors import EmbeddedTritonError
    from ruthstack.stack import SidecarOptions, UpOptions, running_stack

    models = tmp_path / "models"
    shutil.copytree(PLUGINS / "sc_echo", models / "sc_echo")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        options = UpOptions(models_dir=models, repository=tmp_path / "repo", log_path=tmp_path / "t.log")
        companion = SidecarOptions(port=taken.getsockname()[1], http_port=0, log_path=tmp_path / "s.log")
        exited = pytest.raises(EmbeddedTritonError, match="the sidecar exited")
        with exited, running_stack(options, companion):
            pass
