"""The launcher's code in front of the server (no server started here; see the integration tests)."""

import socket

import pytest

from ruthgen.embedded import launcher
from ruthgen.embedded.errors import EmbeddedTritonError, TritonStartError
from ruthgen.embedded.launcher import EmbeddedTriton


def test_choose_ports_keeps_requested_and_picks_distinct_free_ones():
    ports = launcher._choose_ports("127.0.0.1", {"http": 8123, "grpc": None, "metrics": None})
    assert ports["http"] == 8123
    assert ports["grpc"] != ports["metrics"]
    for port in (ports["grpc"], ports["metrics"]):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_urls_use_loopback_when_bound_to_every_address():
    triton = EmbeddedTriton("/tmp", host="0.0.0.0")
    triton.ports = {"http": 1, "grpc": 2, "metrics": 3}
    assert (triton.http_url, triton.grpc_url, triton.metrics_url) == (
        "http://127.0.0.1:1", "127.0.0.1:2", "http://127.0.0.1:3/metrics"
    )


def test_start_fails_when_repository_is_missing(tmp_path):
    with pytest.raises(TritonStartError, match="is not a folder"):
        EmbeddedTriton(tmp_path / "nope").start()


def test_start_fails_when_repository_path_is_not_shell_safe(tmp_path):
    repo = tmp_path / "my models"
    repo.mkdir()
    with pytest.raises(TritonStartError, match="bash -c"):
        EmbeddedTriton(repo).start()


def test_stop_returns_none_and_wait_fails_when_never_started(tmp_path):
    triton = EmbeddedTriton(tmp_path)
    assert triton.stop() is None
    with pytest.raises(EmbeddedTritonError):
        triton.wait()
    assert not triton.running
