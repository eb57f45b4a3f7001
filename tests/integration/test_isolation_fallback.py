"""Where the kernel cannot confine (no Landlock, or a seccomp profile that refuses it), on the real
tritonserver: by default the stub falls back to the guard and says so; ``RUTH_ISOLATION=kernel``
refuses to serve instead.

The server runs under ``tests/no_landlock.py``: a seccomp filter makes the Landlock system calls
answer ENOSYS, for the server and every stub it starts, as on an old Jetson kernel.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from ruthgen.embedded import launcher
from ruthgen.embedded.errors import TritonModelError
from ruthgen.writer import build_repository

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "iso_hostile__1.0.0"
NO_LANDLOCK = "the kernel has no Landlock system calls"


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fallback")
    shutil.copytree(ROOT / "tests" / "testdata" / "plugins" / "iso_hostile", root / "models" / "iso_hostile")
    build_repository(root / "models", root / "repository")
    return root / "repository"


def start_without_landlock(triton_factory, repository: Path, monkeypatch, mode: str | None):
    runner = [sys.executable, str(ROOT / "tests" / "no_landlock.py")]
    bound = launcher.bound_to_parent
    monkeypatch.setattr(launcher, "bound_to_parent", lambda command: bound([*runner, *command]))
    if mode is None:
        monkeypatch.delenv("RUTH_ISOLATION", raising=False)
    else:
        monkeypatch.setenv("RUTH_ISOLATION", mode)
    monkeypatch.setenv("RUTH_SCRATCH_DIR", str(repository.parent / "scratch"))
    return triton_factory(repository, startup_timeout_s=60)


def test_without_landlock_the_stub_serves_under_the_guard_and_says_why(
    triton_factory, repository, monkeypatch
):
    triton = start_without_landlock(triton_factory, repository, monkeypatch, None)
    triton.load(HOSTILE, timeout_s=120)
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        tensor = grpcclient.InferInput("FRAME", [4, 4, 3], "UINT8")
        tensor.set_data_from_numpy(np.zeros((4, 4, 3), dtype=np.uint8))
        result = client.infer(HOSTILE, [tensor], client_timeout=30)
        assert json.loads(result.as_numpy("RESULT").reshape(-1)[0])["action"] == "none"
    finally:
        client.close()
    text = httpx.get(triton.metrics_url, timeout=10).text
    (line,) = re.findall(rf'^ruth_model_isolation\{{[^}}]*triton_name="{HOSTILE}"[^}}]*\}} \S+$', text, re.M)
    assert 'level="guard"' in line and NO_LANDLOCK in line and line.endswith(" 0"), line
    log = triton.log_path.read_text(errors="replace")
    warning = [row for row in log.splitlines() if "iso_hostile:1.0.0 isolation: guard" in row]
    assert warning and warning[0].startswith("W") and NO_LANDLOCK in warning[0], warning


def test_without_landlock_ruth_isolation_kernel_refuses_to_serve(triton_factory, repository, monkeypatch):
    triton = start_without_landlock(triton_factory, repository, monkeypatch, "kernel")
    with pytest.raises(TritonModelError) as info:
        triton.load(HOSTILE, timeout_s=120)
    refusal = "[RUTH:LOAD_FAILED] isolation: RUTH_ISOLATION=kernel, but the kernel cannot confine"
    assert refusal in str(info.value)
    assert NO_LANDLOCK in str(info.value)
