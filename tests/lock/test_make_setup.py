"""`make setup` picks the constraints file of the Python it runs, and stops with one line naming the
reason for a Python it cannot support (no resolver trace); `make up` installs only what running
needs, `make setup` (and every target but `up`) that and the tests' tools, each install once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def fake_python(folder: Path, version: str) -> Path:
    """A stand-in that answers the Makefile's version query; the real one is never needed here."""
    path = folder / f"python{version}"
    path.write_text(f"#!/bin/sh\necho {version}\n")
    path.chmod(0o755)
    return path


def make(
    tmp_path: Path, python: Path, *flags: str, target: str = "setup"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *flags, target, f"PYTHON={python}",
         f"VENV={tmp_path / 'venv'}"],
        capture_output=True, text=True, timeout=60, check=False,
    )


def make_setup(tmp_path: Path, python: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return make(tmp_path, python, *flags)


def installs(output: str) -> list[str]:
    return [line for line in output.splitlines() if "scripts/uv_pip.py install" in line]


@pytest.mark.parametrize("version", ["3.10", "3.11", "3.12"])
def test_setup_installs_with_the_constraints_of_the_python_it_runs(tmp_path, version):
    done = make_setup(tmp_path, fake_python(tmp_path, version), "--dry-run")
    assert done.returncode == 0, done.stderr
    lines = installs(done.stdout)
    assert len(lines) == 3  # the runtime, the dev extra, the plugins' packages
    assert all(f"-c constraints/py{version}.txt" in line for line in lines)
    assert all(f"--python {tmp_path / 'venv' / 'bin' / 'python'} " in line for line in lines)
    assert '-e ".[embedded]"' in lines[0] and '-e ".[dev]"' in lines[1]
    assert "--no-deps" in lines[2] and "-r requirements-plugins.txt" in lines[2]
    assert f"-m venv --without-pip --clear {tmp_path / 'venv'}" in done.stdout  # another Python's is replaced
    assert f"touch {tmp_path / 'venv'}/.installed-dev-py{version}" in done.stdout


def test_up_installs_only_the_runtime_and_pip(tmp_path):
    done = make(tmp_path, fake_python(tmp_path, "3.11"), "--dry-run", target="up")
    assert done.returncode == 0, done.stderr
    (line,) = installs(done.stdout)
    assert '-e ".[embedded]"' in line and '"pip>=24"' in line  # ruthgen.envs builds with pip
    assert "[dev]" not in done.stdout and "requirements-plugins" not in done.stdout
    assert done.stdout.splitlines()[-1] == f"{tmp_path / 'venv'}/bin/ruthgen up"


def stamps(tmp_path: Path, *names: str) -> None:
    """A venv whose installs are done (the stamps newer than their inputs)."""
    (tmp_path / "venv").mkdir(exist_ok=True)
    for name in names:
        (tmp_path / "venv" / name).touch()


def test_setup_after_up_adds_the_tools_only(tmp_path):
    stamps(tmp_path, ".installed-run-py3.11")
    done = make_setup(tmp_path, fake_python(tmp_path, "3.11"), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "-m venv" not in done.stdout and ".[embedded]" not in done.stdout
    assert len(installs(done.stdout)) == 2


@pytest.mark.parametrize("target", ["up", "setup", "lint"])
def test_nothing_is_installed_again_once_installed(tmp_path, target):
    stamps(tmp_path, ".installed-run-py3.11", ".installed-dev-py3.11")
    done = make(tmp_path, fake_python(tmp_path, "3.11"), "--dry-run", target=target)
    assert done.returncode == 0, done.stderr
    assert installs(done.stdout) == [] and "-m venv" not in done.stdout


@pytest.mark.parametrize(
    ("existing", "cleared"),
    [
        (".installed-py3.11", False),  # made by pip before the installs were split: kept, updated
        (".installed-dev-py3.11", False),
        (".installed-run-py3.10", True),  # another Python's
    ],
)
def test_the_venv_is_made_anew_only_for_another_python(tmp_path, existing, cleared):
    stamps(tmp_path, existing)
    done = make(tmp_path, fake_python(tmp_path, "3.11"), "--dry-run", target="up")
    assert done.returncode == 0, done.stderr
    venv_line = f"-m venv --without-pip {'--clear ' if cleared else ''}{tmp_path / 'venv'}"
    assert venv_line in done.stdout, done.stdout


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("3.13", "numpy < 2, which tritonclient 2.51 and Triton 2.51's Python backend need, has no build"),
        ("3.9", "is not supported; use Python 3.10 3.11 3.12"),
    ],
)
@pytest.mark.parametrize("target", ["setup", "up"])
def test_setup_refuses_an_unsupported_python_in_one_line(tmp_path, version, reason, target):
    done = make(tmp_path, fake_python(tmp_path, version), target=target)
    assert done.returncode != 0
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert f"Python {version} " in line and "is not supported" in line and reason in line
    assert not (tmp_path / "venv").exists()


def test_setup_says_so_when_the_python_does_not_run(tmp_path):
    done = make_setup(tmp_path, tmp_path / "python3.99")
    assert done.returncode != 0
    (line,) = done.stderr.splitlines()
    assert "does not run" in line
