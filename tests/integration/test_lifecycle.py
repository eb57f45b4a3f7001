"""Lifecycle, hot reload, recovery, health and registration against the real embedded tritonserver.

Each test runs twice, once per entry source of the one lifecycle manager:

* ``plugins``: the sidecar owns the plugin folder (``models_dir``, what ``ruthgen up`` runs) and
  regenerates entries itself, watching the folder;
* ``repository``: the repository is built elsewhere (``ruthgen build``, as the Compose generator
  service or the Kubernetes bundle image do) and the sidecar serves it read-only, polling its
  manifest; adding, editing or removing a plugin means rebuilding the repository.

Each test gets its own plugin folder (copies of ``tests/testdata/plugins/lc_*``), model repository,
tritonserver and sidecar. A stand-in backend (``tests/backend.py``) receives the registrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from ruthgen.writer import build_repository
from sidecar.client import AIRuntimeClient, pb, result_dict
from sidecar.control.capacity import fps_from_statistics
from sidecar.main import Sidecar
from sidecar.settings import load_settings
from tests.backend import FakeBackend

pytestmark = pytest.mark.integration

PLUGINS = Path(__file__).resolve().parent.parent / "testdata" / "plugins"
V = "1.0.0"
ROOT = Path(__file__).resolve().parents[2]


def jpeg(width: int = 64, height: int = 48) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


FRAME = jpeg()


@pytest.fixture
async def backend():
    async with FakeBackend() as running:
        yield running


class Plugins:
    """A plugin folder and its repository, as one of the two sources presents them to the sidecar."""

    def __init__(self, source: str, root: Path) -> None:
        self.source = source
        self.models, self.repository = root / "models", root / "model_repository"
        self.models.mkdir()
        self.repository.mkdir()

    def settings(self) -> dict[str, Any]:
        if self.source == "plugins":
            return {"models_dir": self.models, "watch_debounce_s": 0.2}
        return {"manifest_poll_s": 0.2}

    def add(self, *names: str) -> None:
        for name in names:
            shutil.copytree(PLUGINS / name, self.models / name)
        self.publish()

    def remove(self, name: str) -> None:
        shutil.rmtree(self.models / name)
        self.publish()

    def write(self, relative: str, text: str) -> None:
        (self.models / relative).write_text(text)
        self.publish()

    def publish(self) -> None:
        """What the change takes to reach the sidecar: nothing when it watches the folder itself."""
        if self.source == "repository":
            build_repository(self.models, self.repository)

    def copy_after_reload(self, model_id: str) -> str:
        """The Triton name serving a version after one reload (its other slot, or the same entry)."""
        return f"{model_id}__{V}__b" if self.source == "plugins" else f"{model_id}__{V}"


@pytest.fixture(params=["plugins", "repository"])
def folders(request, tmp_path) -> Plugins:
    return Plugins(request.param, tmp_path)


@contextlib.asynccontextmanager
async def stack(triton_factory, folders: Plugins, plugins, **overrides):
    """tritonserver + a sidecar on the folders' source; yields (sidecar, http, client)."""
    folders.add(*plugins)
    triton = triton_factory(folders.repository, load_models=[])
    settings = load_settings(
        grpc_port=0, http_port=0, triton_url=triton.grpc_url, model_repository=folders.repository,
        triton_pid=triton.process.pid, admin_token="t0ken",
        recovery_cooldown_s=overrides.pop("recovery_cooldown_s", 0.3), unload_timeout_s=2.0,
        **folders.settings(), **overrides,
    )
    async with Sidecar(settings) as sidecar, contextlib.AsyncExitStack() as clients:
        base = f"http://127.0.0.1:{sidecar.http_port}"
        http = await clients.enter_async_context(httpx.AsyncClient(base_url=base, timeout=10))
        client = await clients.enter_async_context(AIRuntimeClient(f"127.0.0.1:{sidecar.port}"))
        yield sidecar, http, client


async def model(http: httpx.AsyncClient, model_id: str, version: str = V) -> dict[str, Any] | None:
    found = (await http.get("/models")).json()["models"]
    return next((m for m in found if (m["model_id"], m["version"]) == (model_id, version)), None)


async def until(predicate, timeout: float = 30.0, interval: float = 0.05):
    """Poll the (async or sync) predicate until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(interval)


async def state_is(http, model_id, *states):
    found = await model(http, model_id)
    return found if found is not None and found["state"] in states else None


def error_code(response: pb.InferenceResponse) -> str | None:
    return pb.ErrorCode.Name(response.error.code) if response.HasField("error") else None


# ---- registration ---------------------------------------------------------------------------------


async def test_registration_at_startup_and_on_change_and_hot_add_and_delete(triton_factory, folders, backend):
    async with stack(triton_factory, folders, ["lc_echo"], backend_url=backend.url,
                     backend_token="b-token", registration_interval_s=300.0) as (_, http, client):
        await until(lambda: backend.received)
        first = backend.models(0)
        assert first[("lc_echo", V)]["state"] == "READY" and backend.authorization[0] == "Bearer b-token"
        assert backend.received[0]["hardware"]["type"] in ("cpu", "gpu", "jetson")

        folders.add("lc_crash")  # copied in while serving: READY without a restart
        await until(lambda: state_is(http, "lc_crash", "READY"))
        response = await client.infer("lc_crash", V, FRAME, frame_id="ok")
        assert result_dict(response) == {"alive": True}
        await until(lambda: ("lc_crash", V) in backend.models() and backend.models()[("lc_crash", V)]["state"]
                    == "READY")  # a registration on change: the heartbeat is 300 s away

        folders.remove("lc_crash")
        gone = await until(lambda: state_is(http, "lc_crash", "UNLOADED"))
        assert [h["to"] for h in gone["history"]][-2:] == ["UNLOADING", "UNLOADED"]
        response = await client.infer("lc_crash", V, FRAME, frame_id="ok")
        assert error_code(response) == "MODEL_NOT_READY"
        await until(lambda: ("lc_crash", V) not in backend.models())
        assert (await client.infer("lc_echo", V, FRAME)).HasField("result")


async def test_registration_repeats_by_heartbeat_with_measured_capacity(triton_factory, folders, backend):
    async with stack(triton_factory, folders, ["lc_echo"], backend_url=backend.url,
                     registration_interval_s=0.5) as (sidecar, http, client):
        await until(lambda: backend.received)
        count = len(backend.received)
        await until(lambda: len(backend.received) >= count + 2)  # nothing changed: the heartbeat
        calibrated = await until(lambda: backend.models()[("lc_echo", V)]["performance"]["fps_capacity"])
        assert calibrated > 1.0  # measured at load, a trivial plugin does far more than 1 frame/s
        for i in range(30):
            assert (await client.infer("lc_echo", V, FRAME, frame_id=str(i))).HasField("result")
        performance = (await http.get("/capabilities")).json()["models"][0]["performance"]
        assert performance["avg_inference_time_ms"] > 0 and performance["p99_inference_time_ms"] > 0
        name = (await model(http, "lc_echo"))["triton_name"]
        live = fps_from_statistics(await sidecar.core.adapter.model_statistics(name), instance_count=1)
        assert live is not None and live > 1.0  # the heartbeat's refresh, from Triton's real statistics


# ---- SIGHUP ---------------------------------------------------------------------------------------


async def test_sighup_rescans_the_source(triton_factory, folders):
    folders.add("lc_echo")
    triton = triton_factory(folders.repository, load_models=[])
    env = {
        **os.environ, "RUTH_GRPC_PORT": "0", "RUTH_HTTP_PORT": "0", "RUTH_TRITON_URL": triton.grpc_url,
        "RUTH_MODEL_REPOSITORY": str(folders.repository), "RUTH_WATCH_MODELS": "false",
        "RUTH_TRITON_PID": str(triton.process.pid),
    }
    if folders.source == "plugins":
        env["RUTH_MODELS_DIR"] = str(folders.models)
    process = subprocess.Popen([sys.executable, "-m", "sidecar"], cwd=ROOT, env=env, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        port = await asyncio.to_thread(_read_http_port, process)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            await until(lambda: state_is(http, "lc_echo", "READY"))
            folders.add("lc_crash")
            await asyncio.sleep(1.5)
            assert await model(http, "lc_crash") is None, "no watcher: nothing happens before SIGHUP"
            process.send_signal(signal.SIGHUP)
            await until(lambda: state_is(http, "lc_crash", "READY"))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0


def _read_http_port(process: subprocess.Popen[str]) -> int:
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    for line in process.stderr:
        match = re.search(r"HTTP \(probes.*\) on [0-9.]+:(\d+)", line)
        if match:
            threading.Thread(target=_drain, args=(process,), daemon=True).start()
            return int(match.group(1))
        assert time.monotonic() < deadline
    raise AssertionError("the sidecar exited before serving HTTP")


def _drain(process: subprocess.Popen[str]) -> None:
    """Keep reading the child's log so that it never blocks on a full pipe."""
    assert process.stderr is not None
    for _ in process.stderr:
        pass


# ---- recovery -------------------------------------------------------------------------------------


async def test_crashed_plugin_is_detected_and_reloaded(triton_factory, folders):
    async with stack(triton_factory, folders, ["lc_crash"]) as (_, http, client):
        await until(lambda: state_is(http, "lc_crash", "READY"))
        response = await client.infer("lc_crash", V, FRAME, frame_id="crash")
        assert error_code(response) == "INTERNAL"
        recovered = await until(lambda: _after_error(http, "lc_crash"))
        assert "process died" in recovered["last_error"]
        response = await client.infer("lc_crash", V, FRAME, frame_id="ok")
        assert result_dict(response) == {"alive": True}, response.error
        assert recovered["triton_name"] == folders.copy_after_reload("lc_crash")


async def _after_error(http, model_id):
    found = await model(http, model_id)
    if found is None or found["state"] != "READY":
        return None
    targets = [h["to"] for h in found["history"]]
    return found if targets[-3:] == ["ERROR", "LOADING", "READY"] else None


async def test_hung_plugin_is_unhealthy_after_3_timeouts_and_recovered(triton_factory, folders):
    async with stack(triton_factory, folders, ["lc_hang", "lc_echo"], request_timeout_ms=800,
                     recovery_cooldown_s=1.5, hang_check_s=1.0) as (_, http, client):
        await until(lambda: state_is(http, "lc_hang", "READY"))
        await until(lambda: state_is(http, "lc_echo", "READY"))
        for _ in range(3):
            response = await client.infer("lc_hang", V, FRAME, frame_id="hang")
            assert error_code(response) == "TIMEOUT"
        broken = await until(lambda: state_is(http, "lc_hang", "ERROR"))  # after the hang check
        assert "3 consecutive timeouts and nothing finished" in broken["reason"]
        assert broken["health"] == "UNHEALTHY"
        health = await client.health()
        assert pb.HealthStatus.Name(health.status) == "DEGRADED"  # §6.5: one healthy, one not
        recovered = await until(lambda: _after_error(http, "lc_hang"))
        assert recovered["health"] == "HEALTHY"
        response = await client.infer("lc_hang", V, FRAME, frame_id="ok")
        assert result_dict(response) == {"alive": True}
        assert pb.HealthStatus.Name((await client.health()).status) == "HEALTHY"


async def test_plugin_that_keeps_failing_ends_in_error_after_3_retries(triton_factory, folders):
    async with stack(triton_factory, folders, ["lc_doomed"], recovery_cooldown_s=0.2) as (_, http, client):
        await until(lambda: state_is(http, "lc_doomed", "READY"))

        async def keep_hitting():
            while True:
                found = await model(http, "lc_doomed")
                if found["state"] == "ERROR" and "gave up" in (found["last_error"] or ""):
                    return found
                if found["state"] == "READY":
                    await client.infer("lc_doomed", V, FRAME, frame_id="x")
                await asyncio.sleep(0.05)

        final = await asyncio.wait_for(keep_hitting(), 90)
        assert final["recovery_attempts"] == 3
        loads = [h for h in final["history"] if h["to"] == "LOADING"]
        assert len(loads) >= 3
        await asyncio.sleep(1.0)
        assert (await model(http, "lc_doomed"))["state"] == "ERROR", "no automatic reload after giving up"
        response = await client.infer("lc_doomed", V, FRAME)
        assert error_code(response) == "MODEL_NOT_READY"
        rescanned = await http.post("/admin/rescan", params={"model_id": "lc_doomed"},
                                    headers={"Authorization": "Bearer t0ken"})
        assert rescanned.status_code == 200 and rescanned.json()["models"][0]["state"] == "READY"


# ---- zero-drop reload -----------------------------------------------------------------------------


async def test_reload_under_load_drops_nothing_and_invalid_edit_keeps_serving(triton_factory, folders):
    async with stack(triton_factory, folders, ["lc_echo"]) as (_, http, client):
        await until(lambda: state_is(http, "lc_echo", "READY"))
        generations: list[int] = []
        failures: list[str] = []
        stop = asyncio.Event()

        async def load(worker: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                response = await client.infer("lc_echo", V, FRAME, frame_id=f"{worker}-{n}")
                if response.HasField("error"):
                    failures.append(f"{error_code(response)}: {response.error.message}")
                else:
                    generations.append(int(result_dict(response)["generation"]))

        workers = [asyncio.ensure_future(load(i)) for i in range(4)]
        try:
            await until(lambda: len(generations) > 50)
            folders.write(f"lc_echo/{V}/config.yaml", "generation: 2\n")
            await until(lambda: generations and generations[-1] == 2)
            count = len(generations)
            await until(lambda: len(generations) > count + 50)
            folders.write(f"lc_echo/{V}/model.yaml", "model_id: lc_echo\nversion: '1.0.0'\n")
            rejected = await until(lambda: _rejected(http))
            count = len(generations)
            await until(lambda: len(generations) > count + 50)
        finally:
            stop.set()
            await asyncio.gather(*workers)
        assert failures == []
        assert generations[0] == 1 and generations[-1] == 2
        assert generations == sorted(generations), "no answer from the old copy after the switch"
        assert rejected["state"] == "READY" and "invalid" in rejected["rejected_change"]["reason"]
        assert rejected["triton_name"] == folders.copy_after_reload("lc_echo")


async def _rejected(http):
    found = await model(http, "lc_echo")
    return found if found and found["rejected_change"] else None


# ---- §6.5 -----------------------------------------------------------------------------------------


async def test_runtime_health_follows_the_6_5_table(triton_factory, folders):
    async with stack(triton_factory, folders, ["lc_echo", "lc_crash"],
                     recovery_cooldown_s=600.0) as (_, http, client):
        await until(lambda: state_is(http, "lc_crash", "READY"))
        await until(lambda: state_is(http, "lc_echo", "READY"))
        assert pb.HealthStatus.Name((await client.health()).status) == "HEALTHY"
        assert (await http.get("/readyz")).status_code == 200

        await client.infer("lc_crash", V, FRAME, frame_id="crash")  # ERROR, recovery far away
        await until(lambda: state_is(http, "lc_crash", "ERROR"))
        assert pb.HealthStatus.Name((await client.health()).status) == "DEGRADED"
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["unhealthy_models"] == 1
        summary = (await http.get("/capabilities")).json()["health_summary"]
        assert summary["status"] == "degraded" and "lc_crash" in summary["last_error"]

        folders.remove("lc_echo")
        await until(lambda: state_is(http, "lc_echo", "UNLOADED"))
        assert pb.HealthStatus.Name((await client.health()).status) == "UNHEALTHY"
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["healthy_models"] == 0
        metrics = (await http.get("/metrics")).text
        assert 'ruth_runtime_health{health="UNHEALTHY"} 1.0' in metrics
        assert 'ruth_model_state{model_id="lc_crash",state="ERROR",version="1.0.0"} 1.0' in metrics
