from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from ruthgen_testlib import TESTDATA, contract
from validation_cases import BROKEN_CASES

from ruthgen.discovery import MAX_YAML_BYTES, discover, scan, validate_plugin
from ruthgen.errors import UsageError


@pytest.fixture(scope="module")
def broken_reports() -> dict[str, object]:
    return {r.model_id: r for r in discover(TESTDATA / "broken")}


def test_every_broken_fixture_has_a_case() -> None:
    folders = {p.name for p in (TESTDATA / "broken").iterdir() if p.is_dir()}
    assert folders == set(BROKEN_CASES)


@pytest.mark.parametrize(("folder", "expected"), sorted(BROKEN_CASES.items()))
def test_discover_reports_invalid_with_check_and_path_when_plugin_is_broken(
    broken_reports: dict, folder: str, expected: tuple[str, str]
) -> None:
    report = broken_reports[folder]
    check, path = expected
    assert report.state == "INVALID"
    assert report.contract is None
    assert (check, path) in [(e.check, e.path) for e in report.errors]
    assert all(e.message for e in report.errors)


def test_discover_keeps_valid_plugins_when_others_are_broken(tmp_path: Path, make_plugin) -> None:
    make_plugin("good_one")
    make_plugin("bad_one", input={"type": "video", "format": "jpeg"})
    make_plugin("good_two")
    states = {r.model_id: r.state for r in discover(tmp_path / "models")}
    assert states == {"bad_one": "INVALID", "good_one": "VALID", "good_two": "VALID"}


def test_discover_finds_every_version_sorted_by_semver_when_several_exist(
    make_plugin, models_dir: Path
) -> None:
    for version in ("1.10.0", "1.2.0", "1.2.0-rc.1", "0.9.0"):
        make_plugin("multi", version)
    reports = discover(models_dir)
    assert [r.version for r in reports] == ["0.9.0", "1.2.0-rc.1", "1.2.0", "1.10.0"]
    assert reports[0].triton_name == "multi__0.9.0"


def test_scan_warns_and_ignores_when_version_folder_is_not_semver(make_plugin, models_dir: Path) -> None:
    make_plugin("demo")
    (models_dir / "demo" / "latest").mkdir()
    (models_dir / "demo" / ".hidden").mkdir()
    (models_dir / "empty_model").mkdir()
    found = scan(models_dir)
    assert [r.triton_name for r in found.reports] == ["demo__1.0.0"]
    assert any("demo/latest/" in w for w in found.warnings)
    assert any("empty_model/" in w for w in found.warnings)
    assert not any(".hidden" in w for w in found.warnings)


def test_discover_follows_symlinks_when_plugin_folders_are_links(
    tmp_path: Path, make_plugin, models_dir: Path
) -> None:
    real = make_plugin("demo")
    elsewhere = tmp_path / "store"
    elsewhere.mkdir()
    os.rename(real.parent, elsewhere / "demo")
    (models_dir / "demo").symlink_to(elsewhere / "demo", target_is_directory=True)
    (models_dir / "linked").mkdir()
    (models_dir / "linked" / "1.0.0").symlink_to(elsewhere / "demo" / "1.0.0", target_is_directory=True)
    reports = {r.triton_name: r for r in discover(models_dir)}
    assert reports["demo__1.0.0"].valid
    assert reports["linked__1.0.0"].errors[0].check == "model_id_mismatch"


def test_validate_plugin_reports_unreadable_when_model_yaml_exceeds_size_cap(make_plugin) -> None:
    folder = make_plugin("big")
    with (folder / "model.yaml").open("a") as handle:
        handle.write("#" * (MAX_YAML_BYTES + 1))
    report = validate_plugin(folder, "big", "1.0.0")
    assert [(e.check, e.path) for e in report.errors] == [("model_yaml_unreadable", "model.yaml")]
    assert "KiB" in report.errors[0].message


def test_validate_plugin_refuses_python_tags_when_yaml_is_unsafe(make_plugin) -> None:
    folder = make_plugin("unsafe")
    (folder / "model.yaml").write_text("model_id: !!python/object/apply:os.system ['true']\n")
    report = validate_plugin(folder, "unsafe", "1.0.0")
    assert report.errors[0].check == "model_yaml_invalid"


def test_validate_plugin_warns_when_fields_are_unknown(make_plugin) -> None:
    folder = make_plugin(
        "demo", future_field={"x": 1}, input={"type": "frame", "format": "png", "colour": "rgb"}
    )
    report = validate_plugin(folder, "demo", "1.0.0")
    assert report.valid
    assert sorted(w.path for w in report.warnings if w.check == "unknown_field") == [
        "future_field",
        "input.colour",
    ]


def test_validate_plugin_warns_when_weights_folder_is_missing(make_plugin) -> None:
    folder = make_plugin("demo")
    (folder / "weights" / "model.bin").unlink()
    (folder / "weights").rmdir()
    report = validate_plugin(folder, "demo", "1.0.0")
    assert report.valid
    assert [w.check for w in report.warnings] == ["weights_missing"]


def test_validate_plugin_turns_off_absent_default_entry_points_when_files_are_missing(make_plugin) -> None:
    folder = make_plugin("demo", files={"postprocessing.py": "def postprocess(o, c):\n    return o\n"})
    entry_points = validate_plugin(folder, "demo", "1.0.0").contract.entry_points
    assert (entry_points.inference, entry_points.preprocess, entry_points.postprocess) == (
        "inference.py",
        None,
        "postprocessing.py",
    )


def test_validate_plugin_fills_requirements_when_requirements_txt_exists(make_plugin) -> None:
    folder = make_plugin("demo", files={"requirements.txt": "six==1.17.0\n"})
    deps = validate_plugin(folder, "demo", "1.0.0").contract.dependencies
    assert deps is not None and deps.requirements == "requirements.txt"


@pytest.mark.parametrize(
    ("hardware", "target", "valid"),
    [
        ({"supports_cpu": True}, "cpu", True),
        ({"supports_cpu": False, "supports_gpu": True}, "cpu", False),
        ({"supports_cpu": True}, "gpu", True),
        ({"supports_cpu": False, "supports_gpu": True}, "gpu", True),
        ({"supports_cpu": False, "supports_gpu": False}, "gpu", False),
        ({"supports_cpu": True, "supports_jetson": False}, "jetson", False),
        ({"supports_cpu": False, "supports_jetson": True}, "jetson", True),
    ],
)
def test_validate_plugin_checks_hardware_against_target(
    make_plugin, hardware: dict, target: str, valid: bool
) -> None:
    folder = make_plugin("demo", hardware=hardware)
    report = validate_plugin(folder, "demo", "1.0.0", target)
    assert report.valid is valid
    if not valid:
        assert [e.check for e in report.errors] == ["hardware_incompatible"]


def test_validate_plugin_reports_every_problem_when_contract_has_several(make_plugin) -> None:
    folder = make_plugin("demo")
    raw = contract("demo", input={"type": "video", "format": "bmp"}, timeouts={"inference_ms": 10**9})
    raw.pop("display_name")
    (folder / "model.yaml").write_text(yaml.safe_dump(raw))
    checks = {e.check for e in validate_plugin(folder, "demo", "1.0.0").errors}
    assert checks == {"unknown_input_type", "unknown_input_format", "bad_timeouts", "required_field_missing"}


def test_scan_raises_usage_error_when_models_folder_or_target_is_wrong(
    tmp_path: Path, models_dir: Path
) -> None:
    with pytest.raises(UsageError):
        scan(tmp_path / "missing")
    with pytest.raises(UsageError):
        scan(models_dir, target="tpu")


def test_validate_plugin_names_the_check_when_model_yaml_is_empty(make_plugin) -> None:
    plugin = make_plugin("blank")
    (plugin / "model.yaml").write_text("")
    report = validate_plugin(plugin, "blank", "1.0.0")
    assert report.state == "INVALID"
    assert [(e.check, e.path) for e in report.errors] == [("model_yaml_empty", "model.yaml")]


def test_plugin_report_seal_adds_a_check_when_invalid_without_errors(tmp_path: Path) -> None:
    from ruthgen.discovery import PluginReport

    report = PluginReport("m", "1.0.0", tmp_path).seal()
    assert report.state == "INVALID"
    assert [e.check for e in report.errors] == ["validation_incomplete"]


def test_validate_plugin_warns_when_the_phase_limits_exceed_the_runtimes_timeout(make_plugin, monkeypatch):
    limits = {"preprocess_ms": 1000, "inference_ms": 30000, "postprocess_ms": 1000}
    plugin = make_plugin("patient", timeouts=limits)
    report = validate_plugin(plugin, "patient", "1.0.0")
    assert report.state == "VALID"
    (warning,) = [w for w in report.warnings if w.check == "timeouts_exceed_runtime"]
    assert "32000 ms" in warning.message and "7000 ms" in warning.message and warning.path == "timeouts"
    monkeypatch.setenv("RUTH_REQUEST_TIMEOUT_MS", "40000")
    assert not [w for w in validate_plugin(plugin, "patient", "1.0.0").warnings
                if w.check == "timeouts_exceed_runtime"]


@pytest.mark.parametrize(
    ("network", "valid"),
    [
        (["api.example.com:443", "10.0.0.0/8:8080", "[fd00::/8]:443", "127.0.0.1:*"], True),
        (True, True),
        (["api.example.com"], False),  # no port
        (["10.0.0.0/40:443"], False),
        (["api.example.com:70000"], False),
        ([], False),
    ],
)
def test_validate_plugin_checks_the_network_allowlist(make_plugin, network, valid) -> None:
    report = validate_plugin(make_plugin("netty", permissions={"network": network}), "netty", "1.0.0")
    assert report.valid is valid
    if not valid:
        assert [e.check for e in report.errors] == ["invalid_permissions"]
        assert report.errors[0].path.startswith("permissions.network")
