"""What the runtime tells the backend, against the real embedded tritonserver.

Out-of-memory errors of a plugin, limits longer than the runtime allows, a slow instance told apart
from a hung one, a request failure in the registration and the log, a plugin's own metric on
Triton's metrics port, and the registration against its JSON Schema. The sidecar owns the plugin
folder (copies of ``tests/testdata/plugins/rs_*``), as ``ruthgen up`` runs it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import time
from pathlib import Path

import httpx
import jsonschema
import pytest

from sidecar.client import AIRuntimeClient, result_dict
from sidecar.main import Sidecar
from sidecar.settings import load_settings
from tests.backend import FakeBackend
from tests.integration.test_lifecycle import FRAME, V, error_code, model, state_is, until

pytestmark = pytest.mark.integration

PLUGINS = Path(__file__).resolve().parent.parent / "testdata" / "plugins"
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "schemas" / "registration.schema.json")
                    .read_text())


@contextlib.asynccontextmanager
async def stack(triton_factory, tmp_path: Path, plugins: list[str], **overrides):
    """tritonserver + a sidecar owning a plugin folder with ``plugins``; yields (sidecar, http, client)."""
    models, repository = tmp_path / "models", tmp_path / "model_repository"
    repository.mkdir()
    for name in plugins:
        shutil.copytree(PLUGINS / name, models / name)
    triton = triton_factory(repository, load_models=[])
    settings = load_settings(
        grpc_port=0, http_port=0, triton_url=triton.grpc_url, triton_metrics_url=triton.metrics_url,
        model_repository=repository, triton_pid=triton.process.pid, models_dir=models,
        watch_debounce_s=0.2, unload_timeout_s=2.0, **overrides,
    )
    async with Sidecar(settings) as sidecar, contextlib.AsyncExitStack() as clients:
        http = await clients.enter_async_context(
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{sidecar.http_port}", timeout=10)
        )
        client = await clients.enter_async_context(AIRuntimeClient(f"127.0.0.1:{sidecar.port}"))
        yield sidecar, http, client


async def test_out_of_memory_answers_its_code_then_error_and_reload_and_a_load_oom_is_failed_once(
    triton_factory, tmp_path
):
    async with stack(triton_factory, tmp_path, ["rs_oom", "rs_oom_load"],
                     recovery_cooldown_s=1.0) as (_, http, client):
        await until(lambda: state_is(http, "rs_oom", "READY"))
        failed = await until(lambda: state_is(http, "rs_oom_load", "FAILED"))
        assert "RESOURCE_EXHAUSTED" in failed["reason"] and "Unable to allocate 64.0 GiB" in failed["reason"]

        response = await client.infer("rs_oom", V, FRAME, frame_id="oom")
        assert error_code(response) == "RESOURCE_EXHAUSTED"
        assert "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB" in response.error.message
        broken = await until(lambda: state_is(http, "rs_oom", "ERROR"))
        assert broken["reason"].startswith("RESOURCE_EXHAUSTED: infer: OutOfMemoryError")
        assert error_code(await client.infer("rs_oom", V, FRAME)) == "MODEL_NOT_READY"  # the cooldown
        recovered = await until(lambda: state_is(http, "rs_oom", "READY"))
        assert [h["to"] for h in recovered["history"]][-3:] == ["ERROR", "LOADING", "READY"]
        assert result_dict(await client.infer("rs_oom", V, FRAME, frame_id="ok")) == {"alive": True}

        once = await model(http, "rs_oom_load")
        assert once["state"] == "FAILED" and [h["to"] for h in once["history"]].count("LOADING") == 1
        metrics = (await http.get("/metrics")).text
        counted = 'ruth_requests_total{code="RESOURCE_EXHAUSTED",model_id="rs_oom",version="1.0.0"} 1.0'
        assert counted in metrics


async def test_limits_longer_than_the_runtimes_warn_and_a_slow_instance_is_not_killed(
    triton_factory, tmp_path
):
    async with stack(triton_factory, tmp_path, ["rs_slow"], request_timeout_ms=600,
                     hang_check_s=4.0) as (sidecar, http, client):
        ready = await until(lambda: state_is(http, "rs_slow", "READY"))
        (warning,) = ready["warnings"]
        assert warning.startswith("timeouts_exceed_runtime") and "5000 ms" in warning and "600 ms" in warning
        name = ready["triton_name"]
        stubs = sidecar.core.manager.stub_killer.find(name)
        assert stubs, "the instance's stub process is visible"

        started = time.monotonic()
        for _ in range(3):  # answered at the runtime's 600 ms, not the model's 5 s
            response = await client.infer("rs_slow", V, FRAME, frame_id="slow")
            assert error_code(response) == "TIMEOUT"
        assert time.monotonic() - started < 3 * 3.0
        unhealthy = await model(http, "rs_slow")
        assert unhealthy["state"] == "READY" and unhealthy["health"] == "UNHEALTHY"

        slow = await until(lambda: _slow_noted(http), timeout=15.0)
        assert slow["state"] == "READY" and "ERROR" not in [h["to"] for h in slow["history"]]
        assert sidecar.core.manager.stub_killer.find(name) == stubs, "the slow instance was not killed"
        response = await until(lambda: _answered(client), timeout=10.0)
        assert result_dict(response) == {"alive": True}


async def _slow_noted(http):
    found = await model(http, "rs_slow")
    return found if "slow, not hung" in (found["last_error"] or "") else None


async def _answered(client):
    response = await client.infer("rs_slow", V, FRAME, frame_id="fast")
    return response if response.HasField("result") else None


async def test_request_failure_reaches_registration_and_log_and_plugin_metrics_reach_tritons_port(
    triton_factory, tmp_path, caplog
):
    async with FakeBackend() as backend, stack(
        triton_factory, tmp_path, ["rs_metrics"], backend_url=backend.url, registration_interval_s=0.5
    ) as (sidecar, http, client):
        await until(lambda: state_is(http, "rs_metrics", "READY"))
        for i in range(3):
            assert result_dict(await client.infer("rs_metrics", V, FRAME, frame_id=str(i), camera_id="cam1"))
        with caplog.at_level(logging.WARNING, logger="sidecar.requests"):
            response = await client.infer("rs_metrics", V, FRAME, frame_id="bad", camera_id="cam9")
        assert error_code(response) == "INFERENCE_ERROR"
        (line,) = [r for r in caplog.records if r.name == "sidecar.requests"]
        message = line.getMessage()
        for part in ("model_id=rs_metrics", "version=1.0.0", "frame_id=bad", "camera_id=cam9",
                     "code=INFERENCE_ERROR", "phase=infer", "latency_ms="):
            assert part in message, message

        def registered_failure():
            summary = backend.received[-1]["health_summary"] if backend.received else {}
            return backend.received[-1] if "INFERENCE_ERROR" in (summary.get("last_error") or "") else None

        declaration = await until(registered_failure, timeout=10.0)
        last_error = declaration["health_summary"]["last_error"]
        assert last_error.startswith("rs_metrics:1.0.0: INFERENCE_ERROR: infer: ValueError")
        entry = next(m for m in declaration["models"] if m["model_id"] == "rs_metrics")
        assert entry["last_error"].startswith("INFERENCE_ERROR") and entry["last_error_at"]
        assert entry["output_schema_version"].startswith("sha256:")
        assert entry["output_schema"]["type"] == "object"
        assert entry["hardware"]["supports"] == ["cpu"] and entry["hardware"]["instance_kind"] == "cpu"
        assert declaration["hardware"]["type"] == "cpu"  # Triton's metrics here hold no GPU
        # the stub confined itself (this suite's machine has Landlock with network rules) and said so
        abi = entry["isolation"]["landlock_abi"]
        assert entry["isolation"]["level"] == "kernel" and abi >= 4, entry
        assert (await model(http, "rs_metrics"))["isolation"] == entry["isolation"]
        (status,) = (await client.status("rs_metrics", V)).models
        assert (status.isolation, status.landlock_abi) == ("kernel", abi)
        assert status.isolation_detail.startswith(f"Landlock ABI {abi}: files")
        checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
        jsonschema.Draft202012Validator(SCHEMA, format_checker=checker).validate(declaration)

        async with httpx.AsyncClient(timeout=10) as plain:
            text = (await plain.get(sidecar.core.settings.triton_metrics_url)).text
        frames = {
            tuple(sorted(re.findall(r'(\w+)="([^"]*)"', labels))): float(value)
            for labels, value in re.findall(r"^ruth_plugin_frames\{([^}]*)\} (\S+)$", text, re.M)
        }
        assert frames[(("camera", "cam1"), ("model_id", "rs_metrics"), ("version", "1.0.0"))] == 3.0, text
        assert frames[(("camera", "warmup"), ("model_id", "rs_metrics"), ("version", "1.0.0"))] == 1.0
        count = re.search(r'^ruth_plugin_infer_seconds_count\{model_id="rs_metrics",version="1.0.0"\} (\d+)$',
                          text, re.M)
        assert count is not None and int(count.group(1)) >= 4  # the warmup, the 3 frames, the calibration
