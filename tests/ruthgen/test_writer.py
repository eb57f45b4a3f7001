from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from ruthgen_testlib import RecordedProgress, tree_bytes

from ruthgen import envs, repofiles, wrapper, writer
from ruthgen.errors import BuildError, UsageError
from ruthgen.manifest import MANIFEST_FILE, check_repository, load_manifest
from ruthgen.writer import build_repository


def _inodes(repo: Path) -> dict[str, int]:
    return {p.relative_to(repo).as_posix(): p.lstat().st_ino for p in repo.rglob("*")}


def _siblings(repo: Path) -> list[str]:
    return sorted(p.name for p in repo.parent.iterdir() if p.name.startswith(f".{repo.name}."))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return tmp_path / "out" / "model_repository"


def test_build_writes_a_self_contained_entry_and_manifest_when_plugins_are_valid(
    make_plugin, models_dir: Path, repo: Path
) -> None:
    make_plugin("demo", files={"config.yaml": "k: 1\n", "lib/helper.py": "X = 1\n"})
    make_plugin("broken", input={"type": "video", "format": "jpeg"})
    result = build_repository(models_dir, repo)
    entry = repo / "demo__1.0.0"
    assert result.written == ["demo__1.0.0"]
    assert (entry / "config.pbtxt").is_file()
    assert (entry / "1" / "plugin" / "lib" / "helper.py").read_text() == "X = 1\n"
    assert (entry / "1" / "plugin" / "weights" / "model.bin").read_bytes() == b"\x00\x01weights"
    assert sorted(p.name for p in repo.iterdir()) == [".ruthgen-cache.json", "demo__1.0.0", MANIFEST_FILE]
    manifest = load_manifest(repo)
    assert manifest["manifest_version"] == 1 and manifest["target"] == "cpu"
    broken, demo = manifest["models"]
    assert broken["state"] == "INVALID" and "path" not in broken and "triton" not in broken
    assert broken["errors"][0]["check"] == "unknown_input_type"
    assert demo["path"] == "demo__1.0.0"
    assert demo["triton"]["max_batch_size"] == 0
    assert demo["contract"]["timeouts"] == {
        "preprocess_ms": 1000,
        "inference_ms": 5000,
        "postprocess_ms": 1000,
    }
    assert demo["output_json_schema"]["required"] == ["score"]
    assert demo["source_digest"].startswith("sha256:") and demo["contract_digest"].startswith("sha256:")
    assert json.loads((entry / "1" / "ruth_entry.json").read_text()) == demo
    assert (repo / MANIFEST_FILE).read_text().startswith('{\n  "manifest_version": 1,')
    assert check_repository(repo) == []
    assert _siblings(repo) == []


def test_build_copies_the_wrapper_and_renders_model_py(make_plugin, models_dir: Path, repo: Path) -> None:
    make_plugin("demo")
    make_plugin("other")
    build_repository(models_dir, repo)
    version_dir = repo / "demo__1.0.0" / "1"
    assert len(wrapper.RUNTIME_FILES) > 0
    for source in wrapper.RUNTIME_FILES:
        assert (version_dir / source.name).read_bytes() == source.read_bytes()
        assert (version_dir / source.name).stat().st_ino != source.stat().st_ino
    assert "demo__1.0.0" in (version_dir / "model.py").read_text()
    compile((version_dir / "model.py").read_text(), "model.py", "exec")


def test_build_is_byte_identical_when_run_twice_on_the_same_plugins(valid_tree: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "repo", tmp_path / "b" / "repo"
    build_repository(valid_tree, first)
    build_repository(valid_tree, second)
    assert tree_bytes(first) == tree_bytes(second)
    assert len([k for k in tree_bytes(first) if k.endswith("config.pbtxt")]) == 3


def test_build_rewrites_nothing_when_nothing_changed(valid_tree: Path, repo: Path) -> None:
    build_repository(valid_tree, repo)
    before, inodes = tree_bytes(repo), _inodes(repo)
    result = build_repository(valid_tree, repo)
    assert result.written == [] and result.removed == []
    assert result.unchanged == ["frame_jpeg__1.0.0", "frame_jpeg__1.1.0-rc.1", "temporal_raw__1.0.0"]
    assert tree_bytes(repo) == before
    assert _inodes(repo) == inodes


def test_build_rewrites_only_the_changed_entry_when_one_plugin_file_changes(
    valid_tree: Path, repo: Path
) -> None:
    build_repository(valid_tree, repo)
    inodes = _inodes(repo)
    (valid_tree / "temporal_raw" / "1.0.0" / "config.yaml").write_text("threshold: 0.75\n")
    result = build_repository(valid_tree, repo)
    assert result.written == ["temporal_raw__1.0.0"]
    assert (repo / "temporal_raw__1.0.0" / "1" / "plugin" / "config.yaml").read_text() == "threshold: 0.75\n"
    after = _inodes(repo)
    assert after["frame_jpeg__1.0.0/config.pbtxt"] == inodes["frame_jpeg__1.0.0/config.pbtxt"]
    assert after["temporal_raw__1.0.0/config.pbtxt"] != inodes["temporal_raw__1.0.0/config.pbtxt"]


def test_build_rewrites_an_entry_when_its_contract_changes(make_plugin, models_dir: Path, repo: Path) -> None:
    make_plugin("demo")
    build_repository(models_dir, repo)
    make_plugin("demo", performance={"recommended_batch_size": 4})
    assert build_repository(models_dir, repo).written == ["demo__1.0.0"]
    assert "max_batch_size: 4" in (repo / "demo__1.0.0" / "config.pbtxt").read_text()


def test_build_removes_entries_when_plugins_disappear_or_break(valid_tree: Path, repo: Path) -> None:
    import shutil

    build_repository(valid_tree, repo)
    shutil.rmtree(valid_tree / "frame_jpeg" / "1.1.0-rc.1")
    (valid_tree / "temporal_raw" / "1.0.0" / "inference.py").unlink()
    result = build_repository(valid_tree, repo)
    assert result.removed == ["frame_jpeg__1.1.0-rc.1", "temporal_raw__1.0.0"]
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == ["frame_jpeg__1.0.0"]
    records = {(m["model_id"], m["version"]): m["state"] for m in load_manifest(repo)["models"]}
    assert records == {("frame_jpeg", "1.0.0"): "VALID", ("temporal_raw", "1.0.0"): "INVALID"}


def test_build_never_touches_files_it_did_not_create(make_plugin, models_dir: Path, repo: Path) -> None:
    make_plugin("demo")
    repo.mkdir(parents=True)
    (repo / "hand_made").mkdir()
    (repo / "hand_made" / "config.pbtxt").write_text('name: "hand_made"\nbackend: "python"\n')
    (repo / "README.txt").write_text("mine\n")
    build_repository(models_dir, repo)
    (models_dir / "demo" / "1.0.0" / "model.yaml").unlink()
    build_repository(models_dir, repo)
    assert (repo / "hand_made" / "config.pbtxt").read_text().startswith('name: "hand_made"')
    assert (repo / "README.txt").read_text() == "mine\n"
    assert not (repo / "demo__1.0.0").exists()


def test_build_reports_conflict_when_a_foreign_folder_has_the_entry_name(
    make_plugin, models_dir: Path, repo: Path
) -> None:
    make_plugin("demo")
    (repo / "demo__1.0.0").mkdir(parents=True)
    (repo / "demo__1.0.0" / "mine.txt").write_text("keep\n")
    result = build_repository(models_dir, repo)
    (report,) = result.reports
    assert report.state == "INVALID" and report.errors[0].check == "repository_conflict"
    assert sorted(p.name for p in (repo / "demo__1.0.0").iterdir()) == ["mine.txt"]


def test_build_leaves_the_repository_unchanged_when_staging_fails(
    valid_tree: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_repository(valid_tree, repo)
    before = tree_bytes(repo)
    for version in ("1.0.0", "1.1.0-rc.1"):
        (valid_tree / "frame_jpeg" / version / "inference.py").write_text("# changed\n")
    (valid_tree / "temporal_raw" / "1.0.0" / "model.yaml").unlink()
    real, calls = writer._write_entry, []

    def failing(dest: Path, *args):
        calls.append(dest)
        assert dest.parent.parent == repo.parent  # staged beside the repository, never inside
        if len(calls) == 2:
            real(dest, *args)
            raise OSError(28, "No space left on device")
        real(dest, *args)

    monkeypatch.setattr(writer, "_write_entry", failing)
    with pytest.raises(BuildError, match="No space left"):
        build_repository(valid_tree, repo)
    assert tree_bytes(repo) == before
    assert _siblings(repo) == []


def test_build_rolls_back_the_swap_when_the_manifest_cannot_be_written(
    valid_tree: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_repository(valid_tree, repo)
    before = tree_bytes(repo)
    (valid_tree / "frame_jpeg" / "1.0.0" / "inference.py").write_text("# changed\n")
    (valid_tree / "temporal_raw" / "1.0.0" / "model.yaml").unlink()

    def failing(path: Path, text: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(repofiles, "write_atomic", failing)  # the manifest, written last by swap()
    with pytest.raises(BuildError):
        build_repository(valid_tree, repo)
    assert tree_bytes(repo) == before
    assert _siblings(repo) == []


def test_build_only_touches_named_entries_when_only_is_given(
    make_plugin, models_dir: Path, repo: Path
) -> None:
    make_plugin("alpha")
    make_plugin("beta")
    build_repository(models_dir, repo)
    before = load_manifest(repo)
    make_plugin("alpha", performance={"recommended_batch_size": 2})
    make_plugin("beta", performance={"recommended_batch_size": 3})
    make_plugin("gamma")
    result = build_repository(models_dir, repo, only={"alpha__1.0.0"})
    assert result.written == ["alpha__1.0.0"]
    assert "max_batch_size: 0" in (repo / "beta__1.0.0" / "config.pbtxt").read_text()
    assert not (repo / "gamma__1.0.0").exists()
    after = {m["triton_name"]: m for m in load_manifest(repo)["models"]}
    assert sorted(after) == ["alpha__1.0.0", "beta__1.0.0"]
    assert after["beta__1.0.0"] == before["models"][1]
    assert after["alpha__1.0.0"]["triton"]["max_batch_size"] == 2
    import shutil

    shutil.rmtree(models_dir / "beta")
    assert build_repository(models_dir, repo, only={"beta__1.0.0"}).removed == ["beta__1.0.0"]
    assert sorted(m["triton_name"] for m in load_manifest(repo)["models"]) == ["alpha__1.0.0"]


def test_build_refuses_only_when_target_differs_from_the_repository(
    make_plugin, models_dir: Path, repo: Path
) -> None:
    make_plugin("demo", hardware={"supports_cpu": True, "supports_gpu": True})
    build_repository(models_dir, repo)
    with pytest.raises(UsageError):
        build_repository(models_dir, repo, target="gpu", only={"demo__1.0.0"})
    result = build_repository(models_dir, repo, target="gpu")
    assert result.written == ["demo__1.0.0"]
    assert "KIND_GPU" in (repo / "demo__1.0.0" / "config.pbtxt").read_text()


def test_build_links_the_plugin_environment_when_the_plugin_has_requirements(
    make_plugin, models_dir: Path, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_dir = tmp_path / "envs" / "abc"
    env_dir.mkdir(parents=True)
    calls: list[tuple[Path, str]] = []

    def ensure_env(plugin_dir: Path, contract, report=None) -> Path:
        calls.append((plugin_dir, contract.dependencies.requirements))
        return env_dir

    monkeypatch.setattr(envs, "ensure_env", ensure_env)
    monkeypatch.setattr(envs, "check_requirements", lambda plugin_dir, contract: [])
    make_plugin("demo", files={"requirements.txt": "six==1.17.0\n"})
    make_plugin("plain")
    build_repository(models_dir, repo)
    assert calls == [(models_dir / "demo" / "1.0.0", "requirements.txt")]
    assert os.readlink(repo / "demo__1.0.0" / "env") == str(env_dir)
    assert "$$TRITON_MODEL_DIRECTORY/env" in (repo / "demo__1.0.0" / "config.pbtxt").read_text()
    assert not (repo / "plain__1.0.0" / "env").exists()
    assert "EXECUTION_ENV_PATH" not in (repo / "plain__1.0.0" / "config.pbtxt").read_text()


def test_build_tells_progress_each_step_of_an_environment_build_and_the_repositorys(
    make_plugin, models_dir: Path, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def ensure_env(plugin_dir: Path, contract, report=None) -> Path:
        if plugin_dir.parent.name == "demo":  # "cached" does not report at all
            report("resolving", "six==1.17.0")
            report("downloading", "six 1.17.0 (11 kB)")
        return tmp_path

    monkeypatch.setattr(envs, "ensure_env", ensure_env)
    monkeypatch.setattr(envs, "check_requirements", lambda plugin_dir, contract: [])
    make_plugin("demo", files={"requirements.txt": "six==1.17.0\n"})
    make_plugin("cached", files={"requirements.txt": "six==1.17.0\n"})
    make_plugin("plain")
    progress = RecordedProgress()
    build_repository(models_dir, repo, progress=progress)
    about = str(repo)
    assert progress.events == [
        ("step", about, "validating the plugins in", str(models_dir)),
        ("step", about, "generating", "3 valid, 0 invalid"),
        ("step", "demo 1.0.0", "resolving", "six==1.17.0"),
        ("step", "demo 1.0.0", "downloading", "six 1.17.0 (11 kB)"),
        ("done", "demo 1.0.0", "environment built", "True"),
        ("step", about, "writing", "3 entries"),
        ("done", about, "3 written, 0 unchanged, 0 removed", "True"),
    ]


def test_digest_cache_reuses_digests_when_files_are_unchanged(
    make_plugin, models_dir: Path, repo: Path
) -> None:
    make_plugin("demo")
    build_repository(models_dir, repo)
    cache = json.loads((repo / writer.CACHE_FILE).read_text())
    assert str(models_dir / "demo" / "1.0.0" / "model.yaml") in cache["files"]
    (models_dir / "demo" / "1.0.0" / "inference.py").write_text(
        "def load(c):\n    return 1\n\n\ndef infer(s, i):\n    return i\n"
    )
    assert build_repository(models_dir, repo).written == ["demo__1.0.0"]


def test_build_removes_staging_left_by_a_killed_build(make_plugin, models_dir: Path, repo: Path) -> None:
    make_plugin("demo")
    build_repository(models_dir, repo)
    stale = repo.parent / f".{repo.name}.ruthgen-0123456789ab"
    (stale / "demo__1.0.0" / "1").mkdir(parents=True)
    (repo.parent / "unrelated").mkdir()
    build_repository(models_dir, repo)
    assert not stale.exists()
    assert (repo.parent / "unrelated").is_dir()
