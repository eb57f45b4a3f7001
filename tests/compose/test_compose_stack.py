"""`docker compose up` for real: the CPU deployment on stand-in bases, checked from the host.

The stack (conftest.py) is built and started once; the tests run in this order and the last one
takes it down. The sidecar runs as Compose runs it (no RUTH_MODELS_DIR: the repository the
``ruthgen`` service built, read-only) with its whole runtime: the HTTP port, the registration, and
the recovery of a hung model by ending its stub through the shared PID namespace.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time

import grpc
import httpx
import numpy as np
import pytest
from compose_stack import IMAGE_SIZES_KEY, ISOLATION_KEY, PLUGINS, Running, StackError, image_size_mb, run
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from skimage import data

from sidecar.client import AIRuntimeClient, pb, result_dict

pytestmark = [pytest.mark.compose, pytest.mark.timeout(2400)]

UID = "10001:10001"
DEADLOCK = ("native_deadlock", "1.0.0")
PERSON = ("person_detection", "1.0.0")
#: The client's deadline for a request to the deadlocked model, and how late the answer may be.
DEADLINE_MS, SLACK_S = 2000, 3.0
#: Upper bounds of the serving images built on the stand-in bases (MB, as `docker image ls`).
MAX_IMAGE_MB = {"ruth/tritonserver:0.1.0-standin": 500, "ruth/sidecar:0.1.0-standin": 450}
STANDIN_IMAGES = ("ruth-standin/tritonserver:2.51.0-bookworm", "ruth-standin/python:3.11-bookworm")
COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "ld")

_PROCESSES = """
import json, os
found = []
for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
    try:
        words = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").split("\\0")
    except OSError:
        continue
    try:
        os.kill(pid, 0)
        signal_ok = True
    except PermissionError:
        signal_ok = False
    except ProcessLookupError:
        continue
    found.append({"pid": pid, "uid": os.stat(f"/proc/{pid}").st_uid, "cmd": " ".join(words).strip(),
                  "may_signal": signal_ok})
print(json.dumps(found))
"""


def _jpeg(image) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


ASTRONAUT = _jpeg(data.astronaut())


def _processes_seen_by_the_sidecar(stack: Running) -> list[dict]:
    done = stack.stack.exec("sidecar", "python", "-c", _PROCESSES)
    assert done.returncode == 0, done.stdout
    return json.loads(done.stdout.strip().splitlines()[-1])


def _stubs(processes: list[dict], model: tuple[str, str]) -> list[dict]:
    name = f"{model[0]}__{model[1]}"
    return [p for p in processes if "triton_python_backend_stub" in p["cmd"] and f"/{name}/" in p["cmd"]]


def _started_at(stack: Running) -> dict[str, str]:
    return {s: stack.stack.container(s)["State"]["StartedAt"] for s in ("tritonserver", "sidecar")}


async def _infer(
    client: AIRuntimeClient, model: tuple[str, str], frame_id: str, **fields
) -> pb.InferenceResponse:
    return await client.infer(*model, ASTRONAUT, frame_id=frame_id, camera_id="compose", **fields)


def _assert_person_found(response: pb.InferenceResponse) -> None:
    error = response.error
    assert not response.HasField("error"), f"{pb.ErrorCode.Name(error.code)}: {error.message}"
    result = result_dict(response)
    assert result["event_type"] == "person_detected"
    assert result["count"] == 1
    (box,) = result["bounding_boxes"]
    assert box["label"] == "person" and box["confidence"] > 0.5
    # The astronaut fills most of the 512x512 photograph.
    assert box["width"] * box["height"] >= 512 * 512 / 3


# --- what the deployment does today ------------------------------------------------------------


def test_sidecar_health_is_serving_on_the_published_port_when_up(stack: Running):
    with grpc.insecure_channel(stack.grpc_address) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_person_detection_finds_the_astronaut_through_the_published_port_when_served(stack: Running):
    async with AIRuntimeClient(stack.grpc_address) as client:
        for index in range(3):
            _assert_person_found(await _infer(client, PERSON, f"astronaut-{index}"))


async def test_a_frame_for_several_models_is_decoded_once_in_tritons_shared_memory_when_served(
    stack: Running,
):
    # the sidecar shares Triton's IPC namespace and /dev/shm (ipc: "service:tritonserver")
    models = [PERSON, ("helmet_detection", "0.1.0"), ("crowd_count", "1.0.0")]
    async with AIRuntimeClient(stack.grpc_address) as client:
        alone = {m: json_format.MessageToDict((await _infer(client, m, f"alone-{m[0]}")).result)
                 for m in models}
        together = await client.infer_models(models, ASTRONAUT, frame_id="together", camera_id="compose")
    answers = {(a.model_id, a.version): a for a in together.answers}
    for model in models:
        assert not answers[model].HasField("error"), answers[model].error
        # the same answer as from the pixels each model decodes itself
        assert json_format.MessageToDict(answers[model].result) == alone[model]
    with httpx.Client(base_url=stack.http_url, timeout=5) as http:
        metrics = http.get("/metrics").text
    decoded = [line for line in metrics.splitlines() if line.startswith("ruth_frames_decoded_once_total")]
    assert decoded and float(decoded[0].split()[-1]) >= 1.0, metrics
    assert "cannot read the frame pool" not in stack.stack.logs()


async def test_a_hostile_plugin_in_the_container_is_confined_as_its_isolation_says_when_served(
    stack: Running, request
):
    # iso_hostile writes through libc (what the audit-hook guard cannot see); the stub confined itself
    # before importing it, with what the container lets it use: the level is in /models
    with httpx.Client(base_url=stack.http_url, timeout=5) as http:
        models = http.get("/models").json()["models"]
    (entry,) = [m for m in models if m["model_id"] == "iso_hostile"]
    isolation = entry["isolation"]
    request.config.stash[ISOLATION_KEY] = isolation
    frame = np.zeros((4, 4, 3), dtype=np.uint8).tobytes()
    target = "/tmp/escaped-by-iso-hostile.txt"  # writable for the stub's user: only the kernel stops it
    async with AIRuntimeClient(stack.grpc_address) as client:
        response = await client.infer(
            "iso_hostile", "1.0.0", frame, pb.RAW_RGB, frame_id=target, camera_id="write", width=4, height=4
        )
        assert not response.HasField("error"), response.error
        answer = result_dict(response)
        escaped = stack.stack.exec("tritonserver", "test", "-e", target).returncode == 0
        if escaped:
            stack.stack.exec("tritonserver", "rm", "-f", target)
    if isolation["level"] == "kernel":
        assert isolation["landlock_abi"] >= 1 and (answer["done"], answer["errno"]) == (False, 13), answer
        assert not escaped
    else:  # the engine's seccomp profile refuses Landlock: the guard alone, and /models says why
        assert isolation["landlock_abi"] == 0 and "seccomp" in isolation["detail"], isolation
        assert answer["done"] is True and escaped


def test_serving_containers_run_as_the_kubernetes_pod_enforces_when_up(stack: Running):
    for service in ("tritonserver", "sidecar"):
        info = stack.stack.container(service)
        assert info["Config"]["User"] == UID, service
        assert info["HostConfig"]["CapDrop"] == ["ALL"], service
        assert "no-new-privileges:true" in (info["HostConfig"]["SecurityOpt"] or []), service
        done = stack.stack.exec(service, "sh", "-c", "id -u; grep ^CapEff /proc/self/status")
        assert done.returncode == 0, done.stdout
        uid, capabilities = done.stdout.split()[0], done.stdout.split()[-1]
        assert (uid, int(capabilities, 16)) == ("10001", 0), (service, done.stdout)
    assert stack.stack.container("sidecar")["HostConfig"]["ReadonlyRootfs"] is True
    for path in ("/probe", "/tmp/probe", "/opt/ruth/model_repository/probe"):
        done = stack.stack.exec("sidecar", "sh", "-c", f": > {path}")
        assert done.returncode != 0 and "Read-only file system" in done.stdout, (path, done.stdout)


def test_sidecar_sees_and_may_signal_the_stubs_of_triton_when_processes_are_shared(stack: Running):
    processes = _processes_seen_by_the_sidecar(stack)
    commands = [p["cmd"] for p in processes]
    assert any(cmd.startswith("tritonserver ") for cmd in commands), commands
    for model in (DEADLOCK, PERSON):
        (stub,) = _stubs(processes, model)
        assert stub["uid"] == 10001 and stub["may_signal"], stub


async def test_deadlocked_model_answers_timeout_within_the_deadline_while_others_serve_when_hung(
    stack: Running,
):
    async with AIRuntimeClient(stack.grpc_address) as client:
        _assert_person_found(await _infer(client, PERSON, "before"))
        started = time.monotonic()
        answered_after: list[float] = []
        hung = asyncio.ensure_future(_infer(client, DEADLOCK, "deadlock", timeout_ms=DEADLINE_MS))
        hung.add_done_callback(lambda _: answered_after.append(time.monotonic() - started))
        await asyncio.sleep(0.3)
        for index in range(5):  # while the stub is stuck in libc, the other models answer
            _assert_person_found(await _infer(client, PERSON, f"during-{index}"))
        response = await hung
    (elapsed,) = answered_after
    assert response.HasField("error"), result_dict(response)
    assert pb.ErrorCode.Name(response.error.code) == "TIMEOUT", response.error.message
    assert elapsed < DEADLINE_MS / 1000 + SLACK_S, f"TIMEOUT came after {elapsed:.1f} s"


def test_serving_images_are_small_and_hold_no_compiler_when_built(stack: Running, request):
    sizes = {image: image_size_mb(image) for image in (*MAX_IMAGE_MB, *STANDIN_IMAGES)}
    request.config.stash[IMAGE_SIZES_KEY] = sizes
    for image in MAX_IMAGE_MB:
        assert sizes[image] <= MAX_IMAGE_MB[image], f"{image} is {sizes[image]:.0f} MB"
        probe = "for c in " + " ".join(COMPILERS) + '; do command -v "$c"; done; true'
        found = run(["docker", "run", "--rm", "--entrypoint", "sh", image, "-c", probe], timeout=60).stdout
        assert not found.strip(), f"{image} holds {found.split()}"


async def test_plugin_added_by_rerunning_ruthgen_is_served_without_a_restart_when_the_manifest_changes(
    stack: Running,
):
    started = _started_at(stack)
    shutil.copytree(PLUGINS / "sc_echo", stack.models / "sc_echo")
    try:
        stack.stack.generate()
    except StackError as exc:
        pytest.fail(str(exc))
    deadline = time.monotonic() + 90
    response = None
    async with AIRuntimeClient(stack.grpc_address) as client:
        while time.monotonic() < deadline:
            response = await client.infer("sc_echo", "1.0.0", ASTRONAUT, frame_id="hot-added")
            if not response.HasField("error"):
                break
            await asyncio.sleep(2)
    served = response is not None and not response.HasField("error")
    assert served, f"sc_echo not served within 90 s: {response}"
    assert result_dict(response)["width"] == 512
    assert _started_at(stack) == started, "a container was restarted"


# --- the sidecar's runtime in the compose mode --------------------------------------------------


def test_sidecar_http_port_answers_probes_and_metrics_when_up(stack: Running):
    with httpx.Client(base_url=stack.http_url, timeout=5) as http:
        assert http.get("/livez").status_code == 200
        assert http.get("/readyz").status_code == 200
        metrics = http.get("/metrics")
        assert metrics.status_code == 200
        assert "ruth_requests_total" in metrics.text
        capabilities = http.get("/capabilities").json()
    assert {m["model_id"] for m in capabilities["models"]} >= {PERSON[0], DEADLOCK[0]}


def test_sidecar_registers_its_capabilities_with_the_backend_when_configured(stack: Running):
    deadline = time.monotonic() + 30
    records: list = []
    with httpx.Client(base_url=stack.backend_url, timeout=5) as http:
        while time.monotonic() < deadline and not records:
            records = http.get("/registrations").json()
            time.sleep(1)
    assert records, "no registration reached the backend stub within 30 s"
    declaration = records[-1]["declaration"]
    assert declaration["runtime_id"]
    models = {(m["model_id"], m["version"]): m for m in declaration["models"]}
    assert models[PERSON]["state"] == "READY"


async def test_deadlocked_model_is_recovered_by_ending_its_stub_while_others_serve_when_hung(
    stack: Running,
):
    (before,) = _stubs(_processes_seen_by_the_sidecar(stack), DEADLOCK)
    async with AIRuntimeClient(stack.grpc_address) as client:
        # Consecutive timeouts (an earlier test sent one already), then the hang check watches Triton's
        # statistics (nothing finishes: hung), until the sidecar takes the version out of service.
        codes: list[str] = []
        hung_by = time.monotonic() + 60
        while "MODEL_NOT_READY" not in codes:
            response = await _infer(client, DEADLOCK, "deadlock", timeout_ms=DEADLINE_MS)
            codes.append(pb.ErrorCode.Name(response.error.code))
            assert codes[-1] in ("TIMEOUT", "MODEL_NOT_READY") and time.monotonic() < hung_by, codes
        assert codes[0] == "TIMEOUT", codes
        deadline = time.monotonic() + 120
        answer = None
        while time.monotonic() < deadline:
            _assert_person_found(await _infer(client, PERSON, "meanwhile"))
            answer = await _infer(client, DEADLOCK, "alive?", timeout_ms=DEADLINE_MS)
            if not answer.HasField("error"):
                break
            await asyncio.sleep(2)
    assert answer is not None and not answer.HasField("error"), f"not recovered within 120 s: {answer}"
    assert result_dict(answer) == {"alive": True}
    (after,) = _stubs(_processes_seen_by_the_sidecar(stack), DEADLOCK)
    assert after["pid"] != before["pid"], "the hung stub was not replaced"


# --- last: the stack goes down ------------------------------------------------------------------


def test_compose_down_leaves_no_container_when_stopped(stack: Running):
    started = time.monotonic()
    stack.stack.down()
    stack.timings["down"] = time.monotonic() - started
    left = stack.stack.describe()
    assert not stack.stack.containers(), f"left behind:\n{left}"

