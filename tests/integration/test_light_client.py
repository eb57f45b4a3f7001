"""The light client: ``pip install ruth-ai-runtime`` (no extra) in a fresh venv, from this project with
the lock as constraints, brings grpcio and protobuf and nothing of Triton, and its ``sidecar.client``
calls a running sidecar in front of the real embedded tritonserver."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ruthgen.writer import build_repository
from sidecar.process import SidecarProcess
from tests.distribution import NAME, requirements
from tests.integration.test_sidecar import FRAME

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "tests" / "testdata" / "plugins"
LOCK = ROOT / "constraints" / f"py{sys.version_info.major}.{sys.version_info.minor}.txt"

CLIENT_SCRIPT = """
import asyncio, importlib.util, json, sys
from sidecar.client import AIRuntimeClient, pb, result_dict

async def main(target, image):
    data = open(image, "rb").read()
    async with AIRuntimeClient(target) as client:
        await client.wait_ready(10)
        ok = await client.infer("sc_echo", "1.0.0", data, "jpeg", frame_id="light-1")
        failed = await client.infer("sc_echo", "", data, "jpeg", frame_id="light-2")
        health = await client.health()
    missing = [m for m in ("tritonclient", "numpy", "fastapi", "typer") if importlib.util.find_spec(m)]
    print(json.dumps({"result": result_dict(ok), "error": pb.ErrorCode.Name(failed.error.code),
                      "models_total": health.models_total, "heavy_modules_found": missing}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


INSTALLED_SCRIPT = """
import importlib.metadata, json
print(json.dumps({d.metadata["Name"]: d.requires or [] for d in importlib.metadata.distributions()}))
"""


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    """A fresh venv with the project installed without extras, pinned by this Python's lock."""
    env = tmp_path_factory.mktemp("light-client") / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    before = _size_mb(env)
    started = time.monotonic()
    _run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
          "-c", str(LOCK), str(ROOT)])
    print(f"light client: installed in {time.monotonic() - started:.1f} s, "
          f"{_size_mb(env) - before:.1f} MB added to the venv")
    return env


@pytest.fixture(scope="module")
def sidecar(module_triton_factory, tmp_path_factory):
    root = tmp_path_factory.mktemp("light-client-stack")
    models = root / "models"
    shutil.copytree(PLUGINS / "sc_echo", models / "sc_echo")
    repository = root / "model_repository"
    build_repository(models, repository)
    triton = module_triton_factory(repository, load_models=[])
    with SidecarProcess(triton.grpc_url, repository, port=0, log_path=root / "sidecar.log",
                        extra_args=["--http-port", "0"]) as process:
        yield process


def test_light_client_installs_only_grpcio_protobuf_and_their_dependencies(client_venv):
    listed = _run([str(client_venv / "bin" / "python"), "-c", INSTALLED_SCRIPT]).stdout
    installed = {canonicalize_name(name): needs for name, needs in json.loads(listed).items()}
    installed = {name: needs for name, needs in installed.items() if name not in {"pip", "setuptools"}}
    assert {canonicalize_name(r.name) for r in requirements()} == {"grpcio", "protobuf"}
    reached, todo = {NAME}, [NAME]  # what the project's requirements bring, by the venv's own metadata
    while todo:
        for line in installed[todo.pop()]:
            requirement = Requirement(line)
            name = canonicalize_name(requirement.name)
            if name not in reached and (requirement.marker is None or requirement.marker.evaluate()):
                reached.add(name)
                todo.append(name)
    assert set(installed) == reached
    assert not reached & {"tritonclient", "nvidia-pytriton", "numpy", "fastapi", "typer", "pillow"}


def test_light_client_alone_calls_a_running_sidecar(client_venv, sidecar, tmp_path):
    image = tmp_path / "frame.jpg"
    image.write_bytes(FRAME)
    done = _run([str(client_venv / "bin" / "python"), "-c", CLIENT_SCRIPT, sidecar.address, str(image)],
                cwd=tmp_path)  # not the checkout: the installed package answers
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["result"] == {"label": "ok", "width": 320, "height": 240, "frame_id": "light-1"}
    assert seen["error"] == "VERSION_REQUIRED"
    assert seen["models_total"] == 1
    assert seen["heavy_modules_found"] == []
