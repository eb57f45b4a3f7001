"""``ruthgen up``: the model table (unit), and build + serve + sidecar + Ctrl-C end to end."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ruthgen.embedded import cleanup
from ruthgen.embedded.up import ModelRow, UpOptions, format_table, model_rows
from ruthgen.scaffold import scaffold_plugin
from ruthstack.stack import SidecarOptions, running_stack
from tests.terminal import run_in_terminal


def _record(model_id: str, version: str, state: str = "VALID", **extra) -> dict:
    name = f"{model_id}__{version}"
    record = {"model_id": model_id, "version": version, "triton_name": name, "state": state, "path": name}
    return {**record, **extra}


MANIFEST = {
    "models": [
        _record("a", "1.0.0"),
        _record("b", "2.0.0"),
        _record("c", "1.0.0"),
        _record("d", "1.0.0", "INVALID", errors=[{"check": "missing_file", "message": "no inference.py"}]),
    ]
}
INDEX = [
    {"name": "a__1.0.0", "version": "1", "state": "READY", "reason": ""},
    {"name": "b__2.0.0", "version": "1", "state": "UNAVAILABLE", "reason": "Internal: boom\ntraceback"},
]


def test_model_rows_joins_manifest_with_triton_states():
    assert model_rows(MANIFEST, INDEX) == [
        ModelRow("a", "1.0.0", "a__1.0.0", "READY", ""),
        ModelRow("b", "2.0.0", "b__2.0.0", "UNAVAILABLE", "Internal: boom\ntraceback"),
        ModelRow("c", "1.0.0", "c__1.0.0", "NOT LOADED", ""),
        ModelRow("d", "1.0.0", "d__1.0.0", "INVALID", "missing_file: no inference.py"),
    ]


def test_format_table_aligns_columns_and_keeps_first_reason_line():
    lines = format_table(model_rows(MANIFEST, INDEX)).splitlines()
    assert lines[0].split() == ["STATE", "MODEL", "VERSION", "TRITON", "NAME", "REASON"]
    assert len({line.index(" a__") if " a__" in line else None for line in lines[1:2]}) == 1
    assert lines[2].endswith("Internal: boom")
    assert lines[4].startswith("INVALID ")


def test_format_table_says_so_when_no_plugins():
    assert format_table([]).endswith("no plugins found")


def _sidecar_http_url(log: Path, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(r"HTTP \(probes.*\) on ([0-9.]+:\d+)", log.read_text() if log.exists() else "")
        if found:
            return f"http://{found.group(1)}"
        time.sleep(0.1)
    raise AssertionError(f"the sidecar logged no HTTP address in {log}")


def _wait_for_state(http: str, model_id: str, version: str, state: str, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        models = httpx.get(f"{http}/models", timeout=5).json()["models"]
        if any((m["model_id"], m["version"], m["state"]) == (model_id, version, state) for m in models):
            return True
        time.sleep(0.2)
    return False


#: A model's last step: with the wrapper's warmup time when the wrapper's line reached Triton's log
#: before Triton's own "successfully loaded" (the two are written by different processes).
READY = r"READY(, warmup [\d.]+ ms)?"


def _plugins(root: Path) -> Path:
    models = root / "models"
    scaffold_plugin(models, "alpha", "1.0.0")
    scaffold_plugin(models, "alpha", "1.1.0")
    broken = models / "broken" / "1.0.0"
    broken.mkdir(parents=True)
    (broken / "model.yaml").write_text("model_id: broken\n")
    return models


@pytest.mark.integration
def test_running_stack_serves_every_valid_model_and_stops(tmp_path):
    models = _plugins(tmp_path)
    options = UpOptions(models_dir=models, repository=tmp_path / "repo", log_path=tmp_path / "log.txt")
    companion = SidecarOptions(port=0, http_port=0, log_path=tmp_path / "sidecar.log")
    with running_stack(options, companion) as stack:
        rows = {(row.model_id, row.version): row.state for row in stack.models()}
        prefix = stack.triton.shm_prefix
        assert stack.triton.is_ready()
        assert stack.sidecar is not None and not stack.sidecar.address.endswith(":0")
    assert rows == {("alpha", "1.0.0"): "READY", ("alpha", "1.1.0"): "READY", ("broken", "1.0.0"): "INVALID"}
    assert not stack.triton.running
    assert cleanup.stub_pids(prefix) == [] and cleanup.shm_regions(prefix) == []


@pytest.mark.integration
def test_up_command_prints_table_and_stops_on_ctrl_c(tmp_path):
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "ruthgen"), "up", "-m", str(_plugins(tmp_path)),
         "-o", str(tmp_path / "repo"), "--log-file", str(tmp_path / "log.txt"), "--sidecar-port", "0",
         "--sidecar-http-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )
    output = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and (line := process.stdout.readline()):
            output.append(line)
            if line.startswith("Ctrl-C stops it."):
                break
        text = "".join(output)
        for version in ("1.0.0", "1.1.0"):  # a line per step: not a terminal
            assert f"alpha {version}: loading in Triton [" in text, text
            assert re.search(rf"^alpha {version}: warming up \(loaded in \d+ ms\) \[", text, re.M), text
            assert re.search(rf"^alpha {version}: {READY} \(\d+\.\d s\)$", text, re.M), text
        assert re.search(r"^sidecar: serving on 127\.0\.0\.1:\d+ \(", text, re.M), text
        assert re.search(r"^READY\s+alpha\s+1\.0\.0\s+alpha__1\.0\.0", text, re.M), text
        assert re.search(r"^READY\s+alpha\s+1\.1\.0\s+alpha__1\.1\.0", text, re.M), text
        assert re.search(r"^INVALID\s+broken\s+1\.0\.0", text, re.M), text
        # The sidecar that `up` started watches the plugins: a version copied in is served, no restart.
        http = _sidecar_http_url(tmp_path / ".ruth" / "sidecar.log")
        scaffold_plugin(tmp_path / "models", "alpha", "2.0.0")
        assert _wait_for_state(http, "alpha", "2.0.0", "READY"), text
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, rest
    assert rest.strip().endswith("stopped")


@pytest.mark.integration
def test_up_command_shows_the_models_loading_as_live_rows_on_a_terminal(tmp_path):
    """The rows as last drawn, each ticked with its outcome, then the table. The rows are redrawn a few
    times a second, so a short step may never be drawn: the plain lines above check each step."""
    seen = run_in_terminal(
        [str(Path(sys.executable).parent / "ruthgen"), "up", "-m", str(_plugins(tmp_path)),
         "-o", str(tmp_path / "repo"), "--log-file", str(tmp_path / "log.txt"), "--sidecar-port", "0",
         "--sidecar-http-port", "0"],
        env={k: v for k, v in os.environ.items() if not k.startswith("RUTH_")}, cwd=tmp_path,
        interrupt_after="Ctrl-C stops it.", timeout_s=240,
    )
    assert seen.returncode == 0, seen.text[-3000:]
    assert "\x1b[" in seen.raw  # colours and redraws: rich rows, then a rich table
    text = seen.text
    for version in ("1.0.0", "1.1.0"):  # each row ends ticked, with how long it took
        assert re.search(rf"^✓ alpha {version}\s+{READY}\s+\d+:\d\d:\d\d$", text, re.M), text
    assert re.search(r"^✓ tritonserver\s+ready on 127\.0\.0\.1:\d+ \(gRPC\)", text, re.M), text
    assert re.search(r"^✓ sidecar\s+serving on 127\.0\.0\.1:\d+", text, re.M), text
    assert re.search(r"^READY\s+alpha\s+1\.1\.0\s+alpha__1\.1\.0", text, re.M), text
    assert re.search(r"^INVALID\s+broken\s+1\.0\.0", text, re.M), text
    assert text.rstrip().endswith("stopped")
