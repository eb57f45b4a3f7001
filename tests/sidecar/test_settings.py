"""SidecarSettings: defaults < RUTH_* environment < command-line flags."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from sidecar.settings import SidecarSettings, load_settings


def test_settings_have_documented_defaults(monkeypatch):
    for name in ("RUTH_GRPC_PORT", "RUTH_TRITON_URL", "RUTH_REQUEST_TIMEOUT_MS"):
        monkeypatch.delenv(name, raising=False)
    settings = SidecarSettings()
    assert settings.grpc_port == 50051
    assert settings.request_timeout_ms == 7000
    assert settings.triton_url == "127.0.0.1:8001"
    assert settings.model_repository == Path("model_repository") and settings.models_dir is None
    assert settings.runtime_id == socket.gethostname()
    assert (settings.max_streams, settings.max_streams_per_connection) == (4000, 1000)
    assert (settings.grpc_keepalive_time_s, settings.grpc_keepalive_timeout_s) == (30.0, 10.0)
    assert settings.stream_idle_timeout_s == 300.0
    assert not settings.http_tls and not settings.admin_allow_plaintext
    assert not settings.shared_memory and settings.shared_memory_prefix == "ruth-frames-"
    assert all(field.description for field in SidecarSettings.model_fields.values())


def test_settings_take_environment_then_flags(monkeypatch):
    monkeypatch.setenv("RUTH_GRPC_PORT", "6000")
    monkeypatch.setenv("RUTH_TRITON_URL", "triton:8001")
    settings = load_settings(["--triton-url", "other:9001", "--no-watch-models", "--max-frame-bytes", "4096"])
    assert settings.grpc_port == 6000
    assert settings.triton_url == "other:9001"
    assert settings.watch_models is False
    assert settings.max_frame_bytes == 4096


def test_frames_by_reference_turn_on_with_one_environment_variable(monkeypatch):
    monkeypatch.setenv("RUTH_SHARED_MEMORY", "true")
    assert load_settings([]).shared_memory is True
    with pytest.raises(ValidationError, match="shared_memory_prefix"):
        load_settings(shared_memory_prefix="../etc")


def test_settings_refuse_half_a_tls_configuration(tmp_path):
    with pytest.raises(ValidationError, match="together"):
        SidecarSettings(tls_cert_file=tmp_path / "c.pem")
    with pytest.raises(ValidationError, match="mTLS"):
        SidecarSettings(tls_client_ca_file=tmp_path / "ca.pem")
    with pytest.raises(ValidationError, match="http_tls needs"):
        SidecarSettings(http_tls=True)


def test_settings_format_ipv6_address():
    assert SidecarSettings(grpc_host="::1", grpc_port=1).grpc_address == "[::1]:1"
