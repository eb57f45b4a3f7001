"""The tritonserver flags of every deployment (embedded, docker compose, Kubernetes), in one place.

`COMMON_FLAGS` is what every Ruth Triton runs with; `server_args()` adds what differs between
deployments: the repository, the backend folder, the addresses, the ports and the models loaded at
start. Deployment files are checked against `COMMON_FLAGS`, so it stays a plain tuple of
`--key=value` strings (`--disable-auto-complete-config` is a switch: tritonserver refuses a value).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

#: Load all models at start (``--load-model=*``).
ALL_MODELS = "*"

COMMON_FLAGS: tuple[str, ...] = (
    # Models are loaded and unloaded through the repository API only (ruthgen, the sidecar).
    "--model-control-mode=explicit",
    # One broken plugin must not make the whole server not-ready, nor stop it from starting.
    "--strict-readiness=false",
    "--exit-on-error=false",
    # The generated config.pbtxt is complete: skip the extra stub launch per load (~1.2 s each).
    "--disable-auto-complete-config",
    # Room for a few requests' frames before the stub's shared memory has to grow: a 1080p RGB
    # frame is ~6 MiB; growing is done in 1 MiB steps (the backend default) and then kept.
    "--backend-config=python,shm-default-byte-size=4194304",
)


def server_args(
    model_repository: str | Path,
    backend_directory: str | Path,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    load_models: Iterable[str] | str = (),
    *,
    exit_timeout_s: int | None = None,
    shm_region_prefix: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The tritonserver arguments (without the program) for one server.

    ``load_models`` is a list of model names, or `ALL_MODELS` for every model of the repository.
    ``shm_region_prefix`` names this server's Python-backend shared-memory regions
    (``/dev/shm/<prefix><uuid>``) and appears on its stubs' command lines, so that they can be told
    apart from another server's.
    """
    args = [
        f"--model-repository={Path(model_repository)}",
        f"--backend-directory={Path(backend_directory)}",
        *COMMON_FLAGS,
        f"--http-address={host}",
        f"--http-port={http_port}",
        f"--grpc-address={host}",
        f"--grpc-port={grpc_port}",
        f"--metrics-address={host}",
        f"--metrics-port={metrics_port}",
    ]
    if exit_timeout_s is not None:
        args.append(f"--exit-timeout-secs={exit_timeout_s}")
    if shm_region_prefix:
        args.append(f"--backend-config=python,shm-region-prefix-name={shm_region_prefix}")
    args.extend(_load_model_args(load_models))
    args.extend(extra)
    return args


def _load_model_args(load_models: Iterable[str] | str) -> list[str]:
    if isinstance(load_models, str):
        if load_models != ALL_MODELS:
            raise ValueError(f"load_models must be a list of names or {ALL_MODELS!r}, not {load_models!r}")
        return [f"--load-model={ALL_MODELS}"]
    names = list(load_models)
    if ALL_MODELS in names:
        raise ValueError(f"{ALL_MODELS!r} cannot be mixed with model names")
    return [f"--load-model={name}" for name in names]
