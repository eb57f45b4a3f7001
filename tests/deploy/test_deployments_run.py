"""What the deployment files describe, run here without Docker or Kubernetes.

* The tritonserver is the embedded one, started with the container's command (its paths and ports
  mapped to this machine's, nothing else).
* The sidecar runs as its image's ENTRYPOINT with exactly the environment of the sidecar container
  of ``deploy/k8s/base/deployment.yaml`` or the sidecar service of ``docker/docker-compose.yml``
  (container paths mapped to temporary folders, its own ports to 0: it binds free ones and says
  which), plus ``RUTH_BACKEND_URL`` as ``docs/deployment.md`` says to add it.
* Then the test asks what Kubernetes, Prometheus and the HPA would ask: the readiness probe (gRPC
  health), the liveness probe, the scrape annotation's port and path, the counter behind the HPA's
  metric, and the backend's registration; and the tritonserver container's preStop hook runs (its
  port mapped the same way) while the sidecar serves and after it got SIGTERM.
* Each image stage is installed into a fresh virtual environment from exactly the paths the stage
  COPYs and the packages it installs, and its entrypoint is run: ``ruthgen build`` of the generator
  stage builds the repository that the sidecar stage then serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import psutil
import pytest
import yaml
from deploy_loaders import (
    DOCKER,
    K8S,
    REPOSITORY,
    container,
    expected_triton_command,
    find,
    kustomize,
    load_yaml,
    merge_compose,
    parse_dockerfile,
    pip_installs,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from ruthgen.embedded import EmbeddedTriton
from ruthgen.embedded.flags import ALL_MODELS
from sidecar.client import AIRuntimeClient, result_dict
from tests.backend import FakeBackend
from tests.distribution import local_install
from tests.processes import stop

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "tests" / "testdata" / "plugins" / "lc_echo"
TRITON_GRPC, SIDECAR_GRPC, SIDECAR_HTTP = 8001, 50051, 8080


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((48, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


# ---- image stages --------------------------------------------------------------------------------


class StageInstall:
    """One Dockerfile stage, replayed into a fresh venv: its COPYs into ``src``, its pip installs;
    the image's ENTRYPOINT (the stage's own, else the final stage's) runs from that venv."""

    def __init__(self, dockerfile: str, stage: str | None, root: Path) -> None:
        parsed = parse_dockerfile(DOCKER / dockerfile)
        self.stage = parsed.stage(stage) if stage else parsed.stages[0]
        self.chain = [self.stage]  # the stage and those it is built FROM, outermost first
        names = {s.name for s in parsed.stages}
        while self.chain[0].base in names:
            self.chain.insert(0, parsed.stage(self.chain[0].base))
        (self._entrypoint,) = self.stage.values("ENTRYPOINT") or parsed.stages[-1].values("ENTRYPOINT")
        self.src = root / "src"
        self.venv = root / "venv"
        self.src.mkdir(parents=True)

    def values(self, keyword: str) -> list[str]:
        return [value for stage in self.chain for value in stage.values(keyword)]

    def copy_sources(self) -> list[str]:
        """Copy what the stage's COPY instructions take from the build context; return those paths.

        The image's Python is this interpreter: ``${PYTHON_VERSION}`` picks its lock, which lands
        as ``constraints.txt``, where the stage's pip reads it.
        """
        taken = []
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        for value in self.values("COPY"):
            words = shlex.split(value.replace("${PYTHON_VERSION}", python))
            if any(w.startswith("--from=") for w in words):
                continue
            for source in [w for w in words[:-1] if not w.startswith("--")]:
                path = ROOT / source
                assert path.exists(), f"the build context has no {source} (Python {python} unsupported?)"
                target = self.src / ("constraints.txt" if source.startswith("constraints/") else source)
                if target.exists():
                    continue
                if path.is_dir():
                    shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(path, target)
                taken.append(source)
        return taken

    def install(self) -> None:
        venv.EnvBuilder(with_pip=True).create(self.venv)
        pip = [str(self.venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        for run in self.values("RUN"):
            for arguments in pip_installs(run):
                mapped = [self._local(word) for word in arguments]
                result = subprocess.run([*pip, *mapped], cwd=self.src, capture_output=True, text=True,
                                        timeout=900)
                assert result.returncode == 0, f"pip install {' '.join(mapped)}:\n{result.stderr[-3000:]}"

    def _local(self, word: str) -> str:
        """Container paths of the build (constraints, the copied source, with its extras: ``.[sidecar]``,
        ``/opt/ruth/src[generator]``) -> the copies under ``src``."""
        if word.endswith("constraints.txt"):
            return str(self.src / "constraints.txt")
        project = local_install(word)
        if project is not None and project[0] in (".", "/opt/ruth/src"):
            extras = project[1]
            return str(self.src) + (f"[{','.join(extras)}]" if extras else "")
        return word

    def entrypoint(self) -> list[str]:
        program, *arguments = yaml.safe_load(self._entrypoint)
        return [str(self.venv / "bin" / program), *arguments]

    def environment(self, root: Path) -> dict[str, str]:
        """The stage's ENV settings, container paths under ``root``."""
        found = {}
        for value in self.values("ENV"):
            for item in shlex.split(value):
                key, _, setting = item.partition("=")
                found[key] = str(in_container(root, setting)) if setting.startswith("/opt/") else setting
        return found


@pytest.fixture(scope="module")
def generator_stage(tmp_path_factory) -> StageInstall:
    stage = StageInstall("triton.Dockerfile", "ruthgen", tmp_path_factory.mktemp("ruthgen-stage"))
    assert {"ruthgen", "templates", "pyproject.toml"} <= set(stage.copy_sources())
    stage.install()
    return stage


@pytest.fixture(scope="module")
def sidecar_stage(tmp_path_factory) -> StageInstall:
    stage = StageInstall("sidecar.Dockerfile", None, tmp_path_factory.mktemp("sidecar-stage"))
    assert "sidecar" in stage.copy_sources()
    stage.install()
    assert stage.entrypoint()[1:] == ["-m", "sidecar"]
    return stage


# ---- the generator stage builds, the server and the sidecar serve -------------------------------


@pytest.fixture(scope="module")
def container_root(tmp_path_factory) -> Path:
    """Where ``/`` of the containers lands on this machine."""
    return tmp_path_factory.mktemp("containers")


def cpu_compose() -> dict[str, Any]:
    """The compose model a CPU machine runs: the base file and the CPU override, merged."""
    base, cpu = load_yaml(DOCKER / "docker-compose.yml"), load_yaml(DOCKER / "docker-compose.cpu.yml")
    return merge_compose(base, cpu)


def in_container(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


@pytest.fixture(scope="module")
def repository(generator_stage, container_root) -> Path:
    """`docker compose --profile build run ruthgen` (CPU override): the stage's entrypoint and command."""
    service = cpu_compose()["services"]["ruthgen"]
    models = in_container(container_root, "/opt/ruth/ai/models")
    shutil.copytree(PLUGIN, models / PLUGIN.name)
    command = [in_container(container_root, w) if w.startswith("/opt/") else w for w in service["command"]]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RUTH_")}
    environment |= generator_stage.environment(container_root)
    assert "RUTH_ENV_CACHE" in environment  # the plugins' environments land where Triton reads them
    run = container_root / "run-ruthgen"
    run.mkdir()
    result = subprocess.run([*generator_stage.entrypoint(), *map(str, command)], cwd=run, env=environment,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    repository = in_container(container_root, REPOSITORY)
    assert (repository / "lc_echo__1.0.0" / "config.pbtxt").is_file(), result.stdout
    return repository


@pytest.fixture(scope="module")
def triton(repository, container_root, tmp_path_factory) -> Iterator[EmbeddedTriton]:
    """The tritonserver container's command, on this machine."""
    server = EmbeddedTriton(repository, host="0.0.0.0", load_models=ALL_MODELS, exit_timeout_s=25,
                            log_path=tmp_path_factory.mktemp("triton") / "tritonserver.log").start()
    try:
        yield server
    finally:
        server.stop()


def test_the_generator_stage_builds_the_repository_with_this_python(repository):
    """The generator image's steps and entrypoint, on this interpreter and its lock (3.10 in the
    Python matrix: the Python of NVIDIA's image)."""
    manifest = (repository / "ruth-manifest.json").read_text()
    assert '"state": "VALID"' in manifest and "lc_echo__1.0.0" in manifest
    env_link = repository / "lc_echo__1.0.0" / "env"
    assert not env_link.exists(), "lc_echo has no requirements: it runs on the image's own Python"


def test_the_embedded_server_runs_the_containers_command(triton, repository):
    running = psutil.Process(triton.process.pid).cmdline()[1:]
    backends = next(flag.split("=", 1)[1] for flag in running if flag.startswith("--backend-directory="))
    local = {
        "--model-repository": str(repository), "--backend-directory": backends,
        "--http-port": str(triton.ports["http"]), "--grpc-port": str(triton.ports["grpc"]),
        "--metrics-port": str(triton.ports["metrics"]),
    }
    expected = []
    for flag in expected_triton_command()[1:]:
        key, sep, _ = flag.partition("=")
        expected.append(f"{key}={local[key]}" if sep and key in local else flag)
    assert [flag for flag in expected if flag not in running] == []
    extra = [flag for flag in running if flag not in expected]
    assert all("shm-region-prefix-name" in flag for flag in extra), extra  # only its own shm regions


class RunningSidecar:
    """The sidecar process: it bound free ports for the container's and says which (the gRPC one in
    its port file once serving, the HTTP one in its log)."""

    def __init__(self, process: subprocess.Popen[str], port_file: Path, log: Path) -> None:
        self.process, self.port_file, self.log = process, port_file, log

    async def local(self, container_port: int, timeout_s: float = 90.0) -> int:
        """The port of this machine that stands for the container's ``container_port``."""
        deadline = time.monotonic() + timeout_s
        while (port := self._bound(container_port)) is None:
            tail = self.log.read_text()[-3000:]
            assert self.process.poll() is None, f"the sidecar exited:\n{tail}"
            assert time.monotonic() < deadline, f"the sidecar said no port for {container_port}:\n{tail}"
            await asyncio.sleep(0.1)
        return port

    def _bound(self, container_port: int) -> int | None:
        if container_port == SIDECAR_GRPC:
            written = self.port_file.read_text() if self.port_file.exists() else ""
            return int(written) if written.strip() else None
        assert container_port == SIDECAR_HTTP, container_port
        found = re.search(r"HTTP \(probes.*\) on [0-9.]+:(\d+)", self.log.read_text())
        return int(found.group(1)) if found else None


@contextlib.contextmanager
def sidecar_container(
    stage: StageInstall, environment: dict[str, str], triton: EmbeddedTriton, root: Path, backend_url: str
) -> Iterator[RunningSidecar]:
    """The sidecar image's ENTRYPOINT with the container's environment (paths and ports mapped)."""
    ports = {TRITON_GRPC: triton.ports["grpc"], SIDECAR_GRPC: 0, SIDECAR_HTTP: 0}
    mapped = {}
    for key, value in environment.items():
        value = str(value)
        if value.startswith("/opt/"):
            value = str(in_container(root, value))
        host, _, port = value.rpartition(":")
        if port.isdigit() and int(port) in ports and host:
            value = f"127.0.0.1:{ports[int(port)]}"  # the pod's loopback, or the compose service name
        elif value.isdigit() and int(value) in ports:
            value = str(ports[int(value)])
        mapped[key] = value
    mapped["RUTH_BACKEND_URL"] = backend_url  # as docs/deployment.md says to enable registration
    own = Path(tempfile.mkdtemp(prefix="sidecar-", dir=root))
    log, port_file = own / "sidecar.log", own / "grpc.port"
    mapped["RUTH_PORT_FILE"] = str(port_file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUTH_")} | mapped
    run = root / "run-sidecar"
    run.mkdir(exist_ok=True)
    with open(log, "w") as out:
        process = subprocess.Popen(stage.entrypoint(), cwd=run, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   text=True)
    try:
        yield RunningSidecar(process, port_file, log)
    finally:
        stop(process)


async def grpc_health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                                timeout=2)
        return reply.status


async def until_serving(sidecar: RunningSidecar, port: int, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert sidecar.process.poll() is None, f"the sidecar exited:\n{sidecar.log.read_text()[-3000:]}"
        with contextlib.suppress(grpc.aio.AioRpcError):
            if await grpc_health(port) == health_pb2.HealthCheckResponse.SERVING:
                return
        assert time.monotonic() < deadline, f"never SERVING:\n{sidecar.log.read_text()[-3000:]}"
        await asyncio.sleep(0.25)


def hpa_source_counter() -> str:
    """The Prometheus counter behind the HPA's metric, by the adapter rule docs/deployment.md gives."""
    hpa = find(kustomize(K8S / "base"), "HorizontalPodAutoscaler", "ruth-runtime")
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    docs = (ROOT / "docs" / "deployment.md").read_text()
    block = re.search(r"```yaml\n(rules:.*?)```", docs, re.S)
    assert block, "docs/deployment.md has no prometheus-adapter rule"
    (rule,) = [r for r in yaml.safe_load(block.group(1))["rules"] if r["name"]["as"] == name]
    return re.match(r"\^?(\w+)\$?", rule["name"]["matches"]).group(1)


async def probe_like_the_platform(sidecar: RunningSidecar, readiness_port: int, http_paths: dict[str, int],
                                  backend: FakeBackend) -> dict[str, Any]:
    """Readiness, liveness, an inference, the scrape and the registration; what was seen."""
    await until_serving(sidecar, await sidecar.local(readiness_port))
    async with AIRuntimeClient(f"127.0.0.1:{await sidecar.local(SIDECAR_GRPC)}") as client:
        response = await client.infer("lc_echo", "1.0.0", jpeg(), frame_id="parity")
    assert response.HasField("result"), response.error
    seen: dict[str, Any] = {"result": result_dict(response)}
    async with httpx.AsyncClient(timeout=5) as http:
        for path, port in http_paths.items():
            reply = await http.get(f"http://127.0.0.1:{await sidecar.local(port)}{path}")
            seen[path] = (reply.status_code, reply.text)
    deadline = time.monotonic() + 30
    while not backend.received:
        assert time.monotonic() < deadline, "no registration reached the backend"
        await asyncio.sleep(0.1)
    seen["registration"] = backend.received[-1]
    return seen


async def test_the_kubernetes_pod_serves_and_answers_the_probes_scrape_and_hpa(
    sidecar_stage, triton, container_root
):
    deployment = find(kustomize(K8S / "base"), "Deployment", "ruth-runtime")
    pod = deployment["spec"]["template"]
    spec = container(pod["spec"], "sidecar")
    assert "command" not in spec and "args" not in spec  # the image's ENTRYPOINT runs
    environment = {item["name"]: item["value"] for item in spec["env"]}
    named_ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    readiness, liveness = spec["readinessProbe"], spec["livenessProbe"]
    annotations = pod["metadata"]["annotations"]
    liveness_port = liveness["httpGet"]["port"]
    liveness_port = named_ports.get(liveness_port, liveness_port)
    scrape = {annotations["prometheus.io/path"]: int(annotations["prometheus.io/port"])}
    async with FakeBackend() as backend:
        with sidecar_container(sidecar_stage, environment, triton, container_root, backend.url) as sidecar:
            seen = await probe_like_the_platform(
                sidecar, readiness["grpc"]["port"], {liveness["httpGet"]["path"]: liveness_port, **scrape,
                                                     "/readyz": SIDECAR_HTTP}, backend)
    assert seen["result"]["generation"] == 1
    assert seen[liveness["httpGet"]["path"]][0] == 200
    assert seen["/readyz"][0] == 200
    status, metrics = seen[annotations["prometheus.io/path"]]
    counter = hpa_source_counter()
    assert status == 200 and counter == "ruth_requests_total"
    assert re.search(rf'^{counter}{{code="OK",model_id="lc_echo",version="1.0.0"}} [1-9]', metrics, re.M)
    registration = seen["registration"]
    assert registration["runtime_id"] == socket.gethostname()  # one per replica: the pod's name
    assert {(m["model_id"], m["state"]) for m in registration["models"]} == {("lc_echo", "READY")}


async def test_the_compose_services_serve_and_answer_on_the_published_ports(
    sidecar_stage, triton, container_root
):
    compose = cpu_compose()
    service = compose["services"]["sidecar"]
    assert "command" not in service and "entrypoint" not in service
    healthcheck = compose["services"]["tritonserver"]["healthcheck"]["test"][-1]
    async with httpx.AsyncClient(timeout=5) as http:
        ready = await http.get(healthcheck.replace("localhost:8000", f"127.0.0.1:{triton.ports['http']}"))
    assert ready.status_code == 200  # the condition the sidecar's depends_on waits for
    published = {int(p.rsplit(":", 1)[1]) for p in service["ports"]}
    assert published == {SIDECAR_GRPC, SIDECAR_HTTP}
    async with FakeBackend() as backend:
        environment = service["environment"]
        with sidecar_container(sidecar_stage, environment, triton, container_root, backend.url) as sidecar:
            paths = {"/readyz": SIDECAR_HTTP, "/metrics": SIDECAR_HTTP}
            seen = await probe_like_the_platform(sidecar, SIDECAR_GRPC, paths, backend)
    assert seen["/readyz"][0] == 200 and "ruth_requests_total" in seen["/metrics"][1]
    assert {(m["model_id"], m["state"]) for m in seen["registration"]["models"]} == {("lc_echo", "READY")}


def in_pod_loopback(command: list[str], ports: dict[int, int]) -> list[str]:
    """A container's command with the pod's loopback ports (``127.0.0.1:PORT``, bash's
    ``/dev/tcp/127.0.0.1/PORT``) mapped to this machine's, as :func:`sidecar_container` maps them."""
    pattern = re.compile(r"\b127\.0\.0\.1([:/])(\d+)\b")

    def mapped(found: re.Match[str]) -> str:
        port = int(found.group(2))
        return f"127.0.0.1{found.group(1)}{ports[port]}" if port in ports else found.group(0)

    return [pattern.sub(mapped, word) for word in command]


async def test_the_tritonserver_prestop_hook_waits_until_the_kubernetes_sidecar_drained(
    sidecar_stage, triton, container_root
):
    """Kubernetes sends SIGTERM to both containers of the pod at once; the tritonserver container's
    preStop hook holds Triton's until the sidecar has drained and closed its gRPC port."""
    pod = find(kustomize(K8S / "base"), "Deployment", "ruth-runtime")["spec"]["template"]["spec"]
    hook = container(pod, "tritonserver")["lifecycle"]["preStop"]["exec"]["command"]
    spec = container(pod, "sidecar")
    environment = {item["name"]: item["value"] for item in spec["env"]}
    assert "RUTH_SHUTDOWN_DRAIN_S" in environment
    async with FakeBackend() as backend:
        with sidecar_container(sidecar_stage, environment, triton, container_root, backend.url) as sidecar:
            port = await sidecar.local(SIDECAR_GRPC)
            await until_serving(sidecar, port)
            command = in_pod_loopback(hook, {SIDECAR_GRPC: port})
            assert command != hook, f"the hook names no port of the pod's loopback: {hook}"
            hook_output = container_root / "prestop.log"
            with open(hook_output, "w") as out:
                prestop = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True)
            try:
                await asyncio.sleep(2.0)
                assert prestop.poll() is None, (
                    f"the hook returned while the sidecar serves:\n{hook_output.read_text()}"
                )
                sidecar.process.terminate()  # the kubelet's SIGTERM
                try:
                    code = await asyncio.to_thread(sidecar.process.wait, 60)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"the sidecar did not exit after SIGTERM:\n{sidecar.log.read_text()[-3000:]}")
                log = sidecar.log.read_text()
                assert code == 0, f"the sidecar exited with {code}:\n{log[-3000:]}"
                assert "draining" in log, log[-3000:]
                try:
                    hook_code = await asyncio.to_thread(prestop.wait, 10)
                except subprocess.TimeoutExpired:
                    pytest.fail("the hook still waits 10 s after the sidecar exited")
                assert hook_code == 0, hook_output.read_text()
            finally:
                stop(prestop, timeout_s=1)
