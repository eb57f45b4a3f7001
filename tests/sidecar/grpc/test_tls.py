"""TLS and mTLS on the AIRuntime port (certificates made with the openssl command line)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from sidecar.client import AIRuntimeClient
from sidecar.main import Sidecar, build_core


def _openssl(*args: str, cwd: Path) -> None:
    assert shutil.which("openssl"), "these tests make their certificates with the openssl command"
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by it."""
    root = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=ruth-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=root,
    )
    (root / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, extra in (("server", ["-extfile", "server.ext"]), ("client", [])):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=root,
        )
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "1", "-out", f"{name}.pem", *extra, cwd=root)  # fmt: skip
    return root


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
