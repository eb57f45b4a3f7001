"""The HTTP app (httpx's ASGI transport, no socket) over a runtime core whose Triton and entry
source are fakes; tests/integration/test_lifecycle.py serves the same routes for real."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lifecycle"))

from lifecycle_fakes import FakeEntries

from sidecar.control.manager import route_of
from sidecar.core import RuntimeCore
from sidecar.errors import SidecarError
from sidecar.http import create_app
from sidecar.report.hardware import HardwareProbe
from sidecar.settings import load_settings

TOKEN = "admin-s3cret"


@pytest.fixture
def token() -> str:
    return TOKEN


@pytest.fixture
def entries() -> FakeEntries:
    entries = FakeEntries()
    entries.add("fall_detection", "1.0.0", hint_ms=20.0)
    entries.add("broken", "0.1.0", valid=False, reason="model_yaml_invalid: not YAML")
    return entries


@pytest.fixture
async def runtime(entries, fake_triton, tmp_path):
    settings = load_settings(http_port=None, calibrate=False, recovery_cooldown_s=60.0,
                             triton_connect_timeout_s=0.5, refresh_interval_s=60.0)
    probe = HardwareProbe(tegra_release=tmp_path / "none", nvml=None, smi=None)
    core = RuntimeCore(settings, fake_triton, entries, hardware=probe)
    yield core
    await core.stop()


def observe(core: RuntimeCore, model_id: str, version: str, error: SidecarError | None = None,
            latency_ms: float = 1.0) -> None:
    """One answered request, as the request pipeline reports it."""
    core._observe(route_of(core.manager.registry.get(model_id, version)), error, latency_ms)


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sidecar")


@pytest.fixture
async def client(runtime):
    async with _client(create_app(SimpleNamespace(admin_token=TOKEN), runtime)) as client:
        yield client


@pytest.fixture
async def client_without_token(runtime):
    async with _client(create_app(SimpleNamespace(admin_token=None), runtime)) as client:
        yield client
