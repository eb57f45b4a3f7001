from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lifecycle"))

from lifecycle_fakes import FakeControl, FakeEntries, FakeKiller

from sidecar.hardware import HardwareProbe
from sidecar.http import create_app
from sidecar.manager import LifecycleManager
from sidecar.operations import RuntimeOperations
from sidecar.recovery import RecoveryPolicy

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
async def ops(entries, tmp_path):
    manager = LifecycleManager(FakeControl(), entries, stub_killer=FakeKiller(),
                               policy=RecoveryPolicy(cooldown_s=60.0))
    probe = HardwareProbe(tegra_release=tmp_path / "none", nvml=None, smi=None)
    ops = RuntimeOperations(manager, hardware=probe, watch=False, tick_s=60.0)
    yield ops
    await ops.stop()


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sidecar")


@pytest.fixture
async def client(ops):
    async with _client(create_app(SimpleNamespace(admin_token=TOKEN), ops)) as client:
        yield client


@pytest.fixture
async def client_without_token(ops):
    async with _client(create_app(SimpleNamespace(admin_token=None), ops)) as client:
        yield client
