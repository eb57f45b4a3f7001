"""docker/docker-compose*.yml: valid Compose, pinned images, and the same flags, ports and paths as
the embedded runtime and the sidecar's settings."""

from __future__ import annotations

import re
from typing import Any

import pytest
from deploy_loaders import (
    DOCKER,
    ENVS,
    EXIT_TIMEOUT_S,
    K8S,
    REPOSITORY,
    ROOT,
    RUNTIME_UID,
    TRITON_GRPC,
    TRITON_HTTP,
    container,
    expected_triton_command,
    find,
    kustomize,
    load_yaml,
    merge_compose,
    ngc_release,
    sequences_in,
    without_resets,
)

from ruthgen.embedded.flags import COMMON_FLAGS
from sidecar.main import SERVER_GRACE_S
from sidecar.settings import SidecarSettings

COMPOSE_FILES = ["docker-compose.yml", "docker-compose.cpu.yml", "docker-compose.jetson.yml"]
TARGETS = {"gpu": "gpu", "cpu": "cpu", "jetson": "jetson"}
#: The L4T release file of every Jetson (JetPack), by which the sidecar recognises one.
TEGRA_RELEASE = "/etc/nv_tegra_release"


def _duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text))


def _bytes(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)\s*([kmg]?)b?", str(text).lower()).groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]


def _mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    mounts = {}
    for volume in service.get("volumes", []):
        assert isinstance(volume, dict), f"use the long volume syntax: {volume!r}"
        mounts[volume["target"]] = volume
    return mounts


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_is_valid_compose_when_read_on_its_own(name, compose_validator):
    document = without_resets(load_yaml(DOCKER / name))
    errors = sorted(compose_validator.iter_errors(document), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_compose_model_is_valid_compose_when_files_are_merged(compose, compose_validator):
    errors = sorted(compose_validator.iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_cpu_override_replaces_only_what_compose_replaces_when_merged():
    override = load_yaml(DOCKER / "docker-compose.cpu.yml")
    replaced = set(sequences_in(override))
    assert replaced == {("services", "ruthgen", "command")}
    assert "deploy" not in without_resets(override)["services"]["tritonserver"]


def test_compose_is_free_of_interpolation_when_read():
    for name in COMPOSE_FILES:
        assert "${" not in (DOCKER / name).read_text(), f"{name} depends on the caller's environment"


def test_compose_images_are_pinned_when_named(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and not tag.startswith("latest"), f"{name}: {image!r}"


def test_compose_triton_image_is_the_release_of_the_embedded_server_when_built(compose_gpu, compose_jetson):
    release = ngc_release()
    gpu = compose_gpu["services"]["tritonserver"]["build"]["args"]["TRITON_IMAGE"]
    jetson = compose_jetson["services"]["tritonserver"]["build"]["args"]["TRITON_IMAGE"]
    assert gpu == f"nvcr.io/nvidia/tritonserver:{release}-py3"
    assert jetson == f"nvcr.io/nvidia/tritonserver:{release}-py3-igpu"
    for compose in (compose_gpu, compose_jetson):
        tag = compose["services"]["tritonserver"]["build"]["args"]["TRITON_IMAGE"].rpartition(":")[2]
        for name in ("tritonserver", "ruthgen"):
            assert compose["services"][name]["image"].endswith(f"-{tag}"), name


def test_compose_tritonserver_command_equals_the_embedded_flags_when_rendered(compose):
    command = compose["services"]["tritonserver"]["command"]
    assert command == expected_triton_command()
    flags = [arg for arg in command if arg in COMMON_FLAGS]
    assert flags == list(COMMON_FLAGS)


def test_compose_tritonserver_has_gpu_reservation_only_when_gpu(compose_gpu, compose_cpu, compose_jetson):
    devices = compose_gpu["services"]["tritonserver"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in compose_cpu["services"]["tritonserver"]
    assert "deploy" not in compose_jetson["services"]["tritonserver"]
    assert compose_jetson["services"]["tritonserver"]["runtime"] == "nvidia"


def test_compose_sidecar_sees_the_hardware_it_reports_when_started(compose_gpu, compose_cpu, compose_jetson):
    devices = compose_gpu["services"]["sidecar"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["utility"]}]
    assert "deploy" not in compose_cpu["services"]["sidecar"]
    release = TEGRA_RELEASE
    mounts = _mounts(compose_jetson["services"]["sidecar"])
    assert mounts[release] == {"type": "bind", "source": release, "target": release, "read_only": True}


def test_compose_tritonserver_has_shared_memory_for_the_python_backend_when_started(compose):
    service = compose["services"]["tritonserver"]
    assert _bytes(service["shm_size"]) >= 1024**3
    assert service["ulimits"]["memlock"] == -1


def test_compose_tritonserver_healthcheck_asks_triton_readiness_when_probed(compose):
    check = compose["services"]["tritonserver"]["healthcheck"]
    assert check["test"][0] == "CMD" and check["test"][1] == "curl"
    assert check["test"][-1] == f"http://localhost:{TRITON_HTTP}/v2/health/ready"
    assert "-f" in check["test"] or "-fsS" in check["test"]


def test_compose_publishes_the_sidecar_grpc_port_and_its_http_port_on_loopback_only_when_up(compose):
    published = {name: s.get("ports", []) for name, s in compose["services"].items() if s.get("ports")}
    grpc = SidecarSettings.model_fields["grpc_port"].default
    http = SidecarSettings.model_fields["http_port"].default
    assert published == {"sidecar": [f"{grpc}:{grpc}", f"127.0.0.1:{http}:{http}"]}
    environment = compose["services"]["sidecar"]["environment"]
    assert (environment["RUTH_HTTP_HOST"], environment["RUTH_HTTP_PORT"]) == ("0.0.0.0", str(http))


def test_compose_sidecar_settings_agree_with_triton_and_the_settings_model_when_set(compose):
    sidecar = compose["services"]["sidecar"]
    environment = sidecar["environment"]
    fields = SidecarSettings.model_fields
    for key in environment:
        assert key.startswith("RUTH_") and key[5:].lower() in fields, f"{key} is no sidecar setting"
    settings = SidecarSettings.model_validate({k[5:].lower(): v for k, v in environment.items()})
    assert settings.triton_url == f"tritonserver:{TRITON_GRPC}"
    assert settings.grpc_host == "0.0.0.0"
    assert settings.grpc_port == fields["grpc_port"].default
    assert str(settings.model_repository) == REPOSITORY
    # The repository is generated by the ruthgen service, with the server's Python: not the sidecar.
    assert settings.models_dir is None


def test_compose_sidecar_waits_for_a_healthy_triton_and_shares_its_processes_when_started(compose):
    sidecar = compose["services"]["sidecar"]
    assert sidecar["depends_on"] == {"tritonserver": {"condition": "service_healthy"}}
    assert sidecar["pid"] == "service:tritonserver"
    uid = f"{RUNTIME_UID}:{RUNTIME_UID}"
    assert sidecar["user"] == compose["services"]["tritonserver"]["user"] == uid
    assert sidecar["build"]["dockerfile"] == "docker/sidecar.Dockerfile"


def test_compose_mounts_the_repository_read_only_where_the_flags_point_when_served(compose):
    triton = _mounts(compose["services"]["tritonserver"])
    sidecar = _mounts(compose["services"]["sidecar"])
    assert f"--model-repository={REPOSITORY}" in compose["services"]["tritonserver"]["command"]
    for mounts in (triton, sidecar):
        assert mounts[REPOSITORY]["type"] == "bind"
        assert mounts[REPOSITORY]["source"] == "../model_repository"
        assert mounts[REPOSITORY]["read_only"] is True
    assert triton[ENVS] == {"type": "volume", "source": "plugin-envs", "target": ENVS, "read_only": True}
    assert "plugin-envs" in compose["volumes"]


def test_compose_generator_writes_what_triton_mounts_when_run(compose, request):
    target = request.node.callspec.params["compose"]
    generator = compose["services"]["ruthgen"]
    assert generator["profiles"] == ["build"]
    assert generator["build"]["target"] == "ruthgen"
    command = generator["command"]
    assert command[0] == "build"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options == {"--target": TARGETS[target], "--models": "/opt/ruth/ai/models", "--out": REPOSITORY}
    mounts = _mounts(generator)
    assert mounts[REPOSITORY]["source"] == "../model_repository" and not mounts[REPOSITORY].get("read_only")
    assert mounts[ENVS]["source"] == "plugin-envs" and not mounts[ENVS].get("read_only")
    assert mounts["/opt/ruth/ai/models"] == {
        "type": "bind",
        "source": "../ai/models",
        "target": "/opt/ruth/ai/models",
        "read_only": True,
    }


def test_compose_stop_grace_exceeds_triton_exit_timeout_when_stopped(compose):
    grace = _duration_s(compose["services"]["tritonserver"]["stop_grace_period"])
    assert grace > EXIT_TIMEOUT_S


def test_compose_sidecar_stop_grace_fits_its_drain_before_triton_stops_when_stopped(compose):
    """`docker compose stop|down` stops the sidecar first (it depends on tritonserver) and Triton
    after the sidecar exited: the sidecar's drain and server grace fit in its stop grace."""
    sidecar = compose["services"]["sidecar"]
    assert "tritonserver" in sidecar["depends_on"]
    drain_s = float(sidecar["environment"]["RUTH_SHUTDOWN_DRAIN_S"])
    assert drain_s + SERVER_GRACE_S < _duration_s(sidecar["stop_grace_period"])


def test_compose_serving_containers_mirror_the_kubernetes_security_context_when_started(compose):
    pod = find(kustomize(K8S / "base"), "Deployment", "ruth-runtime")["spec"]["template"]["spec"]
    for name in ("tritonserver", "sidecar"):
        context = container(pod, name)["securityContext"]
        service = compose["services"][name]
        assert context["capabilities"]["drop"] == service["cap_drop"] == ["ALL"], name
        assert context["allowPrivilegeEscalation"] is False
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service.get("read_only", False) is context.get("readOnlyRootFilesystem", False), name


# --- the stand-in override (docker-compose.standin.yml) ----------------------------------------

#: What the stand-in override may set in a service: its image, build arguments (the base images and
#: their Python, which picks the lock), and pip's trust in the machine's CA bundle (a secret of the
#: build and of the ruthgen run).
STANDIN_SETTABLE = {
    ("image",),
    ("build", "args", "TRITON_IMAGE"),
    ("build", "args", "PYTHON_IMAGE"),
    ("build", "args", "PYTHON_VERSION"),
    ("build", "args", "PIP_CERT"),
    ("build", "secrets"),
    ("secrets",),
    ("environment", "PIP_CERT"),
}


def _standin_tags() -> dict[str, str]:
    script = (ROOT / "scripts" / "standin_images.sh").read_text()
    return {
        "TRITON_IMAGE": re.search(r"^TRITON_TAG=(\S+)$", script, re.M)[1],
        "PYTHON_IMAGE": re.search(r"^PYTHON_TAG=(\S+)$", script, re.M)[1],
    }


def test_standin_override_is_valid_compose_when_merged_over_the_cpu_deployment(
    compose_cpu, compose_validator
):
    merged = merge_compose(compose_cpu, load_yaml(DOCKER / "docker-compose.standin.yml"))
    errors = sorted(compose_validator.iter_errors(merged), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_standin_override_changes_only_bases_images_and_pip_trust_when_merged(compose_cpu):
    override = load_yaml(DOCKER / "docker-compose.standin.yml")
    for path in sequences_in(override):
        assert path[2:] in STANDIN_SETTABLE if path[0] == "services" else path[0] == "secrets", path
    merged = merge_compose(compose_cpu, override)
    for name, service in compose_cpu["services"].items():
        kept = {k: v for k, v in service.items() if k not in {"image", "build", "secrets", "environment"}}
        assert {k: merged["services"][name][k] for k in kept} == kept, name
        assert merged["services"][name]["image"].endswith("-standin"), "stand-in images are named apart"


def test_standin_override_names_the_python_of_its_bases_for_the_lock_when_built():
    override = load_yaml(DOCKER / "docker-compose.standin.yml")
    script = (ROOT / "scripts" / "standin_images.sh").read_text()
    python = re.search(r"python:(3\.\d+)-bookworm", script)[1]
    for name in ("tritonserver", "sidecar", "ruthgen"):
        assert override["services"][name]["build"]["args"]["PYTHON_VERSION"] == python, name


def test_standin_override_builds_on_the_images_the_script_makes_when_built():
    override = load_yaml(DOCKER / "docker-compose.standin.yml")
    tags = _standin_tags()
    secret = override["secrets"]["ca-certificates"]
    assert secret == {"file": "/etc/ssl/certs/ca-certificates.crt"}
    for name, service in override["services"].items():
        args = service["build"]["args"]
        base = "PYTHON_IMAGE" if name == "sidecar" else "TRITON_IMAGE"
        assert args[base] == tags[base], name
        assert args["PIP_CERT"] == "/run/secrets/ca-certificates"
        assert service["build"]["secrets"] == ["ca-certificates"]
    ruthgen = override["services"]["ruthgen"]  # `ruthgen build` runs pip when the service runs
    assert ruthgen["secrets"] == ["ca-certificates"]
    assert ruthgen["environment"] == {"PIP_CERT": "/run/secrets/ca-certificates"}
