"""The stub killer against real processes: only the stubs of one model, only under our server."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from ruthgen.embedded.stubs import find_server
from sidecar.control.recovery import StubKiller

_SPAWNER = textwrap.dedent(
    """
    import subprocess, sys, time
    stub, names = sys.argv[1], sys.argv[2:]
    sleep = "import time; time.sleep(60)"
    # Triton 2.51's stub: ... <instance name> [<runtime>], e.g. "hang__1.0.0_0_0 DEFAULT"
    children = [subprocess.Popen([stub, "-c", sleep, "/r/model.py", *n.split()]) for n in names]
    print(" ".join(str(c.pid) for c in children), flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def servers(tmp_path: Path):
    """Two fake servers, each the parent of processes whose command lines look like stubs."""
    stub = tmp_path / "triton_python_backend_stub"
    stub.symlink_to(sys.executable)
    started: list[subprocess.Popen] = []

    def server(*instances: str) -> tuple[int, list[int]]:
        process = subprocess.Popen([sys.executable, "-c", _SPAWNER, str(stub), *instances],
                                   stdout=subprocess.PIPE, text=True)
        started.append(process)
        pids = [int(p) for p in process.stdout.readline().split()]
        return process.pid, pids

    yield server
    for process in started:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        process.wait()


def _until_found(killer: StubKiller, name: str, count: int) -> list[int]:
    deadline = time.monotonic() + 10
    while len(found := killer.find(name)) < count and time.monotonic() < deadline:  # until they exec'd
        time.sleep(0.02)
    return found


def test_stub_killer_finds_only_our_servers_stubs_of_that_model(servers):
    ours, (hang0, hang1, other_slot, _other_model) = servers(
        "hang__1.0.0_0_0", "hang__1.0.0_0_1 DEFAULT", "hang__1.0.0__b_0_0 DEFAULT", "other__1.0.0_0_0"
    )
    servers("hang__1.0.0_0_0")  # somebody else's server
    killer = StubKiller(lambda: ours)
    assert _until_found(killer, "hang__1.0.0", 2) == sorted([hang0, hang1])
    assert _until_found(killer, "hang__1.0.0__b", 1) == [other_slot]
    assert killer.find("missing__1.0.0") == []


def test_stub_killer_kills_the_stubs_and_spares_the_rest(servers):
    ours, (hang, other) = servers("hang__1.0.0_0_0", "other__1.0.0_0_0")
    killer = StubKiller(lambda: ours)
    _until_found(killer, "hang__1.0.0", 1)
    assert killer.kill("hang__1.0.0", wait_s=5.0) == [hang]
    deadline = time.monotonic() + 5
    while psutil.pid_exists(hang) and psutil.Process(hang).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert psutil.Process(other).is_running() and psutil.Process(ours).is_running()


def test_stub_killer_finds_nothing_when_the_server_is_not_visible(servers):
    servers("hang__1.0.0_0_0")
    assert StubKiller(lambda: None).find("hang__1.0.0") == []


def test_find_server_knows_a_tritonserver_by_its_grpc_port(tmp_path):
    binary = tmp_path / "tritonserver"
    binary.symlink_to(sys.executable)
    process = subprocess.Popen([str(binary), "-c", "import time; time.sleep(60)", "--grpc-port=18321"])
    try:
        deadline = time.monotonic() + 10
        while find_server(18321) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert find_server(18321) == process.pid
        assert find_server(18322) is None
        assert StubKiller.for_server(None, 18321)._server_pid() == process.pid
        assert StubKiller.for_server(77, 18321)._server_pid() == 77
    finally:
        process.kill()
        process.wait()
