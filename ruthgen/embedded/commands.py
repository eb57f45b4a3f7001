"""``ruthgen triton`` (also ``python -m ruthgen.embedded``) and ``ruthgen up``: thin over the library."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from ruthgen.embedded.errors import EmbeddedTritonError
from ruthgen.embedded.flags import ALL_MODELS
from ruthgen.embedded.launcher import EmbeddedTriton
from ruthgen.embedded.signals import interrupt_on_signals
from ruthgen.embedded.up import Stack, UpOptions, format_table, running_stack
from ruthgen.errors import RuthgenError

DEFAULT_LOG = Path(".ruth/tritonserver.log")
T = TypeVar("T")

RepositoryOpt = Annotated[Path, typer.Option("--repository", "-r", help="The model repository to serve.")]
HostOpt = Annotated[str, typer.Option(help="Address to bind (loopback by default).")]
PortOpt = Annotated[int | None, typer.Option(help="Port; a free one when left out.")]
LogOpt = Annotated[Path, typer.Option("--log-file", help="Where the server's output goes.")]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds to wait for the server and its models.")]


def triton(
    repository: RepositoryOpt = Path("model_repository"),
    load: Annotated[
        list[str] | None,
        typer.Option("--load", help="A model to load at start (repeatable); default: every model."),
    ] = None,
    host: HostOpt = "127.0.0.1",
    grpc_port: PortOpt = None,
    http_port: PortOpt = None,
    metrics_port: PortOpt = None,
    log_file: LogOpt = DEFAULT_LOG,
    startup_timeout: TimeoutOpt = 120.0,
) -> None:
    """Run the embedded tritonserver on a model repository until Ctrl-C (or SIGTERM)."""
    server = EmbeddedTriton(
        repository, host=host, grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port,
        load_models=load if load else ALL_MODELS, log_path=log_file, startup_timeout_s=startup_timeout,
    )

    def ready(started: EmbeddedTriton) -> EmbeddedTriton:
        typer.echo(describe(started))
        typer.echo(STOP_HINT)
        return started

    serve_until_interrupted(server, ready)


def up(
    models: Annotated[Path, typer.Option("--models", "-m", help="The plugins folder.")] = Path("ai/models"),
    out: Annotated[Path, typer.Option("--out", "-o", help="The model repository to write.")] = Path(
        "model_repository"
    ),
    target: Annotated[str, typer.Option("--target", "-t", help="cpu, gpu or jetson.")] = "cpu",
    host: HostOpt = "127.0.0.1",
    grpc_port: PortOpt = None,
    http_port: PortOpt = None,
    metrics_port: PortOpt = None,
    log_file: LogOpt = DEFAULT_LOG,
    startup_timeout: TimeoutOpt = 300.0,
    sidecar: Annotated[bool, typer.Option(help="Also start the AIRuntime sidecar.")] = True,
    sidecar_port: Annotated[int, typer.Option(help="The sidecar's gRPC port.")] = 50051,
    sidecar_http_port: Annotated[
        int, typer.Option(help="The sidecar's HTTP port: /livez, /readyz, /models, /capabilities, /metrics.")
    ] = 8080,
    watch: Annotated[
        bool, typer.Option(help="Let the sidecar watch the plugins folder: hot reload and recovery.")
    ] = True,
    backend_url: Annotated[
        str | None, typer.Option(help="Register the runtime's capabilities with this backend.")
    ] = None,
) -> None:
    """Build the repository from the plugins and serve every valid model until Ctrl-C (or SIGTERM)."""
    options = UpOptions(
        models_dir=models, repository=out, target=target, host=host, grpc_port=grpc_port,
        http_port=http_port, metrics_port=metrics_port, log_path=log_file, startup_timeout_s=startup_timeout,
        sidecar=sidecar, sidecar_port=sidecar_port, sidecar_http_port=sidecar_http_port, manage_models=watch,
        sidecar_args=("--backend-url", backend_url) if backend_url else (),
    )

    def ready(stack: Stack) -> EmbeddedTriton:
        typer.echo(format_table(stack.models()))
        typer.echo(describe(stack.triton))
        if stack.sidecar is not None:
            typer.echo(f"sidecar (AIRuntime gRPC) on {stack.sidecar.address}, log {options.sidecar_log_path}")
            if options.sidecar_http_port:
                typer.echo(f"sidecar HTTP (/readyz, /models, /capabilities, /metrics) on "
                           f"http://{options.host}:{options.sidecar_http_port}")
        typer.echo(STOP_HINT)
        return stack.triton

    serve_until_interrupted(running_stack(options), ready)


def serve_until_interrupted(
    context: contextlib.AbstractContextManager[T], on_ready: Callable[[T], EmbeddedTriton]
) -> None:
    """Enter ``context``, call ``on_ready`` (it returns the server to watch), serve until SIGINT or
    SIGTERM, then leave ``context``; library errors become their message and exit code."""
    try:
        with interrupt_on_signals():
            try:
                with context as started:
                    server = on_ready(started)
                    code = server.wait()
                    raise EmbeddedTritonError(
                        f"tritonserver exited on its own with code {code}:\n{server.log_tail()}"
                    )
            except KeyboardInterrupt:
                typer.echo("stopped")
    except RuthgenError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from e


def describe(server: EmbeddedTriton) -> str:
    return (
        f"tritonserver ready (pid {server.process.pid if server.process else '?'})\n"
        f"  grpc     {server.grpc_url}\n"
        f"  http     {server.http_url}\n"
        f"  metrics  {server.metrics_url}\n"
        f"  log      {server.log_path}"
    )


STOP_HINT = "Ctrl-C stops it."


def main() -> None:
    """``python -m ruthgen.embedded``: the ``triton`` command alone."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    typer.run(triton)
