"""Certificates for the TLS tests, made with the openssl command line: a CA, a server certificate
for 127.0.0.1/localhost and a client certificate, both signed by it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    assert shutil.which("openssl"), "the TLS tests make their certificates with the openssl command"
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(root: Path) -> Path:
    """``ca.pem``/``ca.key``, ``server.pem``/``server.key`` and ``client.pem``/``client.key`` in ``root``."""
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ruth-test-ca",
        "-keyout", "ca.key", "-out", "ca.pem", cwd=root,
    )  # fmt: skip
    (root / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, extra in (("server", ["-extfile", "server.ext"]), ("client", [])):
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=root,
        )  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "1", "-out", f"{name}.pem", *extra, cwd=root)  # fmt: skip
    return root
