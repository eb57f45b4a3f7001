"""``ruthgen triton`` / ``python -m ruthgen.embedded``: in-process for errors, as a subprocess for signals."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
import typer
from typer.testing import CliRunner

from ruthgen.embedded import cleanup, commands

READY_LINE = re.compile(r"^\s+grpc\s+(\S+)$")


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(commands.triton)
    return app


def test_triton_command_exits_with_error_code_when_repository_missing(tmp_path):
    result = CliRunner().invoke(_app(), ["--repository", str(tmp_path / "missing")])
    assert result.exit_code == 4
    assert "is not a folder" in result.output


def _serve(repository, log_file) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "ruthgen.embedded", "-r", str(repository), "--load", "echo",
         "--log-file", str(log_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 60
    output = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        if match := READY_LINE.match(line):
            return process, match.group(1)
    process.kill()
    pytest.fail("the command did not report a ready server:\n" + "".join(output))


@pytest.mark.integration
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_triton_command_serves_until_signal_then_leaves_nothing(repository, tmp_path, signum):
    process, grpc_url = _serve(repository, tmp_path / "log.txt")
    try:
        client = grpcclient.InferenceServerClient(grpc_url)
        assert client.is_model_ready("echo")
        client.close()
        prefixes = set(re.findall(r"shm-region-prefix-name=(\w+)", _server_cmdline(process.pid)))
        assert len(prefixes) == 1
        process.send_signal(signum)
        rest, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, rest
    assert "stopped" in rest
    prefix = prefixes.pop()
    assert cleanup.stub_pids(prefix) == [] and cleanup.shm_regions(prefix) == []


def _server_cmdline(parent_pid: int) -> str:
    """The command lines of ``parent_pid``'s children (the tritonserver)."""
    children = Path(f"/proc/{parent_pid}/task/{parent_pid}/children").read_text().split()
    cmdlines = (Path(f"/proc/{pid}/cmdline").read_bytes().decode() for pid in children)
    return "\n".join(cmdline.replace("\0", " ") for cmdline in cmdlines)
