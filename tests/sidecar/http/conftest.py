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
            latency_ms: float = 1.0, model_ms: float | None = None) -> None:
    """One answered request, as the request pipeline reports it (``model_ms``: the model's own part)."""
    core._observe(route_of(core.manager.registry.get(model_id, version)), error, latency_ms, model_ms)


def admin_settings(token: str | None, allow_plaintext: bool = False) -> SimpleNamespace:
    return SimpleNamespace(admin_token=token, admin_allow_plaintext=allow_plaintext)


def app_client(app, address: str = "127.0.0.1", scheme: str = "http") -> httpx.AsyncClient:
    """A client of ``app`` as if it connected from ``address`` (no socket: the ASGI scope says so)."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url=f"{scheme}://sidecar")


@pytest.fixture
async def client(runtime):
    async with app_client(create_app(admin_settings(TOKEN), runtime)) as client:
        yield client


@pytest.fixture
async def client_without_token(runtime):
    async with app_client(create_app(admin_settings(None), runtime)) as client:
        yield client
