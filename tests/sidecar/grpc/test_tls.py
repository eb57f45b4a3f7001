"""TLS and mTLS on the AIRuntime port (certificates from the ``pki`` fixture, tests/pki.py)."""

from __future__ import annotations

import grpc
import pytest

from sidecar.client import AIRuntimeClient
from sidecar.main import Sidecar, build_core


async def _serve(settings, fake_triton, **tls):
    configured = settings.model_copy(update=tls)
    running = Sidecar(configured, build_core(configured, fake_triton))
    await running.start()
    return running


async def test_sidecar_serves_tls_and_requires_client_certificate_with_mtls(settings, fake_triton, pki):
    running = await _serve(
        settings, fake_triton, tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key",
        tls_client_ca_file=pki / "ca.pem",
    )  # fmt: skip
    target = f"127.0.0.1:{running.port}"
    ca = (pki / "ca.pem").read_bytes()
    try:
        with_cert = grpc.ssl_channel_credentials(
            ca, (pki / "client.key").read_bytes(), (pki / "client.pem").read_bytes()
        )
        async with AIRuntimeClient(target, with_cert) as client:
            assert (await client.health()).inference_server_ready
        async with AIRuntimeClient(target, grpc.ssl_channel_credentials(ca)) as client:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.health(timeout_s=2)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        async with AIRuntimeClient(target) as client:  # plaintext against TLS
            with pytest.raises(grpc.aio.AioRpcError):
                await client.health(timeout_s=2)
    finally:
        await running.stop(grace=0.5)


async def test_sidecar_serves_tls_without_client_certificates(settings, fake_triton, pki):
    running = await _serve(
        settings, fake_triton, tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key"
    )
    try:
        credentials = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes())
        async with AIRuntimeClient(f"127.0.0.1:{running.port}", credentials) as client:
            assert (await client.health()).inference_server_ready
    finally:
        await running.stop(grace=0.5)
