"""docker/*.Dockerfile: pinned bases, dependencies from the project's lock that cover what the code
imports, non-root users, and the paths the compose files and manifests rely on."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from deploy_loaders import (
    DOCKER,
    ENVS,
    REPOSITORY,
    ROOT,
    RUNTIME_UID,
    closure,
    constraints,
    distributions_of,
    generator_imports,
    local_modules,
    ngc_release,
    parse_dockerfile,
    pip_installs,
    requirement_names,
    third_party_imports,
)
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from ruthgen.envs import BASE_PACKAGES, CACHE_ENV
from sidecar.settings import SidecarSettings
from tests.distribution import local_install
from tests.distribution import requirements as project_requirements

SIDECAR = parse_dockerfile(DOCKER / "sidecar.Dockerfile")
TRITON = parse_dockerfile(DOCKER / "triton.Dockerfile")
REQUIRES_PYTHON = re.search(r'^requires-python = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
#: The Python of NVIDIA's tritonserver 24.10 images (Ubuntu 22.04), which runs every stub.
TRITON_PYTHON = "3.10"


def _installed(dockerfile, stage_name: str | None = None) -> list[Requirement]:
    """Every requirement a stage installs (the first stage when none is named): those it names, and
    the project's own with the extras it installs the project with (``.[sidecar]``)."""
    stage = dockerfile.stage(stage_name) if stage_name else dockerfile.stages[0]
    requirements: list[Requirement] = []
    for run in stage.runs():
        for arguments in pip_installs(run):
            names, options, folders = requirement_names(arguments)
            projects = [local_install(folder) for folder in folders]
            assert all(projects), f"pip install of a folder that is not the project's source: {folders}"
            if names or projects:
                assert "-c" in options and options[options.index("-c") + 1].endswith("constraints.txt"), (
                    f"pip install without the project's lock: {arguments}"
                )
            for requirement in names:
                assert not requirement.specifier, f"{requirement}: the version comes from the lock only"
            requirements.extend(names)
            for _, extras in projects:
                requirements.extend(project_requirements(*extras))
    return requirements


def _named(dockerfile, stage_name: str) -> list[str]:
    """The packages a stage installs by name (not through the project's extras)."""
    return [
        str(requirement)
        for run in dockerfile.stage(stage_name).runs()
        for arguments in pip_installs(run)
        for requirement in requirement_names(arguments)[0]
    ]


def _project_extras(dockerfile, stage_name: str) -> list[list[str]]:
    """The extras of each install of the project's source in a stage."""
    return [
        local_install(folder)[1]
        for run in dockerfile.stage(stage_name).runs()
        for arguments in pip_installs(run)
        for folder in requirement_names(arguments)[2]
    ]


def _lock_of(dockerfile) -> str:
    """The Python whose lock a Dockerfile copies by default (its PYTHON_VERSION build argument)."""
    copies = [v for stage in dockerfile.stages for v in stage.values("COPY") if "constraints/py" in v]
    assert copies and all("constraints/py${PYTHON_VERSION}.txt" in v for v in copies), copies
    return dockerfile.args["PYTHON_VERSION"]


def _assert_locked(requirements: list[Requirement], python_version: str) -> None:
    pins = constraints(python_version)
    lock = f"constraints/py{python_version}.txt"
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {lock}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock} pins {name}=={pins[name]}, outside {requirement}: run scripts/lock.sh"
        )
    unlocked = closure(requirements, python_version) - set(pins)
    assert not unlocked, f"installed without a pin in {lock}: {sorted(unlocked)}"


def test_each_dockerfile_copies_the_lock_of_its_base_images_python_when_built():
    assert _lock_of(TRITON) == TRITON_PYTHON
    tag = SIDECAR.resolve(SIDECAR.stages[0].base).partition(":")[2]
    assert _lock_of(SIDECAR) == ".".join(tag.split("-", 1)[0].split(".")[:2])
    for version in (TRITON_PYTHON, _lock_of(SIDECAR)):
        assert (ROOT / "constraints" / f"py{version}.txt").is_file()


def _assert_covers(requirements: list[Requirement], python_version: str, modules: set[str]) -> None:
    provided = closure(requirements, python_version)
    for module in sorted(modules):
        dists = distributions_of(module)
        assert dists, f"no installed distribution provides {module!r}"
        assert dists & provided, f"{module!r} ({sorted(dists)}) is imported but not installed"


def _python_files(*folders: str) -> list:
    return [p for folder in folders for p in (ROOT / folder).rglob("*.py")]


# --- sidecar.Dockerfile ------------------------------------------------------------------------


def test_sidecar_dockerfile_bases_on_a_pinned_slim_python_the_project_supports_when_built():
    image = SIDECAR.resolve(SIDECAR.stages[0].base)
    assert all(SIDECAR.resolve(s.base) == image for s in SIDECAR.stages[1:] if ":" in SIDECAR.resolve(s.base))
    repository, _, tag = image.partition(":")
    assert repository == "python" and "slim" in tag
    version = Version(tag.split("-", 1)[0])
    assert len(version.release) == 3, f"pin the patch release: {image}"
    assert SpecifierSet(REQUIRES_PYTHON).contains(version)


def test_sidecar_dockerfile_installs_only_locked_packages_when_built():
    installed = _installed(SIDECAR, "build") if SIDECAR.stages[0].name else _installed(SIDECAR)
    _assert_locked(installed, _lock_of(SIDECAR))


def test_sidecar_dockerfile_installs_every_package_the_sidecar_imports_when_built():
    files = local_modules(_python_files("sidecar"), {"sidecar", "ruthgen"})
    required, _ = third_party_imports(files, {"sidecar", "ruthgen"})
    assert {"grpc", "tritonclient", "pydantic_settings"} <= required
    _assert_covers(_installed(SIDECAR, "build"), "3.11", required)


def test_sidecar_dockerfile_includes_the_generated_proto_code_when_built():
    tracked = subprocess.run(
        ["git", "ls-files", "sidecar/_proto"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert {"sidecar/_proto/airuntime_pb2.py", "sidecar/_proto/airuntime_pb2_grpc.py"} <= set(tracked)
    copies = SIDECAR.stage("build").values("COPY")
    assert "sidecar ./sidecar" in copies
    assert any("import sidecar._proto.airuntime_pb2_grpc" in run for run in SIDECAR.stage("build").runs())


def test_sidecar_dockerfile_installs_the_project_with_its_sidecar_extra_and_no_copied_list_when_built():
    assert _project_extras(SIDECAR, "build") == [["sidecar"]]
    assert _named(SIDECAR, "build") == []
    brought = closure(_installed(SIDECAR, "build"), "3.11")
    assert {"tritonclient", "fastapi", "grpcio-status"} <= brought
    assert not brought & {"nvidia-pytriton", "typer", "opencv-python-headless"}, "no place in this image"


def test_sidecar_image_runs_non_root_on_the_settings_port_when_started():
    final = SIDECAR.stages[-1]
    assert final.values("USER") == [f"{RUNTIME_UID}:{RUNTIME_UID}"]
    assert final.values("EXPOSE") == [str(SidecarSettings.model_fields["grpc_port"].default)]
    (entrypoint,) = final.values("ENTRYPOINT")
    assert json.loads(entrypoint) == ["python", "-m", "sidecar"]
    assert (ROOT / "sidecar" / "__main__.py").is_file()


# --- triton.Dockerfile -------------------------------------------------------------------------


def test_triton_dockerfile_bases_on_the_release_of_the_embedded_server_when_built():
    assert TRITON.args["TRITON_IMAGE"] == f"nvcr.io/nvidia/tritonserver:{ngc_release()}-py3"
    assert TRITON.stages[0].base == "${TRITON_IMAGE}"
    names = [s.name for s in TRITON.stages]
    assert names == ["runtime", "ruthgen", "bundle-build", "bundle"]


def test_triton_runtime_installs_only_locked_packages_for_the_image_python_when_built():
    _assert_locked(_installed(TRITON, "runtime"), TRITON_PYTHON)
    _assert_locked(_installed(TRITON, "ruthgen"), TRITON_PYTHON)


def test_triton_runtime_installs_what_the_wrapper_imports_when_built():
    required, optional = third_party_imports(_python_files("ruthgen/wrapper"), {"ruthgen"})
    required.discard("ruth_api")
    local = {p.stem for p in (ROOT / "ruthgen" / "wrapper").glob("*.py")}
    required -= local
    optional -= local
    assert "numpy" in required
    runtime = _installed(TRITON, "runtime")
    _assert_covers(runtime, TRITON_PYTHON, required)
    decoders = {m for m in optional if m in {"PIL", "cv2"}}
    assert decoders, "the wrapper decodes JPEG/PNG with an optional decoder; none found"
    assert any(distributions_of(m) & closure(runtime, TRITON_PYTHON) for m in decoders)


def test_triton_runtime_installs_the_base_packages_of_every_plugin_environment_when_built():
    # A plugin without requirements runs on the image's Python: it gets what an environment gets.
    installed = {canonicalize_name(r.name) for r in _installed(TRITON, "runtime")}
    assert installed == {canonicalize_name(name) for name in BASE_PACKAGES}


def test_triton_runtime_keeps_numpy_below_2_when_built():
    assert Version(constraints(TRITON_PYTHON)["numpy"]).major < 2
    assert any("numpy.__version__" in run for run in TRITON.stage("runtime").runs())


def test_triton_ruthgen_stage_installs_what_ruthgen_build_imports_when_built(tmp_path):
    models = ROOT / "tests" / "testdata" / "plugins" / "valid"
    arguments = ["build", "--models", str(models), "--out", str(tmp_path / "repo"), "--target", "gpu"]
    files, loaded = generator_imports(arguments, cwd=tmp_path)
    assert (tmp_path / "repo" / "ruth-manifest.json").is_file()
    # What ran, plus every import written in the generator modules that ran or that the repository
    # writer can reach (lazy ones included: e.g. building a plugin's environment).
    files = {*files, *local_modules([ROOT / "ruthgen" / "writer.py"], {"ruthgen"})}
    required, _ = third_party_imports(files, {"ruthgen", "sidecar"})
    foreign = loaded - set(sys.stdlib_module_names) - {"ruthgen", "sidecar"}
    required |= {m for m in foreign if distributions_of(m)}
    assert {"jinja2", "pydantic", "typer", "yaml"} <= required
    _assert_covers(_installed(TRITON, "ruthgen"), TRITON_PYTHON, required)
    # The project's own packages the command loaded are in the image's source copy.
    copies = TRITON.stage("ruthgen").values("COPY")
    for package in sorted(loaded & {"ruthgen", "sidecar"}):
        assert f"{package} /opt/ruth/src/{package}" in copies, f"{package} is imported but not copied"


def test_triton_ruthgen_stage_installs_the_project_with_its_generator_extra_and_no_copied_list_when_built():
    assert _project_extras(TRITON, "ruthgen") == [["generator"]]
    assert _named(TRITON, "ruthgen") == []
    brought = closure(_installed(TRITON, "ruthgen"), TRITON_PYTHON)
    assert not brought & {"nvidia-pytriton", "fastapi", "uvicorn"}, "the embedded server and the sidecar"


def test_triton_images_run_as_the_sidecar_uid_when_started():
    assert TRITON.stage("runtime").values("USER") == [f"{RUNTIME_UID}:{RUNTIME_UID}"]
    assert TRITON.stage("ruthgen").values("USER")[-1] == f"{RUNTIME_UID}:{RUNTIME_UID}"


def test_triton_bundle_holds_the_repository_and_environments_at_the_served_paths_when_built():
    (build,) = [run for run in TRITON.stage("bundle-build").runs() if run.startswith("ruthgen build")]
    words = build.split()
    assert words[words.index("--out") + 1] == REPOSITORY
    copies = TRITON.stage("bundle").values("COPY")
    assert copies == [f"--from=bundle-build {REPOSITORY} {REPOSITORY}", f"--from=bundle-build {ENVS} {ENVS}"]
    env = " ".join(TRITON.stage("ruthgen").values("ENV"))
    assert f"{CACHE_ENV}={ENVS}" in env


def test_triton_ruthgen_builds_environments_with_the_interpreter_the_runtime_has_when_run():
    # ruthgen.envs makes each environment a venv of sys.executable: a generator living in a venv of
    # its own would leave every environment pointing at an interpreter the runtime stage lacks.
    runs = TRITON.stage("ruthgen").runs()
    assert not any("-m venv" in run for run in runs)
    installs = [args for run in runs for args in pip_installs(run)]
    assert installs and all(run.lstrip().startswith("python3 -m pip") for run in runs if "pip install" in run)


@pytest.mark.parametrize("dockerfile", ["sidecar.Dockerfile", "triton.Dockerfile"])
def test_dockerfile_context_leaves_out_local_state_when_sent(dockerfile):
    ignore = (DOCKER / f"{dockerfile}.dockerignore").read_text().split()
    for path in (".venv", ".git", "model_repository", "**/__pycache__"):
        assert path in ignore, f"{path} would be sent to the builder"


@pytest.mark.parametrize("dockerfile", [SIDECAR, TRITON], ids=["sidecar", "triton"])
def test_dockerfile_gives_pip_the_ca_secret_and_keeps_it_out_of_the_images_when_built(dockerfile):
    # pip trusts the machine's CA bundle when it is passed as the secret `ca-certificates` and
    # PIP_CERT names it (docker/docker-compose.standin.yml); a secret mount leaves nothing in a layer.
    for stage in dockerfile.stages:
        for flags, command in stage.run_flags():
            if "pip install" in command or "ruthgen build" in command:
                secrets = [f for f in flags if f.startswith("--mount=type=secret,id=ca-certificates")]
                assert secrets, f"{stage.name}: {command[:60]}... has no ca-certificates secret"
                assert "PIP_CERT" in stage.values("ARG"), f"{stage.name} does not declare ARG PIP_CERT"
        for keyword in ("COPY", "ADD", "ENV"):
            for value in stage.values(keyword):
                assert "PIP_CERT" not in value and ".crt" not in value, f"{stage.name}: {keyword} {value}"
