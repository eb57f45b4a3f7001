"""`ruthgen infer` without a sidecar to talk to (the served case is in tests/integration)."""

from __future__ import annotations

import socket

from typer.testing import CliRunner

from ruthstack.cli import app
from tests.sidecar.conftest import image_bytes


def test_infer_command_exits_2_when_sidecar_is_unreachable(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    image = tmp_path / "f.png"
    image.write_bytes(image_bytes(fmt="PNG"))
    result = CliRunner().invoke(
        app,
        [
            "infer",
            "--model",
            "m",
            "--version",
            "1.0.0",
            "--sidecar",
            f"127.0.0.1:{port}",
            "--timeout",
            "1",
            str(image),
        ],
    )
    assert result.exit_code == 2
    assert "cannot reach the sidecar" in result.output
