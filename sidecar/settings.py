"""The sidecar's settings: one pydantic-settings model.

Precedence: defaults < ``RUTH_*`` environment variables < command-line flags
(``ruth-sidecar --grpc-port 6000``). Every field documents its default.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict

from ruthgen.interface import MANIFEST_FILE


class SidecarSettings(BaseSettings):
    """Settings of one sidecar process (env prefix ``RUTH_``)."""

    model_config = SettingsConfigDict(
        env_prefix="RUTH_",
        extra="ignore",
        cli_prog_name="ruth-sidecar",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_use_class_docs_for_groups=False,
    )

    grpc_host: str = Field(
        "127.0.0.1", description="address the AIRuntime gRPC service binds (0.0.0.0 in a container)"
    )
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port (0 picks a free one)")
    triton_url: str = Field("127.0.0.1:8001", description="host:port of Triton's gRPC endpoint")
    triton_metrics_url: str | None = Field(
        None,
        description="Triton's Prometheus metrics (GPU memory and utilisation for the registration); "
        "unset: http://<triton_url's host>:8002/metrics; empty: not read",
    )
    model_repository: Path = Field(
        Path("model_repository"), description=f"the generated repository holding {MANIFEST_FILE}"
    )
    request_timeout_ms: int = Field(
        7000, gt=0, le=600_000,
        description="the most a request may take: a model's own budget (its phase limits added up plus "
        "request_timeout_margin_ms) is capped by it; a smaller client deadline wins",
    )
    request_timeout_margin_ms: int = Field(
        500, ge=0, le=60_000,
        description="added to a model's phase limits for its requests' budget (queueing and transport)",
    )
    max_in_flight_per_stream: int = Field(
        64, ge=1, le=4096, description="InferStream stops reading its client when this many are in flight"
    )
    max_in_flight_per_model: int = Field(
        32, ge=1, le=4096, description="per stream and model; a request beyond it is answered OVERLOADED"
    )
    max_in_flight_unary: int = Field(
        256, ge=1, le=65536, description="unary Infer calls in flight in the process; beyond: OVERLOADED"
    )
    max_streams: int = Field(
        4000, ge=1, le=1_000_000,
        description="InferStream streams open in the process; the next is refused RESOURCE_EXHAUSTED "
        "(OVERLOADED). About 62 KB each: 4000 hold ~245 MB of the sidecar's 1 GiB Kubernetes limit",
    )
    max_streams_per_connection: int = Field(
        1000, ge=1, le=1_000_000,
        description="InferStream streams open on one client connection (HTTP/2 connection, i.e. the "
        "peer's address and port); the next is refused RESOURCE_EXHAUSTED (OVERLOADED)",
    )
    upstream_memo_entries: int = Field(
        4096, ge=0, le=1_000_000,
        description="upstream results kept for later requests of the same camera_id and frame_id (0: none)",
    )
    upstream_memo_bytes: int = Field(
        16 * 2**20, ge=0, description="the most bytes of upstream results kept (the oldest go first)"
    )
    upstream_memo_age_s: float = Field(
        2.0, ge=0, le=600,
        description="how long an upstream result is kept for another model's request on the same frame",
    )
    stream_idle_timeout_s: float = Field(
        300.0, ge=0,
        description="an InferStream with no request for this long and nothing in flight is closed "
        "(DEADLINE_EXCEEDED, code TIMEOUT); 0 never closes one",
    )
    grpc_keepalive_time_s: float = Field(
        30.0, gt=0, description="the gRPC server pings each client connection this often (HTTP/2 PING)"
    )
    grpc_keepalive_timeout_s: float = Field(
        10.0, gt=0,
        description="a connection whose ping is not answered within this is closed, with its streams",
    )
    max_frame_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="largest accepted frame; larger ones are INVALID_INPUT"
    )
    decode_once: bool = Field(
        True,
        description="a JPEG/PNG frame that one request sends to several models is decoded once, into "
        "the frame pool, and each model reads its pixels (needs Triton to share the sidecar's /dev/shm; "
        "otherwise the frame goes encoded to each model)",
    )
    # --- frames by reference (docs/sidecar.md, "Frames in shared memory") ---
    shared_memory: bool = Field(
        False,
        description="accept frames by reference in shared-memory regions of this host (same host "
        "only: the backend, the sidecar and Triton share /dev/shm)",
    )
    shared_memory_prefix: str = Field(
        "ruth-frames-", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="a region a call registers must be named with this prefix (its name in /dev/shm)",
    )
    shared_memory_max_region_bytes: int = Field(
        1024**3, ge=1024, description="largest region a call may register"
    )
    shared_memory_max_regions: int = Field(8, ge=1, le=256, description="regions one call may register")
    shared_memory_pool_bytes: int = Field(
        64 * 1024**2, ge=1024**2,
        description="the sidecar's own region, which Triton reads the frames from (reserved in /dev/shm "
        "at start with shared_memory, else at its first use by decode_once): frames by reference in "
        "flight at once must fit in it, else OVERLOADED",
    )
    shared_memory_reuse_delay_s: float = Field(
        30.0, ge=0,
        description="a pool slot whose request ended without Triton's answer (timeout, lost stream) is "
        "reused only after this long, in case Triton still reads it",
    )
    failed_request_log_per_s: float = Field(
        5.0, ge=0,
        description="failed requests logged per second and model version (one line each, the rest "
        "counted and reported on the next line); 0 turns the lines off",
    )
    failed_request_log_burst: int = Field(
        20, ge=1, description="failed requests of one model version logged at once before the rate applies"
    )
    refresh_interval_s: float = Field(
        5.0, gt=0, description="how often Triton's readiness is checked and the health windows aged"
    )
    triton_connect_timeout_s: float = Field(60.0, gt=0, description="how long to wait for Triton at startup")
    tls_cert_file: Path | None = Field(None, description="server certificate (PEM); with the key enables TLS")
    tls_key_file: Path | None = Field(None, description="server private key (PEM)")
    tls_client_ca_file: Path | None = Field(
        None, description="CA bundle (PEM); when set, clients must present a certificate it signed (mTLS)"
    )
    log_level: str = Field("INFO", description="logging level of the sidecar")
    port_file: Path | None = Field(
        None, description="write the bound gRPC port to this file once serving (for supervisors, port 0)"
    )
    # --- lifecycle, recovery, health, registration (docs/lifecycle.md) ---
    models_dir: Path | None = Field(
        None,
        description="plugin folder the sidecar owns and regenerates entries from; unset: serve the "
        "repository as built elsewhere (read-only), reloading what its manifest changes",
    )
    target: str | None = Field(
        None,
        description="build target of the entries it regenerates (cpu, gpu, jetson); unset: the hardware "
        "detected on this machine",
    )
    watch_models: bool = Field(
        True, description="watch models_dir, or poll the manifest (else: SIGHUP or the admin rescan)"
    )
    watch_debounce_s: float = Field(0.25, gt=0, description="quiet time before file changes are handled")
    manifest_poll_s: float = Field(
        2.0, gt=0, description="how often a read-only repository's manifest is checked for a rebuild"
    )
    calibrate: bool = Field(True, description="measure each model's fps capacity right after it loads")
    preferred_versions: list[str] = Field(
        default_factory=list,
        description="model_id:version pairs loaded first when GPU memory cannot hold every version "
        "(then each model's newest first)",
    )
    load_timeout_s: float = Field(60.0, gt=0, description="a load taking longer is FAILED and abandoned")
    unload_timeout_s: float = Field(10.0, gt=0, description="an unload taking longer gets its stubs killed")
    drain_timeout_s: float = Field(30.0, gt=0, description="how long an unload waits for in-flight requests")
    shutdown_drain_s: float = Field(
        15.0, ge=0,
        description="on SIGTERM: the longest the sidecar waits for its streams to answer what they hold "
        "and end",
    )
    recovery_cooldown_s: float = Field(30.0, ge=0, description="wait before each automatic reload (ERROR)")
    recovery_max_retries: int = Field(3, ge=0, description="automatic reloads before a model stays ERROR")
    timeouts_before_unhealthy: int = Field(
        3, ge=1, description="consecutive timeouts that make a model UNHEALTHY and start its hang check"
    )
    hang_check_s: float = Field(
        10.0, gt=0,
        description="after those timeouts, how long (at most; less when the model's limits are shorter) "
        "the sidecar waits for the instance to finish anything before it takes it for hung and kills it",
    )
    health_window_requests: int = Field(200, ge=1, description="requests in the health window of a model")
    health_window_s: float = Field(60.0, gt=0, description="age limit of the requests in the health window")
    health_latency_factor: float = Field(3.0, gt=1, description="latency above this x the hint degrades")
    triton_pid: int | None = Field(None, description="tritonserver pid (default: found by its gRPC port)")
    http_host: str = Field("127.0.0.1", description="address of the HTTP port (probes, metrics, admin)")
    http_port: int | None = Field(
        8080, ge=0, le=65535, description="HTTP port (0 picks a free one; none disables HTTP)"
    )
    http_tls: bool = Field(
        False, description="serve the HTTP port over TLS with tls_cert_file and tls_key_file (as gRPC)"
    )
    admin_token: str | None = Field(None, description="bearer token of POST /admin/rescan (unset: refused)")
    admin_allow_plaintext: bool = Field(
        False,
        description="accept the admin call over plain HTTP from a non-loopback client (the token then "
        "crosses the network in clear); else only over TLS or from loopback",
    )
    backend_url: str | None = Field(None, description="backend base URL for registration (unset: off)")
    backend_token: str | None = Field(None, description="bearer token sent with each registration")
    registration_interval_s: float = Field(30.0, gt=0, description="registration heartbeat period")
    runtime_id: str = Field(
        default_factory=socket.gethostname,
        description="runtime_id in the capability declaration and in HealthCheck, which clients spreading "
        "cameras over runtimes hash on (default: the host name, i.e. the pod's)",
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> SidecarSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be given together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
        if self.http_tls and self.tls_cert_file is None:
            raise ValueError("http_tls needs tls_cert_file and tls_key_file")
        return self

    @property
    def grpc_address(self) -> str:
        host = f"[{self.grpc_host}]" if ":" in self.grpc_host else self.grpc_host
        return f"{host}:{self.grpc_port}"

    @property
    def metrics_url_of_triton(self) -> str | None:
        """Where Triton's metrics are read from (None: not read)."""
        if self.triton_metrics_url is not None:
            return self.triton_metrics_url or None
        host = self.triton_url.rsplit(":", 1)[0] if ":" in self.triton_url else self.triton_url
        return f"http://{host}:8002/metrics"

    @property
    def max_message_bytes(self) -> int:
        """gRPC message limit: a frame plus room for the other fields."""
        return self.max_frame_bytes + 64 * 1024


def load_settings(argv: Sequence[str] | None = None, **overrides: object) -> SidecarSettings:
    """Settings from the environment, then ``argv`` flags (none when ``argv`` is None), then overrides."""
    if argv is None:
        return SidecarSettings(**overrides)
    return CliApp.run(SidecarSettings, cli_args=list(argv), **overrides)
