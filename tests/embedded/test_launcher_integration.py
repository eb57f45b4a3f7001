"""The embedded tritonserver, for real: start, serve, load, stop, leave nothing behind."""

import os
import signal
import socket
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from ruthgen.embedded import cleanup
from ruthgen.embedded.errors import TritonModelError, TritonStartError
from ruthgen.embedded.flags import ALL_MODELS
from ruthgen.embedded.launcher import EmbeddedTriton

pytestmark = pytest.mark.integration

START_DEADLINE_S = 30


def _echo(triton: EmbeddedTriton, values=(1, 2, 255)) -> list[int]:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        data = np.array(values, dtype=np.uint8)
        tensor = grpcclient.InferInput("IN", list(data.shape), "UINT8")
        tensor.set_data_from_numpy(data)
        return client.infer("echo", [tensor], client_timeout=10).as_numpy("OUT").tolist()
    finally:
        client.close()


def _states(triton: EmbeddedTriton) -> dict[str, tuple[str, str]]:
    return {m["name"]: (m["state"], m["reason"]) for m in triton.repository_index()}


def _assert_nothing_left(prefix: str) -> None:
    assert cleanup.stub_pids(prefix) == []
    assert cleanup.shm_regions(prefix) == []


def test_server_is_ready_and_model_answers_within_deadline(repository, triton_factory):
    began = time.monotonic()
    triton = triton_factory(repository, load_models=["echo"], startup_timeout_s=START_DEADLINE_S)
    assert time.monotonic() - began < START_DEADLINE_S
    assert triton.is_ready() and triton.running
    assert _echo(triton) == [2, 3, 0]
    assert _states(triton)["echo"] == ("READY", "")
    assert cleanup.stub_pids(triton.shm_prefix), "the model's stub runs under this server's prefix"
    assert cleanup.shm_regions(triton.shm_prefix)


def test_stop_leaves_no_stub_and_no_shm_region_of_the_server(repository, tmp_path):
    triton = EmbeddedTriton(repository, load_models=["echo"], log_path=tmp_path / "log.txt").start()
    prefix, process = triton.shm_prefix, triton.process
    assert _echo(triton) == [2, 3, 0]
    assert triton.stop() == 0
    assert process.returncode == 0
    _assert_nothing_left(prefix)
    assert "successfully unloaded 'echo'" in (tmp_path / "log.txt").read_text()


def test_stop_cleans_up_when_server_was_killed_from_outside(repository, tmp_path):
    triton = EmbeddedTriton(repository, load_models=["echo"], log_path=tmp_path / "log.txt").start()
    prefix = triton.shm_prefix
    os.kill(triton.process.pid, signal.SIGKILL)
    assert triton.wait() == -signal.SIGKILL
    assert triton.stop() == -signal.SIGKILL
    _assert_nothing_left(prefix)


def test_two_servers_run_side_by_side_and_stopping_one_spares_the_other(repository, triton_factory):
    first = triton_factory(repository, load_models=["echo"])
    second = triton_factory(repository, load_models=["echo"])
    assert len({first.grpc_url, second.grpc_url, first.http_url, second.http_url}) == 4
    assert first.shm_prefix != second.shm_prefix
    assert _echo(first) == _echo(second) == [2, 3, 0]
    second_prefix = second.shm_prefix
    first.stop()
    assert cleanup.stub_pids(second_prefix) and cleanup.shm_regions(second_prefix)
    assert _echo(second, (7,)) == [8]


def test_start_fails_clearly_when_grpc_port_is_occupied(repository, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        triton = EmbeddedTriton(repository, grpc_port=port, http_port=None, log_path=tmp_path / "log.txt")
        with pytest.raises(TritonStartError, match=rf"(?s)exited with code .*{port}.*already in use"):
            triton.start()
    assert not triton.running
    _assert_nothing_left(triton.shm_prefix)


def test_start_fails_with_log_tail_when_not_ready_in_time(repository, tmp_path):
    triton = EmbeddedTriton(repository, load_models=["echo"], startup_timeout_s=0.05, log_path=tmp_path / "l")
    with pytest.raises(TritonStartError, match=r"not ready within 0\.05 s"):
        triton.start()
    assert triton.process is None
    _assert_nothing_left(triton.shm_prefix)


def test_load_and_unload_report_state_and_reason(repository, triton_factory):
    triton = triton_factory(repository)
    assert _states(triton)["echo"] == ("", "")
    triton.load("echo")
    assert _states(triton)["echo"] == ("READY", "")
    with pytest.raises(TritonModelError, match=r"weights\.bin is missing"):
        triton.load("broken")
    state, reason = _states(triton)["broken"]
    assert state == "UNAVAILABLE" and "weights.bin is missing" in reason
    triton.unload("echo")
    assert _states(triton)["echo"] == ("UNAVAILABLE", "unloaded")
    assert triton.is_ready()


def test_start_with_all_models_stays_ready_when_one_model_fails(repository, triton_factory):
    triton = triton_factory(repository, load_models=ALL_MODELS)
    states = _states(triton)
    assert states["echo"] == ("READY", "")
    assert states["broken"][0] == "UNAVAILABLE"
    assert _echo(triton) == [2, 3, 0]


def test_stub_runs_this_interpreter(repository, triton_factory, model_writer):
    model_writer(repository, "pyinfo", source=PYINFO_MODEL)
    triton = triton_factory(repository, load_models=["pyinfo"])
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    tensor = grpcclient.InferInput("IN", [1], "UINT8")
    tensor.set_data_from_numpy(np.zeros(1, dtype=np.uint8))
    out = client.infer("pyinfo", [tensor]).as_numpy("OUT").tobytes().decode()
    client.close()
    import sys

    assert out == f"{sys.version}|{sys.prefix}"


PYINFO_MODEL = """\
import sys
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        info = np.frombuffer(f"{sys.version}|{sys.prefix}".encode(), dtype=np.uint8)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", info)]) for _ in requests]
"""
