"""Child processes started through ``bound_to_parent`` end with their parent, and start reliably
from a process that has live gRPC channels (the case a ``preexec_fn`` breaks)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent import futures

import grpc
import psutil
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ruthgen.children import bound_to_parent


def test_the_command_runs_as_itself_with_its_exit_code(tmp_path) -> None:
    run = subprocess.run(
        bound_to_parent([sys.executable, "-c", "import os, sys; print(os.getpid()); sys.exit(7)"]),
        capture_output=True, text=True, check=False,
    )
    assert run.returncode == 7
    assert run.stdout.strip().isdigit()


def test_the_child_gets_sigterm_when_its_parent_is_killed(tmp_path) -> None:
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, sys, time
        from ruthgen.children import bound_to_parent
        child = subprocess.Popen(bound_to_parent(["sleep", "60"]))
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(60)
    """)])
    try:
        deadline = time.monotonic() + 20
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline, "the parent did not start its child"
            time.sleep(0.05)
        child = psutil.Process(int(pid_file.read_text()))
        deadline = time.monotonic() + 10
        while child.name() != "sleep":  # the launcher has exec'd the command
            assert time.monotonic() < deadline
            time.sleep(0.02)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        gone, _ = psutil.wait_procs([child], timeout=10)
        assert gone, "the child outlived its parent"
    finally:
        parent.kill()
        parent.wait()


def test_starts_cleanly_beside_busy_grpc_channels() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            stub.Check(health_pb2.HealthCheckRequest())

    workers = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    for worker in workers:
        worker.start()
    failures = []
    try:
        for _ in range(150):
            run = subprocess.run(bound_to_parent(["/bin/true"]), capture_output=True, check=False)
            if run.returncode != 0:
                failures.append((run.returncode, run.stderr[-300:]))
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        channel.close()
        server.stop(None)
    assert failures == [], failures
