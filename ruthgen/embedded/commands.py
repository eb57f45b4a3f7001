"""``ruthgen triton`` (also ``python -m ruthgen.embedded``): thin over the library; the helpers that
serve until Ctrl-C are shared with ``ruthgen up`` (:mod:`ruthstack.cli`)."""

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
