"""The HTTP port over TLS with the gRPC port's certificate (a real sidecar on loopback ports, fake
Triton; certificates from the ``pki`` fixture, tests/pki.py)."""

from __future__ import annotations

import ssl

import httpx
import pytest

from sidecar.main import Sidecar, build_core
from tests.sidecar.http.conftest import app_client

TOKEN = "admin-over-tls"


@pytest.fixture
async def tls_sidecar(settings, fake_triton, pki):
    configured = settings.model_copy(update={
        "http_port": 0, "http_tls": True, "admin_token": TOKEN,
        "tls_cert_file": pki / "server.pem", "tls_key_file": pki / "server.key",
    })  # fmt: skip
    running = Sidecar(configured, build_core(configured, fake_triton))
    await running.start()
    yield running
    await running.stop(grace=0.5)


async def test_http_port_serves_tls_and_the_admin_call_over_it(tls_sidecar, pki):
    verified = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    base = f"https://127.0.0.1:{tls_sidecar.http_port}"
    async with httpx.AsyncClient(base_url=base, verify=verified) as client:
        assert (await client.get("/livez")).json() == {"live": True}
        rescanned = await client.post("/admin/rescan", headers={"Authorization": f"Bearer {TOKEN}"})
    assert rescanned.status_code == 200, rescanned.text
    assert {m["model_id"] for m in rescanned.json()["models"]} >= {"alpha", "beta"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{tls_sidecar.http_port}") as plain:
        with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port
            await plain.get("/livez")


async def test_admin_call_over_plain_http_from_a_non_loopback_address_is_refused(settings, fake_triton):
    configured = settings.model_copy(update={"http_port": 0, "admin_token": TOKEN})
    async with Sidecar(configured, build_core(configured, fake_triton)) as running:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.http_port}") as local:
            assert (await local.post("/admin/rescan", headers=headers)).status_code == 200
        assert running.http is not None
        async with app_client(running.http.app, "10.20.30.40") as remote:  # as if from the pod network
            refused = await remote.post("/admin/rescan", headers=headers)
    assert refused.status_code == 403 and "loopback only" in refused.json()["error"]["message"]
