"""The sidecar's limits against the real embedded tritonserver: the stream caps, a client frozen
with SIGSTOP (its stream closed by keepalive, its model's leases back to zero), the idle timeout,
and the HTTP port's TLS and admin checks."""

from __future__ import annotations

import asyncio
import io
import ssl
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from sidecar.client import AIRuntimeClient, make_request, result_dict
from sidecar.main import Sidecar
from sidecar.settings import load_settings
from tests.fixture_repos import fixture_repository
from tests.sidecar.abuse import frozen_stream_client, until
from tests.sidecar.http.conftest import app_client

pytestmark = pytest.mark.integration

V = "1.0.0"
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # a channel of its own: its own connection


def _jpeg() -> bytes:
    pixels = np.random.default_rng(1).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


FRAME = _jpeg()


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    return fixture_repository(tmp_path_factory, ("sc_echo", "sc_hang"))


@pytest.fixture(scope="module")
def triton(module_triton_factory, repository):
    return module_triton_factory(repository, load_models=[])


def _settings(triton, repository, **overrides):
    return load_settings(
        grpc_port=0, http_port=0, triton_url=triton.grpc_url, model_repository=repository,
        refresh_interval_s=0.5, calibrate=False, **overrides,
    )  # fmt: skip


async def _open(client: AIRuntimeClient, frame_id: str) -> grpc.aio.StreamStreamCall:
    call = client.open_stream()
    await call.write(make_request("sc_echo", V, FRAME, frame_id=frame_id))
    answer = await asyncio.wait_for(call.read(), 10)
    assert result_dict(answer)["frame_id"] == frame_id, answer
    return call



async def test_stream_cap_refuses_the_next_stream_and_keeps_the_others_serving(triton, repository):
    settings = _settings(triton, repository, max_streams=3, max_streams_per_connection=2)
    async with Sidecar(settings) as running:
        target = f"127.0.0.1:{running.port}"
        clients = [AIRuntimeClient(target, options=OWN_CONNECTION) for _ in range(3)]
        try:
            calls = [await _open(clients[0], "a0"), await _open(clients[0], "a1")]
            refusals = []
            for client in (clients[0], None, clients[2]):
                if client is None:  # a second connection still gets the last place
                    calls.append(await _open(clients[1], "b0"))
                    continue
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    # read, not write: a write the refusal overtakes comes back INTERNAL from grpcio's
                    # client (grpc/grpc#36066), whatever the server sent
                    call = client.open_stream()
                    await asyncio.wait_for(call.read(), 10)
                refusals.append(refused.value)
            assert [r.code() for r in refusals] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
            assert "max_streams_per_connection" in refusals[0].details()
            assert "(max_streams)" in refusals[1].details()
            assert all(("ruth-error-code", "OVERLOADED") in tuple(r.trailing_metadata()) for r in refusals)
            for n, call in enumerate(calls):  # every admitted stream still serves
                await call.write(make_request("sc_echo", V, FRAME, frame_id=f"more{n}"))
                assert result_dict(await asyncio.wait_for(call.read(), 10))["frame_id"] == f"more{n}"
            unary = await clients[2].infer("sc_echo", V, FRAME, frame_id="unary")  # unary is not capped
            assert result_dict(unary)["frame_id"] == "unary"
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.http_port}") as http:
                metrics = (await http.get("/metrics")).text
            assert "ruth_streams_open 3.0" in metrics and "ruth_stream_connections 2.0" in metrics
            assert 'ruth_streams_refused_total{limit="connection"} 1.0' in metrics
            assert 'ruth_streams_refused_total{limit="process"} 1.0' in metrics
        finally:
            for client in clients:
                await client.close()
        assert await until(lambda: running.core.streams.open == 0, 30)


async def test_frozen_client_stream_is_closed_by_keepalive_and_its_leases_end(triton, repository, tmp_path):
    # sc_hang answers after 6 s; the request deadline is longer: only keepalive can end this stream sooner
    settings = _settings(triton, repository, grpc_keepalive_time_s=1.0, grpc_keepalive_timeout_s=1.0,
                         request_timeout_ms=30_000, stream_idle_timeout_s=0)  # fmt: skip
    frame = tmp_path / "frame.jpg"
    frame.write_bytes(FRAME)
    async with Sidecar(settings) as running:
        leases, streams = running.core.leases, running.core.streams
        loop = asyncio.get_running_loop()
        with frozen_stream_client(f"127.0.0.1:{running.port}", "sc_hang", V, frame):
            frozen = loop.time()
            assert await until(lambda: leases.count(f"sc_hang__{V}") == 1, 30), "the frame never arrived"
            assert streams.open == 1
            closed = await until(lambda: streams.open == 0 and leases.count(f"sc_hang__{V}") == 0, 30)
            reaped_s = loop.time() - frozen
        assert closed, "the frozen client's stream still holds its place or its lease"
        assert reaped_s < 6.0, reaped_s  # keepalive 1 s + timeout 1 s; the model would answer at 6 s
        async with AIRuntimeClient(f"127.0.0.1:{running.port}") as client:  # the runtime serves on
            after = await client.infer("sc_echo", V, FRAME, frame_id="after")
        assert result_dict(after)["frame_id"] == "after"


async def test_idle_stream_is_closed_and_holds_nothing(triton, repository):
    settings = _settings(triton, repository, stream_idle_timeout_s=0.5)
    async with Sidecar(settings) as running, AIRuntimeClient(f"127.0.0.1:{running.port}") as client:
        call = await _open(client, "once")
        with pytest.raises(grpc.aio.AioRpcError) as closed:
            await asyncio.wait_for(call.read(), 5)
        assert closed.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "stream_idle_timeout_s" in closed.value.details()
        assert running.core.streams.open == 0 and running.core.streams.closed_idle == 1
        assert running.core.leases.count(f"sc_echo__{V}") == 0


async def test_admin_call_works_over_tls_and_is_refused_in_clear_from_afar(triton, repository, pki):
    settings = _settings(triton, repository, http_tls=True, admin_token="t0ken",
                         tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key")  # fmt: skip
    headers = {"Authorization": "Bearer t0ken"}
    async with Sidecar(settings) as running:
        verified = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        base = f"https://127.0.0.1:{running.http_port}"
        async with httpx.AsyncClient(base_url=base, verify=verified) as https:
            rescanned = await https.post("/admin/rescan", params={"model_id": "sc_echo"}, headers=headers)
            assert (await https.get("/readyz")).status_code == 200
        assert rescanned.status_code == 200, rescanned.text
        assert [(m["model_id"], m["state"]) for m in rescanned.json()["models"]] == [("sc_echo", "READY")]
        assert running.http is not None
        async with app_client(running.http.app, "10.20.30.40") as remote:  # plain HTTP, from the pod network
            refused = await remote.post("/admin/rescan", headers=headers)
        assert refused.status_code == 403 and "loopback only" in refused.json()["error"]["message"]
        credentials = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes())
        async with AIRuntimeClient(f"127.0.0.1:{running.port}", credentials) as client:  # gRPC: same files
            assert (await client.health()).inference_server_ready
