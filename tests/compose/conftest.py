"""The compose stack of the tests beside this file, started once for the session.

`stack` runs, as a user would: the stand-in base images (scripts/standin_images.sh), then
`docker compose build`, `docker compose --profile build run --rm ruthgen` and `docker compose up`
with the CPU and stand-in overrides, plus an override of this run (`test-override.yml`) that
points the repository and the plugin folder at temporary folders, publishes the sidecar's ports on
loopback ports only (free ones Docker picks) and adds a backend stub for registration. Nothing is
skipped: a step that cannot run fails the tests, and every failing test gets the containers' states
and logs.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from compose_stack import (
    IMAGE_SIZES_KEY,
    ISOLATION_KEY,
    PLUGINS,
    ROOT,
    STACK_KEY,
    TIMINGS_KEY,
    Engine,
    Override,
    Running,
    Stack,
    StackError,
    build_standin_images,
    compose_binary,
    ensure_packages,
    memlock_ceiling,
    remove_replaced_images,
    write_override,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

#: Fixed, so that the plugins' environments (the project's `plugin-envs` volume) are reused by
#: the next run on the same machine.
PROJECT = "ruth-compose-test"
REPOSITORY = "/opt/ruth/model_repository"
MODELS = "/opt/ruth/ai/models"
#: Fixture plugins served beside ai/models.
FIXTURES = ("native_deadlock", "iso_hostile")
BACKEND_PORT = 8090
SIDECAR_HTTP_PORT = 8080


def _timed(timings: dict[str, float], name: str, step, *args):
    started = time.monotonic()
    result = step(*args)
    timings[name] = time.monotonic() - started
    return result


def wait_serving(stack: Stack, address: str, timeout_s: float) -> None:
    """Until the sidecar's grpc.health.v1 says SERVING; fails at once when a container went down."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            stack.fail_if_down()
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=3).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            except grpc.RpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
            time.sleep(1)
    raise StackError(
        f"the sidecar at {address} was not SERVING within {timeout_s:.0f} s (last: {last}):\n"
        f"{stack.describe()}\n{stack.logs()}"
    )


def _override(run_dir: Path, models: Path, repository: Path) -> Path:
    repository_mount = {"type": "bind", "source": str(repository), "target": REPOSITORY, "read_only": True}
    hardened = {"read_only": True, "cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"]}
    triton: dict[str, object] = {"volumes": [repository_mount]}
    ceiling = memlock_ceiling()
    if ceiling is not None:  # the deployment's `memlock: -1` cannot be granted on this machine
        triton["ulimits"] = {"memlock": ceiling}
    return write_override(
        run_dir / "test-override.yml",
        {
            "services": {
                "tritonserver": triton,
                "sidecar": {
                    "ports": Override(
                        [
                            "127.0.0.1::50051",
                            f"127.0.0.1::{SIDECAR_HTTP_PORT}",
                        ]
                    ),
                    "volumes": [repository_mount],
                    "environment": {
                        "RUTH_HTTP_HOST": "0.0.0.0",
                        "RUTH_HTTP_PORT": str(SIDECAR_HTTP_PORT),
                        "RUTH_BACKEND_URL": f"http://backend:{BACKEND_PORT}",
                        "RUTH_REGISTRATION_INTERVAL_S": "2",
                    },
                },
                "ruthgen": {
                    "volumes": [
                        {"type": "bind", "source": str(models), "target": MODELS, "read_only": True},
                        {"type": "bind", "source": str(repository), "target": REPOSITORY},
                    ]
                },
                # What the backend would be: records each registration, answers them on GET.
                "backend": {
                    "image": "ruth/sidecar:0.1.0-standin",
                    "entrypoint": ["python", "/opt/backend-stub/backend_stub.py", str(BACKEND_PORT)],
                    "user": "10001:10001",
                    **hardened,
                    "volumes": [
                        {
                            "type": "bind",
                            "source": str(Path(__file__).with_name("backend_stub.py")),
                            "target": "/opt/backend-stub/backend_stub.py",
                            "read_only": True,
                        }
                    ],
                    "ports": [f"127.0.0.1::{BACKEND_PORT}"],
                },
            }
        },
    )


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    ensure_packages()
    engine = Engine(tmp_path_factory.mktemp("dockerd") / "dockerd.log")
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def stack(engine: Engine, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    timings: dict[str, float] = {}
    run_dir = tmp_path_factory.mktemp("compose")
    models, repository = run_dir / "models", run_dir / "model_repository"
    shutil.copytree(ROOT / "ai" / "models", models)
    for name in FIXTURES:
        shutil.copytree(PLUGINS / name, models / name)
    repository.mkdir()
    stack = Stack(PROJECT, compose_binary(), [_override(run_dir, models, repository)])
    request.config.stash[STACK_KEY] = stack
    request.config.stash[TIMINGS_KEY] = timings
    stack.down()  # what an interrupted earlier run may have left
    try:
        _timed(timings, "standin_images", build_standin_images)
        _timed(timings, "build", stack.build)
        _timed(timings, "ruthgen", stack.generate)
        _timed(timings, "up", stack.up)
        ports = {
            "grpc": stack.published("sidecar", 50051),
            "http": stack.published("sidecar", SIDECAR_HTTP_PORT),
            "backend": stack.published("backend", BACKEND_PORT),
        }
        address = f"127.0.0.1:{ports['grpc']}"
        _timed(timings, "serving", wait_serving, stack, address, 300)
    except BaseException:
        stack.down()
        raise
    running = Running(
        stack=stack,
        grpc_address=address,
        http_url=f"http://127.0.0.1:{ports['http']}",
        backend_url=f"http://127.0.0.1:{ports['backend']}",
        models=models,
        repository=repository,
        timings=timings,
    )
    yield running
    stack.down()
    remove_replaced_images()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    stack = item.config.stash.get(STACK_KEY, None)
    # A failed setup raised a StackError that already holds the states and logs.
    if report.when == "call" and report.failed and stack is not None:
        try:
            report.sections.append(("compose containers", f"{stack.describe()}\n\n{stack.logs()}"))
        except StackError as exc:
            report.sections.append(("compose containers", f"could not read them: {exc}"))


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    isolation = config.stash.get(ISOLATION_KEY, None)
    if isolation:
        terminalreporter.write_line(f"compose stack, a plugin's isolation in its container: {isolation}")
    timings = config.stash.get(TIMINGS_KEY, None)
    if timings:
        steps = ", ".join(f"{name} {seconds:.0f}" for name, seconds in timings.items())
        terminalreporter.write_line(f"compose stack, seconds per step: {steps}")
    sizes = config.stash.get(IMAGE_SIZES_KEY, None)
    if sizes:
        listed = ", ".join(f"{image} {mb:.0f} MB" for image, mb in sizes.items())
        terminalreporter.write_line(f"image sizes: {listed}")
