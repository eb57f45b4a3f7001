"""A real grpc.aio AIRuntime server on port 0 in front of the fake Triton, and a client."""

from __future__ import annotations

import pytest

from sidecar.client import AIRuntimeClient
from sidecar.main import Sidecar


@pytest.fixture
async def sidecar(settings, fake_triton):
    running = Sidecar(settings)
    running.core.adapter = fake_triton
    running.core.lifecycle.adapter = fake_triton
    await running.start()
    yield running
    await running.stop(grace=0.5)


@pytest.fixture
async def client(sidecar):
    async with AIRuntimeClient(f"127.0.0.1:{sidecar.port}") as runtime_client:
        yield runtime_client
