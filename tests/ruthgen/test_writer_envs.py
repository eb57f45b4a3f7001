"""The plugins' environments are built side by side, and the build's result is that of building them one
after another: the same repository, manifest and reports, a failure of one plugin's environment its
own, in the plugins' order whatever order the builds finish in."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from ruthgen_testlib import RecordedProgress

from ruthgen import envs, writer
from ruthgen.errors import EnvironmentBuildError
from ruthgen.manifest import load_manifest
from ruthgen.writer import build_repository

REQUIREMENTS = {"requirements.txt": "six==1.17.0\n"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return tmp_path / "out" / "model_repository"


class FakeEnvs:
    """``envs.ensure_env`` stand-in: an environment folder per plugin, after ``delay[model_id]``
    seconds; ``fail``: model_ids whose build fails; ``together``: that many builds must be under
    way at once (a barrier: built one after another, the test fails)."""

    def __init__(self, root: Path, fail: dict[str, BaseException] | None = None,
                 delay: dict[str, float] | None = None, together: int = 0) -> None:
        self.root, self.fail, self.delay = root, fail or {}, delay or {}
        self.barrier = threading.Barrier(together, timeout=20) if together else None
        self.started: list[str] = []
        self.finished: list[str] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, plugin_dir: Path, contract, report=None) -> Path:
        model_id = plugin_dir.parent.name
        with self._lock:
            self.started.append(model_id)
            self.threads.add(threading.current_thread().name)
        if report is not None:
            report("resolving", f"{model_id}'s six")
        if self.barrier is not None:
            self.barrier.wait()
        time.sleep(self.delay.get(model_id, 0.0))
        with self._lock:
            self.finished.append(model_id)
        if model_id in self.fail:
            raise self.fail[model_id]
        env = self.root / f"env-{model_id}"
        env.mkdir(parents=True, exist_ok=True)
        return env


def install(monkeypatch: pytest.MonkeyPatch, fake: FakeEnvs) -> FakeEnvs:
    monkeypatch.setattr(envs, "ensure_env", fake)
    monkeypatch.setattr(envs, "check_requirements", lambda plugin_dir, contract: [])
    return fake


def make_plugins(make_plugin) -> None:
    for model_id in ("alpha", "bravo", "charlie"):
        make_plugin(model_id, files=REQUIREMENTS)
    make_plugin("plain")  # no requirements: no environment


def test_environments_are_built_at_once_and_the_result_keeps_the_plugins_order(
    make_plugin, models_dir: Path, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_plugins(make_plugin)
    fake = install(monkeypatch, FakeEnvs(
        tmp_path / "envs", fail={"bravo": EnvironmentBuildError("pip wheel failed: ERROR: no six")},
        delay={"alpha": 0.3}, together=3,  # alpha finishes last
    ))
    progress = RecordedProgress()
    result = build_repository(models_dir, repo, progress=progress)
    assert sorted(fake.started) == ["alpha", "bravo", "charlie"] and fake.finished[-1] == "alpha"
    assert len(fake.threads) == 3 and threading.current_thread().name not in fake.threads
    assert [(r.model_id, r.valid) for r in result.reports] == [
        ("alpha", True), ("bravo", False), ("charlie", True), ("plain", True),
    ]
    assert result.written == ["alpha__1.0.0", "charlie__1.0.0", "plain__1.0.0"]
    (error,) = result.reports[1].errors
    assert error.check == "environment_build_failed" and error.message == "pip wheel failed: ERROR: no six"
    models = load_manifest(repo)["models"]
    assert [(m["model_id"], m["state"]) for m in models] == [
        ("alpha", "VALID"), ("bravo", "INVALID"), ("charlie", "VALID"), ("plain", "VALID"),
    ]
    for model_id in ("alpha", "charlie"):
        assert os.readlink(repo / f"{model_id}__1.0.0" / "env") == str(tmp_path / "envs" / f"env-{model_id}")
    assert ("done", "bravo 1.0.0", "its environment could not be built: pip wheel failed: ERROR: no six",
            "False") in progress.events
    built = {event[1] for event in progress.events if event[0] == "done" and event[2] == "environment built"}
    assert built == {"alpha 1.0.0", "charlie 1.0.0"}


def test_the_result_equals_that_of_building_one_after_another(
    make_plugin, models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_plugins(make_plugin)
    failing = {"charlie": EnvironmentBuildError("the requirements conflict: six")}
    install(monkeypatch, FakeEnvs(tmp_path / "envs", fail=failing, delay={"alpha": 0.2}, together=3))
    side_by_side = build_repository(models_dir, tmp_path / "a" / "repo")
    monkeypatch.setattr(writer, "ENV_THREADS", 1)
    fake = install(monkeypatch, FakeEnvs(tmp_path / "envs", fail=failing))
    one_by_one = build_repository(models_dir, tmp_path / "b" / "repo")
    assert fake.threads == {threading.current_thread().name}
    assert fake.started == ["alpha", "bravo", "charlie"]
    assert side_by_side.manifest == one_by_one.manifest
    a, b = side_by_side.to_dict(), one_by_one.to_dict()
    for data in (a, b):
        data.pop("repository")
        for model in data["models"]:
            model["path"] = model["path"] and Path(model["path"]).name
    assert a == b


def test_an_unexpected_error_is_raised_once_the_other_builds_are_done_and_nothing_is_written(
    make_plugin, models_dir: Path, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_plugins(make_plugin)
    fake = install(monkeypatch, FakeEnvs(
        tmp_path / "envs", fail={"alpha": OSError("disk full")}, delay={"charlie": 0.3}, together=3
    ))
    with pytest.raises(OSError, match="disk full"):
        build_repository(models_dir, repo)
    assert sorted(fake.finished) == ["alpha", "bravo", "charlie"]  # waited for, not left running
    assert not any(t.name.startswith("ruthgen-env") for t in threading.enumerate())
    assert load_manifest(repo) is None


def test_a_single_environment_and_a_rebuild_of_one_entry_are_built_in_the_calling_thread(
    make_plugin, models_dir: Path, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_plugin("alpha", files=REQUIREMENTS)
    make_plugin("plain")
    fake = install(monkeypatch, FakeEnvs(tmp_path / "envs"))
    build_repository(models_dir, repo)
    make_plugin("bravo", files=REQUIREMENTS)
    build_repository(models_dir, repo, only={"bravo__1.0.0"})
    assert fake.started == ["alpha", "bravo"]
    assert fake.threads == {threading.current_thread().name}


def test_no_environment_is_built_for_an_entry_that_something_else_is_in_the_way_of(
    make_plugin, models_dir: Path, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_plugins(make_plugin)
    (repo / "bravo__1.0.0").mkdir(parents=True)  # not generated by ruthgen
    fake = install(monkeypatch, FakeEnvs(tmp_path / "envs", together=2))
    result = build_repository(models_dir, repo)
    assert sorted(fake.started) == ["alpha", "charlie"]
    assert [e.check for e in result.reports[1].errors] == ["repository_conflict"]
