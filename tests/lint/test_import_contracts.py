"""The house's dependency rules (``[tool.importlinter]`` in pyproject.toml), as ``make lint`` runs them.

They hold on the tree as it is, and a copy of the tree with one rule broken makes ``lint-imports``
fail naming that rule.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ruthgen", "ruthstack", "sidecar")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"]
    env = {**os.environ, "COLUMNS": "300"}  # one line per contract
    return subprocess.run(command, cwd=tree, capture_output=True, text=True, timeout=120, env=env)


def copy_tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("ruthgen/naming.py", "import sidecar.errors", "ruthgen never imports the sidecar"),
        ("sidecar/request/pipeline.py", "import sidecar.control.manager", "the sidecar's layers"),
        ("sidecar/grpc/servicer.py", "import tritonclient.grpc", "transports never talk to Triton"),
        ("sidecar/http/endpoints.py", "import sidecar.triton_client", "transports never talk to Triton"),
        ("sidecar/triton_client.py", "import sidecar.request.routes", "the sidecar's layers"),
        ("sidecar/request/routes.py", "import sidecar.control.states", "the sidecar's layers"),
        ("sidecar/control/manager.py", "import ruthstack.stack", "the sidecar never imports the stack"),
        ("sidecar/client.py", "import sidecar.core", "the light client"),
        ("sidecar/frame_ring.py", "import numpy", "the light client"),
        ("sidecar/http/endpoints.py", "import sidecar.grpc.status", "never import each other"),
        ("sidecar/core.py", "import sidecar._proto.airuntime_pb2", "generated protobuf code"),
        ("ruthgen/wrapper/ruth_api.py", "import ruthgen.manifest", "the generated wrapper"),
        ("ruthgen/render.py", "import yaml", "the renderer never reads YAML"),
        ("sidecar/control/sources.py", "import ruthgen.writer", "only through ruthgen.interface"),
        ("sidecar/report/capabilities.py", "from ruthgen import naming", "only through ruthgen.interface"),
    ],
)
def test_lint_fails_naming_the_rule_when_a_module_breaks_it(tmp_path, module, line, contract):
    tree = copy_tree(tmp_path)
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # the broken rule\n")
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout
    report = result.stdout.split("Broken contracts", 1)[-1]
    importer = module.removesuffix(".py").replace("/", ".")
    assert contract in report and importer in report, result.stdout


def _contract(starts: str) -> dict:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["name"].startswith(starts))


def _generator_modules() -> list[str]:
    found = []
    for path in (ROOT / "ruthgen").iterdir():
        if path.suffix == ".py" and path.stem not in ("__init__", "__main__"):
            found.append(f"ruthgen.{path.stem}")
        elif (path / "__init__.py").is_file():
            found.append(f"ruthgen.{path.name}")
    return sorted(found)


def test_the_sidecar_boundary_and_the_wrapper_rule_name_every_module_of_the_generator():
    interface = _contract("the sidecar uses the generator only through")["forbidden_modules"]
    assert sorted(interface) == [m for m in _generator_modules() if m != "ruthgen.interface"]
    wrapper = _contract("the generated wrapper")["forbidden_modules"]
    assert sorted(m for m in wrapper if m.startswith("ruthgen.")) == [
        m for m in _generator_modules() if m != "ruthgen.wrapper"
    ]
