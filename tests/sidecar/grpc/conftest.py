"""A real grpc.aio AIRuntime server on port 0 in front of the fake Triton, and a client."""

from __future__ import annotations

import pytest

from sidecar.client import AIRuntimeClient
from sidecar.main import Sidecar, build_core


@pytest.fixture
async def sidecar(settings, fake_triton):
    running = Sidecar(settings, build_core(settings, fake_triton))
    await running.start()
    yield running
    await running.stop(grace=0.5)


@pytest.fixture
async def client(sidecar):
    async with AIRuntimeClient(f"127.0.0.1:{sidecar.port}") as runtime_client:
        yield runtime_client
