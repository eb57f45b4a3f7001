"""The ``ruthgen`` console script: the generator's commands plus ``up`` and ``infer``.

``up`` builds the repository, serves it with the embedded tritonserver and starts the sidecar
beside it; ``infer`` sends images to a model through a running sidecar. The sidecar's modules are
imported only when one of these two runs, so the generator's commands work where only the
generator is installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ruthgen import cli as generator_cli
from ruthgen.embedded.commands import (
    DEFAULT_LOG,
    STOP_HINT,
    HostOpt,
    LogOpt,
    PortOpt,
    TimeoutOpt,
    describe,
    serve_until_interrupted,
)
from ruthgen.embedded.launcher import EmbeddedTriton
from ruthgen.embedded.up import UpOptions, format_table

app = typer.Typer(
    name="ruthgen",
    help="Turn model.yaml plugins into a Triton model repository, serve it, and send it frames.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.registered_callback = generator_cli.app.registered_callback
app.registered_commands.extend(generator_cli.app.registered_commands)


@app.command()
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
    from ruthstack.stack import SidecarOptions, Stack, running_stack

    options = UpOptions(
        models_dir=models, repository=out, target=target, host=host, grpc_port=grpc_port,
        http_port=http_port, metrics_port=metrics_port, log_path=log_file, startup_timeout_s=startup_timeout,
    )
    companion = SidecarOptions(
        enabled=sidecar, port=sidecar_port, http_port=sidecar_http_port, manage_models=watch,
        extra_args=("--backend-url", backend_url) if backend_url else (),
    )

    def ready(stack: Stack) -> EmbeddedTriton:
        typer.echo(format_table(stack.models()))
        typer.echo(describe(stack.triton))
        if stack.sidecar is not None:
            typer.echo(f"sidecar (AIRuntime gRPC) on {stack.sidecar.address}, log {companion.log_path}")
            if companion.http_port:
                typer.echo(f"sidecar HTTP (/readyz, /models, /capabilities, /metrics) on "
                           f"http://{options.host}:{companion.http_port}")
        typer.echo(STOP_HINT)
        return stack.triton

    serve_until_interrupted(running_stack(options, companion), ready)


@app.command("infer")
def infer(
    images: Annotated[list[Path], typer.Argument(help="JPEG or PNG files.", exists=True, dir_okay=False)],
    model: Annotated[str, typer.Option("--model", help="The model_id.")],
    version: Annotated[str, typer.Option("--version", help="The model version (there is no default).")],
    sidecar: Annotated[str, typer.Option("--sidecar", help="HOST:PORT of the sidecar.")] = "127.0.0.1:50051",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 10.0,
    annotate: Annotated[
        Path | None,
        typer.Option(help="Also write each image with the answer's boxes and labels drawn (PNG or JPEG)."),
    ] = None,
) -> None:
    """Send images to a model through the sidecar; print each answer as one JSON line."""
    from sidecar.client import infer_files

    try:
        answers = infer_files(sidecar, model, version, images, timeout_s=timeout)
    except ConnectionError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    for answer in answers:
        typer.echo(json.dumps(answer, sort_keys=True))
    if annotate is not None:
        from ruthgen.annotate import annotate as draw
        from ruthgen.annotate import output_paths

        for image, answer, out in zip(images, answers, output_paths(annotate, images), strict=True):
            if "result" in answer:
                boxes = draw(image, answer["result"], out)
                typer.echo(f"annotated {out} ({boxes} box{'es' if boxes != 1 else ''})", err=True)
    raise typer.Exit(1 if any("error" in a for a in answers) else 0)


def main() -> None:
    """Console-script entry point (``ruthgen = ruthstack.cli:main``)."""
    app()
