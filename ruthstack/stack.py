"""``ruthgen up`` as a library: the generator's stack (build + embedded tritonserver) plus the sidecar.

    with running_stack(UpOptions(), SidecarOptions()) as stack:
        print(stack.sidecar.address)

The sidecar runs as a child process (``python -m sidecar``) that owns the plugin folder when
``manage_models`` is set (hot reload, recovery, registration); it is stopped before Triton.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ruthgen.embedded import up
from ruthgen.embedded.errors import EmbeddedTritonError
from ruthgen.embedded.up import UpOptions
from ruthgen.progress import Progress
from sidecar.process import SidecarProcess, SidecarStartError

__all__ = ["SidecarOptions", "Stack", "UpOptions", "running_stack", "sidecar_arguments"]


@dataclass
class SidecarOptions:
    """How ``ruthgen up`` runs the sidecar (CLI flags map one to one)."""

    enabled: bool = True
    port: int = 50051
    http_port: int = 8080  # probes, /models, /capabilities, /metrics, admin rescan; 0 picks one
    manage_models: bool = True  # the sidecar watches models_dir: hot reload, recovery, registration
    extra_args: tuple[str, ...] = ()  # further `python -m sidecar` flags (e.g. --backend-url)
    log_path: Path = Path(".ruth/sidecar.log")


@dataclass
class Stack:
    """The generator's stack and the sidecar started beside it (None when disabled)."""

    base: up.Stack
    sidecar: SidecarProcess | None = field(default=None)

    @property
    def triton(self):
        return self.base.triton

    def models(self) -> list[up.ModelRow]:
        return self.base.models()


@contextlib.contextmanager
def running_stack(
    options: UpOptions, sidecar: SidecarOptions, progress: Progress | None = None
) -> Iterator[Stack]:
    """Build, serve every VALID model, start the sidecar; stop everything when the block ends.
    ``progress`` is told each step (:func:`ruthgen.embedded.up.running_stack`'s, then the sidecar's)."""
    progress = progress or Progress()
    with up.running_stack(options, progress) as base:
        process = None
        if sidecar.enabled:  # stopped before Triton: the exit stack unwinds in reverse
            launcher = SidecarProcess(
                base.triton.grpc_url, options.repository, host=options.host, port=sidecar.port,
                log_path=sidecar.log_path,
                extra_args=[
                    *sidecar_arguments(options, sidecar), "--triton-metrics-url", base.triton.metrics_url
                ],
            )
            progress.step("sidecar", "starting", "(it checks every model before it serves)")
            try:
                process = base.exit_stack.enter_context(launcher)
            except SidecarStartError as e:
                progress.done("sidecar", "did not start", ok=False)
                raise EmbeddedTritonError(str(e)) from e
            progress.done("sidecar", f"serving on {process.address}")
        yield Stack(base, process)


def sidecar_arguments(options: UpOptions, sidecar: SidecarOptions) -> list[str]:
    """The sidecar's flags beyond Triton and the repository: it owns the plugin folder when managing."""
    args = ["--http-host", options.host, "--http-port", str(sidecar.http_port)]
    if sidecar.manage_models:
        args += ["--models-dir", str(options.models_dir), "--target", options.target]
    return [*args, *sidecar.extra_args]
