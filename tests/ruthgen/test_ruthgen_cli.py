from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ruthgen_testlib import TESTDATA
from typer.testing import CliRunner

from ruthgen.cli import app
from ruthgen.manifest import load_manifest

runner = CliRunner()
MODEL_KEYS = {"model_id", "version", "state", "triton_name", "errors", "warnings"}


def _json(result) -> dict:
    assert result.stdout.strip(), result.output
    return json.loads(result.stdout)


def test_validate_exits_0_and_prints_table_when_every_plugin_is_valid() -> None:
    result = runner.invoke(app, ["validate", "--models", str(TESTDATA / "valid")])
    assert result.exit_code == 0, result.output
    assert "VALID  frame_jpeg    1.1.0-rc.1  frame_jpeg__1.1.0-rc.1" in result.stdout


def test_validate_exits_1_with_json_errors_when_a_plugin_is_invalid() -> None:
    result = runner.invoke(app, ["validate", "--models", str(TESTDATA / "broken"), "--json"])
    assert result.exit_code == 1
    models = _json(result)["models"]
    assert {m["state"] for m in models} == {"INVALID"}
    assert all(set(m) >= MODEL_KEYS for m in models)
    bad = next(m for m in models if m["model_id"] == "unknown_input_format")
    assert bad["errors"] == [
        {
            "check": "unknown_input_format",
            "message": "input.format must be one of jpeg, png, raw_rgb, raw_bgr, got 'bmp'",
            "path": "input.format",
        }
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "--models", "/nonexistent/models"],
        ["validate", "--target", "tpu"],
        ["validate", "--no-such-flag"],
        ["build", "--target", "x"],
        ["new", "Not-An-Id"],
    ],
)
def test_commands_exit_2_when_usage_is_wrong(args: list[str], tmp_path: Path) -> None:
    result = runner.invoke(app, [*args] if args[0] != "new" else [*args, "--models", str(tmp_path)])
    assert result.exit_code == 2, result.output


def test_build_exits_0_and_reports_where_entries_were_written_when_some_are_invalid(tmp_path: Path) -> None:
    models = tmp_path / "models"
    import shutil

    shutil.copytree(TESTDATA / "valid", models)
    shutil.copytree(TESTDATA / "broken" / "bad_timeouts", models / "bad_timeouts")
    out = tmp_path / "repo"
    result = runner.invoke(app, ["build", "--models", str(models), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = _json(result)
    by_name = {m["model_id"] + "/" + m["version"]: m for m in data["models"]}
    assert by_name["frame_jpeg/1.0.0"]["path"] == str(out / "frame_jpeg__1.0.0")
    assert by_name["frame_jpeg/1.0.0"]["action"] == "written"
    assert (
        by_name["bad_timeouts/1.0.0"]["state"] == "INVALID" and by_name["bad_timeouts/1.0.0"]["path"] is None
    )
    assert all(set(m) >= MODEL_KEYS for m in data["models"])
    strict = runner.invoke(app, ["build", "--models", str(models), "--out", str(out), "--strict"])
    assert strict.exit_code == 1
    assert "0 written, 3 unchanged, 0 removed" in strict.stdout


def test_list_prints_every_plugin_with_its_input_when_json_is_asked() -> None:
    result = runner.invoke(app, ["list", "--models", str(TESTDATA / "valid"), "--json"])
    assert result.exit_code == 0
    data = _json(result)
    assert [(m["triton_name"], m["input_type"]) for m in data["models"]] == [
        ("frame_jpeg__1.0.0", "frame"),
        ("frame_jpeg__1.1.0-rc.1", "frame"),
        ("temporal_raw__1.0.0", "temporal"),
    ]
    assert data["warnings"] == [
        "frame_jpeg/notes/: not a semantic version folder (MAJOR.MINOR.PATCH[-prerelease]), ignored"
    ]


def test_check_exits_1_when_a_config_is_not_a_model_config(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    assert runner.invoke(app, ["build", "-m", str(TESTDATA / "valid"), "-o", str(out)]).exit_code == 0
    assert runner.invoke(app, ["check", "--repo", str(out)]).exit_code == 0
    (out / "frame_jpeg__1.0.0" / "config.pbtxt").write_text(
        "name: 'frame_jpeg__1.0.0'\nmax_batch_size: many\n"
    )
    (out / "stray").mkdir()
    (out / "stray" / "config.pbtxt").write_text('name: "other"\nbackend: "onnxruntime"\n')
    result = runner.invoke(app, ["check", "--repo", str(out), "--json"])
    assert result.exit_code == 1
    problems = {(p["entry"], p["message"].split(":")[0].split(" ")[0]) for p in _json(result)["problems"]}
    assert problems == {("frame_jpeg__1.0.0", "config.pbtxt"), ("stray", "name"), ("stray", "backend")}


def test_new_scaffolds_a_plugin_that_validates_and_builds(tmp_path: Path) -> None:
    models, out = tmp_path / "models", tmp_path / "repo"
    result = runner.invoke(app, ["new", "crowd_counter", "--models", str(models), "--input-type", "batch"])
    assert result.exit_code == 0, result.output
    assert "(VALID)" in result.stdout
    assert runner.invoke(app, ["new", "crowd_counter", "--models", str(models)]).exit_code == 1
    assert runner.invoke(app, ["validate", "--models", str(models)]).exit_code == 0
    assert runner.invoke(app, ["build", "--models", str(models), "--out", str(out)]).exit_code == 0
    record = load_manifest(out)["models"][0]
    assert record["triton"]["max_batch_size"] == 4
    assert record["contract"]["input"]["type"] == "batch"
    assert record["warnings"] == []


def test_console_script_builds_and_validates_when_run_as_a_subprocess(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "ruthgen"
    out = tmp_path / "repo"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    built = subprocess.run(
        [str(script), "build", "--models", str(TESTDATA / "valid"), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    assert len(json.loads(built.stdout)["models"]) == 3
    assert (out / "temporal_raw__1.0.0" / "config.pbtxt").is_file()
    broken = subprocess.run(
        [str(script), "validate", "--models", str(TESTDATA / "broken")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert broken.returncode == 1
    assert "hardware_incompatible" in broken.stdout
    usage = subprocess.run(
        [str(script), "validate", "--target", "tpu"], capture_output=True, timeout=120, check=False
    )
    assert usage.returncode == 2


@pytest.mark.parametrize(("detected", "state"), [("cpu", "INVALID"), ("gpu", "VALID")])
def test_validate_checks_hardware_against_the_detected_machine_without_target(
    make_plugin, models_dir: Path, monkeypatch, detected: str, state: str
) -> None:
    import ruthgen.hardware

    make_plugin("gpu_only", hardware={"supports_cpu": False, "supports_gpu": True})
    monkeypatch.setattr(ruthgen.hardware, "detected_target", lambda: detected)
    result = runner.invoke(app, ["validate", "--models", str(models_dir), "--json"])
    assert _json(result)["models"][0]["state"] == state
    assert result.stderr == ""  # --json prints nothing but its JSON
    told = runner.invoke(app, ["validate", "--models", str(models_dir)])
    assert f"target: {detected} (detected" in told.stderr


def test_detected_target_follows_what_the_probe_finds(monkeypatch, tmp_path) -> None:
    import ruthgen.hardware as hardware

    class Gpu(hardware.HardwareProbe):
        def detect(self):
            return hardware.HardwareInfo.of_gpus([hardware.GpuInfo(0, name="T4")], "nvml")

    monkeypatch.setattr(hardware, "HardwareProbe", Gpu)
    assert hardware.detected_target() == "gpu"
