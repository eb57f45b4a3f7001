"""`ruthgen infer` without a sidecar to talk to (the served case is in tests/integration)."""

from __future__ import annotations

import socket

from typer.testing import CliRunner

from ruthstack.cli import app
from tests.sidecar.conftest import image_bytes


def test_infer_command_exits_2_when_sidecar_is_unreachable(tmp_path):
    image = tmp_path / "f.png"
    image.write_bytes(image_bytes(fmt="PNG"))
    with socket.socket() as probe:  # a port held and never listened on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
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


def _usage(tmp_path, *arguments: str):
    image = tmp_path / "f.png"
    image.write_bytes(image_bytes(fmt="PNG"))
    video = tmp_path / "v.mp4"
    video.write_bytes(b"never read")
    words = [w.replace("IMAGE", str(image)).replace("VIDEO", str(video)) for w in arguments]
    return CliRunner().invoke(app, ["infer", "--model", "m", "--version", "1.0.0", *words])


def test_infer_command_exits_2_when_given_both_images_and_a_video_or_neither(tmp_path):
    for arguments in (("IMAGE", "--video", "VIDEO"), ()):
        result = _usage(tmp_path, *arguments)
        assert result.exit_code == 2
        assert "give images (files or folders) or --video FILE, not both" in result.output


def test_infer_command_exits_2_when_realtime_is_asked_without_a_video_rate(tmp_path):
    for arguments in (("IMAGE", "--realtime"), ("--video", "VIDEO", "--realtime", "--fps", "5")):
        result = _usage(tmp_path, *arguments)
        assert result.exit_code == 2
        assert "--realtime sends a --video at its own frame rate" in result.output


def test_infer_command_exits_2_when_the_video_cannot_be_read(tmp_path):
    result = _usage(tmp_path, "--video", "VIDEO")
    assert result.exit_code == 2
    assert "cannot read the video" in result.output


def test_infer_command_exits_2_unless_each_model_has_its_version(tmp_path):
    image = tmp_path / "f.png"
    image.write_bytes(image_bytes(fmt="PNG"))
    models = ["--model", "a", "--version", "1.0.0", "--model", "b"]
    result = CliRunner().invoke(app, ["infer", *models, str(image)])
    assert result.exit_code == 2 and "one --version for each --model" in result.output
    both = ["--model", "a", "--version", "1.0.0", "--model", "b", "--version", "2.0.0"]
    result = CliRunner().invoke(app, ["infer", *both, "--annotate", str(tmp_path / "o.png"), str(image)])
    assert result.exit_code == 2 and "--annotate draws one model's answers" in result.output
