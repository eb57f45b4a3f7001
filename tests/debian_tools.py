"""Programs the tests run that come from Debian's archive, installed when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

import pytest


def debian_tool(names: Sequence[str], package: str) -> str:
    """The path of the first of ``names`` on PATH, installing Debian's ``package`` when none is (as
    root); fails, never skips, when it cannot."""
    found = next((path for path in map(shutil.which, names) if path), None)
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail(f"{names[0]} is missing and this is not root: apt-get install {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
    found = next((path for path in map(shutil.which, names) if path), None)
    assert found, f"{names[0]} not on PATH after installing {package}"
    return found
