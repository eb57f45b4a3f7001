"""`make setup` picks the constraints file of the Python it runs, and stops with one line naming the
reason for a Python it cannot support (no resolver trace)."""

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


def make_setup(tmp_path: Path, python: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *flags, "setup", f"PYTHON={python}",
         f"VENV={tmp_path / 'venv'}"],
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.parametrize("version", ["3.10", "3.11", "3.12"])
def test_setup_installs_with_the_constraints_of_the_python_it_runs(tmp_path, version):
    done = make_setup(tmp_path, fake_python(tmp_path, version), "--dry-run")
    assert done.returncode == 0, done.stderr
    installs = [line for line in done.stdout.splitlines() if "pip install" in line and " -c " in line]
    assert len(installs) == 2
    assert all(f"-c constraints/py{version}.txt" in line for line in installs)
    assert f"-m venv --clear {tmp_path / 'venv'}" in done.stdout  # a venv of another Python is replaced


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("3.13", "numpy < 2, which tritonclient 2.51 and Triton 2.51's Python backend need, has no build"),
        ("3.9", "is not supported; use Python 3.10 3.11 3.12"),
    ],
)
def test_setup_refuses_an_unsupported_python_in_one_line(tmp_path, version, reason):
    done = make_setup(tmp_path, fake_python(tmp_path, version))
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
