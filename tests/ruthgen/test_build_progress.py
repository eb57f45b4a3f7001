"""``ruthgen build`` shows what takes long, building a plugin's environment, as it goes: rich rows on a
terminal (a pseudo-terminal here), a plain line per step through a pipe, nothing extra with --json."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruthgen_testlib import TESTDATA

from tests.terminal import ANSI, run_in_terminal

RUTHGEN = Path(sys.executable).parent / "ruthgen"
PLUGIN = "wrap_six_new"  # requirements.txt: six==1.17.0, so the build makes it an environment


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    shutil.copytree(TESTDATA / PLUGIN, folder / PLUGIN)
    return folder


def environment(tmp_path: Path) -> dict[str, str]:
    """A cache of environments of its own: the plugin's is built, not found."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUTH_")}
    return {**env, "RUTH_ENV_CACHE": str(tmp_path / "envs")}


def build(models: Path, tmp_path: Path, *flags: str) -> list[str]:
    return [str(RUTHGEN), "build", "-m", str(models), "-o", str(tmp_path / "repo"), *flags]


def test_build_shows_live_rows_for_the_environment_it_builds_when_run_on_a_terminal(models, tmp_path):
    """Rows drawn in place, the environment's ticked with the time it took, then the table. The rows are
    redrawn a few times a second, so a short step may never be drawn: the next test checks each step."""
    seen = run_in_terminal(build(models, tmp_path), env=environment(tmp_path), cwd=tmp_path, timeout_s=600)
    assert seen.returncode == 0, seen.text
    assert "\x1b[2K" in seen.raw and "\r" in seen.raw  # a row erased and drawn again in place
    text = seen.text
    row = rf"^✓ {PLUGIN} 1\.0\.0\s+environment built\s+\d+:\d\d:\d\d$"  # ticked, with the time it took
    assert re.search(row, text, re.M), text[-3000:]
    assert text.index(f"VALID  {PLUGIN}") > text.rindex("environment built")  # the table after the rows
    assert (tmp_path / "repo" / f"{PLUGIN}__1.0.0" / "env").is_symlink()


def test_build_prints_a_plain_line_per_step_when_not_on_a_terminal(models, tmp_path):
    done = subprocess.run(build(models, tmp_path), env=environment(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not ANSI.search(done.stderr + done.stdout)
    lines = done.stderr.splitlines()
    subject = f"{PLUGIN} 1.0.0: "
    steps = [line.removeprefix(subject).split(" [")[0] for line in lines if line.startswith(subject)]
    assert steps[0].startswith("creating the environment")
    assert "installing from the wheels kept by earlier builds" in steps
    assert any(s.startswith("resolving ") for s in steps)  # from the package index: nothing was kept
    assert any(s.startswith("installing six") for s in steps)
    assert "checking numpy < 2, the imports" in steps
    summary = rf"{re.escape(str(tmp_path / 'repo'))}: 1 written, 0 unchanged, 0 removed \(\d+\.\d s\)"
    assert re.fullmatch(summary, lines[-1]), lines[-1]
    assert any(line.startswith(f"{subject}environment built (") for line in lines)
    assert done.stdout.splitlines()[0].split() == ["STATE", "MODEL", "VERSION", "TRITON", "NAME", "ISSUES"]


def test_build_prints_only_json_when_asked(models, tmp_path):
    done = subprocess.run(build(models, tmp_path, "--json"), env=environment(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert json.loads(done.stdout)["models"][0]["action"] == "written"
