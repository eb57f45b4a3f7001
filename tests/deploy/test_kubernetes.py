"""deploy/k8s: manifests valid for Kubernetes, and the same flags, ports and paths as compose and
the sidecar's settings."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
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
    container,
    expected_triton_command,
    find,
    kustomize,
    load_yaml,
)

from sidecar.main import SERVER_GRACE_S
from sidecar.settings import SidecarSettings

#: The oldest Kubernetes minor the manifests are for (native gRPC probes are GA from 1.27).
KUBERNETES_VERSION = "1.29"
OVERLAYS = ["cpu", "gpu"]
#: Seconds between two checks of the tritonserver preStop hook (the last may start just before its cap).
PRESTOP_POLL_S = 1
#: What the pod's termination grace keeps beyond the preStop cap and Triton's exit timeout.
TERMINATION_MARGIN_S = 5


@pytest.fixture(scope="module", params=["base", *OVERLAYS])
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    name = request.param
    directory = K8S / "base" if name == "base" else K8S / "overlays" / name
    return name, kustomize(directory)


def _pod(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return find(resources, "Deployment", "ruth-runtime")["spec"]["template"]["spec"]


def test_kubernetes_resources_validate_against_the_strict_schemas_when_rendered(rendered):
    _, resources = rendered
    assert sorted((r["kind"], r["metadata"]["name"]) for r in resources) == [
        ("Deployment", "ruth-runtime"),
        ("HorizontalPodAutoscaler", "ruth-runtime"),
        ("PodDisruptionBudget", "ruth-runtime"),
        ("Service", "ruth-runtime"),
        ("Service", "ruth-runtime-headless"),
    ]
    for resource in resources:
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{resource['kind']}/{resource['metadata']['name']}: {path}: {error.message}")


def test_kubernetes_validation_rejects_a_misspelt_field_when_strict():
    resource = find(kustomize(K8S / "base"), "Deployment", "ruth-runtime")
    resource["spec"]["template"]["spec"]["shareProcessNamespaces"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_kubernetes_tritonserver_command_equals_the_embedded_flags_when_rendered(rendered):
    _, resources = rendered
    triton = container(_pod(resources), "tritonserver")
    assert triton["command"] == expected_triton_command()
    assert "args" not in triton


def test_kubernetes_command_equals_compose_when_both_are_read(rendered):
    _, resources = rendered
    compose = load_yaml(DOCKER / "docker-compose.yml")
    command = container(_pod(resources), "tritonserver")["command"]
    assert command == compose["services"]["tritonserver"]["command"]


def test_kubernetes_pod_shares_processes_between_triton_and_sidecar_when_scheduled(rendered):
    _, resources = rendered
    pod = _pod(resources)
    assert pod["shareProcessNamespace"] is True
    assert [c["name"] for c in pod["containers"]] == ["tritonserver", "sidecar"]
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsGroup"] == RUNTIME_UID
    for item in pod["containers"]:
        assert "runAsUser" not in item.get("securityContext", {}), "one uid for both containers"
    assert pod["terminationGracePeriodSeconds"] > EXIT_TIMEOUT_S


def test_kubernetes_probes_use_grpc_health_on_each_container_port_when_checked(rendered):
    _, resources = rendered
    pod = _pod(resources)
    ports = {"tritonserver": TRITON_GRPC, "sidecar": SidecarSettings.model_fields["grpc_port"].default}
    for name, port in ports.items():
        item = container(pod, name)
        assert item["readinessProbe"]["grpc"]["port"] == port, name
        assert port in {p["containerPort"] for p in item["ports"]}
    triton = container(pod, "tritonserver")
    assert triton["startupProbe"]["grpc"]["port"] == triton["livenessProbe"]["grpc"]["port"] == TRITON_GRPC
    sidecar = container(pod, "sidecar")
    named = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    liveness = sidecar["livenessProbe"]["httpGet"]
    assert liveness["path"] == "/livez"
    assert named[liveness["port"]] == SidecarSettings.model_fields["http_port"].default


def test_kubernetes_pod_has_memory_backed_shared_memory_when_scheduled(rendered):
    _, resources = rendered
    pod = _pod(resources)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container(pod, "tritonserver")["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"


def test_kubernetes_repository_is_copied_from_the_bundle_and_mounted_read_only_when_started(rendered):
    name, resources = rendered
    pod = _pod(resources)
    init = container(pod, "model-repository", key="initContainers")
    expected_tag = "gpu" if name == "gpu" else "cpu"
    assert init["image"].endswith(f"-{expected_tag}")
    init_mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    script = init["command"][-1]
    assert f"{REPOSITORY}/. {init_mounts['model-repository']}/" in script
    assert f"{ENVS}/. {init_mounts['plugin-envs']}/" in script
    for item, paths in (
        (container(pod, "tritonserver"), {REPOSITORY: "model-repository", ENVS: "plugin-envs"}),
        (container(pod, "sidecar"), {REPOSITORY: "model-repository"}),
    ):
        mounts = {m["mountPath"]: m for m in item["volumeMounts"]}
        for path, volume in paths.items():
            assert mounts[path]["name"] == volume and mounts[path]["readOnly"] is True


def test_kubernetes_sidecar_settings_agree_with_triton_and_the_settings_model_when_set(rendered):
    _, resources = rendered
    sidecar = container(_pod(resources), "sidecar")
    environment = {e["name"]: e["value"] for e in sidecar["env"]}
    fields = SidecarSettings.model_fields
    for key in environment:
        assert key.startswith("RUTH_") and key[5:].lower() in fields, f"{key} is no sidecar setting"
    settings = SidecarSettings.model_validate({k[5:].lower(): v for k, v in environment.items()})
    assert settings.triton_url == f"127.0.0.1:{TRITON_GRPC}"
    assert settings.grpc_host == settings.http_host == "0.0.0.0"
    assert settings.http_port == fields["http_port"].default
    annotations = find(resources, "Deployment", "ruth-runtime")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.http_port)
    assert settings.models_dir is None, "in a pod the repository comes from the bundle image"
    assert settings.grpc_port == fields["grpc_port"].default
    assert str(settings.model_repository) == REPOSITORY


def test_kubernetes_service_exposes_only_the_sidecar_grpc_port_when_applied(rendered):
    _, resources = rendered
    service = find(resources, "Service", "ruth-runtime")
    deployment = find(resources, "Deployment", "ruth-runtime")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    (port,) = service["spec"]["ports"]
    sidecar_ports = {p["name"]: p["containerPort"] for p in container(_pod(resources), "sidecar")["ports"]}
    default = SidecarSettings.model_fields["grpc_port"].default
    assert port["port"] == sidecar_ports[port["targetPort"]] == default
    assert port["appProtocol"] == "grpc"


def test_kubernetes_headless_service_lists_each_ready_pod_on_the_sidecar_grpc_port_when_resolved(rendered):
    _, resources = rendered
    headless = find(resources, "Service", "ruth-runtime-headless")
    deployment = find(resources, "Deployment", "ruth-runtime")
    spec = headless["spec"]
    assert spec["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert spec["clusterIP"] == "None" and "type" not in spec  # headless: one A record per pod
    assert spec["publishNotReadyAddresses"] is False  # a draining or starting pod is not in DNS
    (port,) = spec["ports"]
    sidecar_ports = {p["name"]: p["containerPort"] for p in container(_pod(resources), "sidecar")["ports"]}
    default = SidecarSettings.model_fields["grpc_port"].default
    assert port["name"] == "grpc" and port["port"] == sidecar_ports[port["targetPort"]] == default
    assert port["appProtocol"] == "grpc"
    assert find(resources, "Service", "ruth-runtime")["spec"]["ports"] == spec["ports"]


def test_kubernetes_disruption_budget_evicts_one_runtime_at_a_time_when_nodes_drain(rendered):
    _, resources = rendered
    budget = find(resources, "PodDisruptionBudget", "ruth-runtime")
    deployment = find(resources, "Deployment", "ruth-runtime")
    assert budget["apiVersion"] == "policy/v1"
    assert budget["spec"] == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}
    rolling = deployment["spec"]["strategy"]
    assert rolling["type"] == "RollingUpdate" and rolling["rollingUpdate"]["maxUnavailable"] == 0


def _prestop_cap_s(triton: dict[str, Any], sidecar_port: int) -> int:
    """The longest the tritonserver container's preStop hook waits for the sidecar's port to close."""
    program, flag, script = triton["lifecycle"]["preStop"]["exec"]["command"]
    assert (program, flag) == ("bash", "-c")
    assert f"/dev/tcp/127.0.0.1/{sidecar_port})" in script and "|| exit 0" in script
    assert f"sleep {PRESTOP_POLL_S};" in script
    found = re.fullmatch(r"while \(\( SECONDS < (\d+) \)\); do .*; done", script)
    assert found, script
    return int(found.group(1))


def test_kubernetes_termination_lets_the_sidecar_drain_before_triton_stops_when_a_pod_ends(rendered):
    """SIGTERM reaches both containers at once. The sidecar drains, then stops its server; Triton's
    preStop hook holds its SIGTERM until the sidecar's port closes; then Triton waits up to its exit
    timeout for in-flight requests. All of it within the pod's termination grace."""
    _, resources = rendered
    pod = _pod(resources)
    triton, sidecar = container(pod, "tritonserver"), container(pod, "sidecar")
    environment = {e["name"]: e["value"] for e in sidecar["env"]}
    drain_s = float(environment["RUTH_SHUTDOWN_DRAIN_S"])
    cap_s = _prestop_cap_s(triton, int(environment["RUTH_GRPC_PORT"]))
    (exit_flag,) = [flag for flag in triton["command"] if flag.startswith("--exit-timeout-secs=")]
    exit_timeout_s = int(exit_flag.split("=", 1)[1])
    assert exit_timeout_s == EXIT_TIMEOUT_S
    assert "lifecycle" not in sidecar, "the sidecar gets SIGTERM at once"
    assert drain_s + SERVER_GRACE_S <= cap_s
    grace_s = pod["terminationGracePeriodSeconds"]
    assert cap_s + PRESTOP_POLL_S + exit_timeout_s + TERMINATION_MARGIN_S <= grace_s


def test_kubernetes_gpu_overlay_gives_one_gpu_per_runtime_when_rendered(rendered):
    name, resources = rendered
    pod = _pod(resources)
    triton = container(pod, "tritonserver")
    sidecar = container(pod, "sidecar")
    assert "nvidia.com/gpu" not in sidecar["resources"].get("limits", {})
    if name == "gpu":
        assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    else:
        assert "nvidia.com/gpu" not in triton["resources"].get("limits", {})


def test_kubernetes_hpa_scales_the_runtime_deployment_when_applied(rendered):
    _, resources = rendered
    hpa = find(resources, "HorizontalPodAutoscaler", "ruth-runtime")
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ruth-runtime"}
    assert hpa["spec"]["scaleTargetRef"] == target
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_kubernetes_hpa_metric_is_the_rate_of_a_counter_the_sidecar_exports_when_scraped(rendered):
    from sidecar.report.metrics import RuntimeMetrics

    _, resources = rendered
    (metric,) = find(resources, "HorizontalPodAutoscaler", "ruth-runtime")["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert name.endswith("_per_second")
    metrics = RuntimeMetrics()
    metrics.observe("m", "1.0.0", None, 0.01)
    text = metrics.render()[0].decode()
    counter = name.removesuffix("_per_second") + "_total"
    assert f"# TYPE {counter} counter" in text or f"# TYPE {counter.removesuffix('_total')} counter" in text
    assert f"\n{counter}{{" in text
    adapter_rule = (ROOT / "docs" / "deployment.md").read_text()
    assert f'as: "{name}"' in adapter_rule and f"^{counter}$" in adapter_rule


def test_kubernetes_images_are_pinned_when_named(rendered):
    _, resources = rendered
    pod = _pod(resources)
    for item in [*pod["containers"], *pod["initContainers"]]:
        repository, _, tag = item["image"].rpartition(":")
        assert repository and tag and tag != "latest", item["image"]


def test_kustomize_renderer_refuses_fields_it_does_not_know_when_rendering(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\nimages:\n  - name: x\n    newTag: '1'\n")
    with pytest.raises(ValueError, match="images"):
        kustomize(tmp_path)
