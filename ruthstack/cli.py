"""The ``ruthgen`` console script: the generator's commands plus ``up`` and ``infer``.

``up`` builds the repository, serves it with the embedded tritonserver and starts the sidecar
beside it; ``infer`` sends images or a video's frames, as one camera, to a model through a running
sidecar (:mod:`ruthstack.infer`). The sidecar's modules are imported only when one of these two
runs, so the generator's commands work where only the generator is installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ruthgen import cli as generator_cli
from ruthgen.console import progress_for, show
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
from ruthgen.embedded.up import UpOptions, model_table

app = typer.Typer(
    name="ruthgen",
    help="Turn model.yaml plugins into a Triton model repository, serve it, and send it frames.",
    **generator_cli.APP_SETTINGS,
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
    """Build the repository from the plugins and serve every valid model until Ctrl-C (or SIGTERM).

    What takes long (building the plugins' environments, loading and warming up the models) is shown
    as it goes on stderr: live rows on a terminal, a line per step otherwise.
    """
    from ruthstack.stack import SidecarOptions, Stack, running_stack

    options = UpOptions(
        models_dir=models, repository=out, target=target, host=host, grpc_port=grpc_port,
        http_port=http_port, metrics_port=metrics_port, log_path=log_file, startup_timeout_s=startup_timeout,
    )
    companion = SidecarOptions(
        enabled=sidecar, port=sidecar_port, http_port=sidecar_http_port, manage_models=watch,
        extra_args=("--backend-url", backend_url) if backend_url else (),
    )

    progress = progress_for(sys.stderr)

    def ready(stack: Stack) -> EmbeddedTriton:
        progress.close()
        show(model_table(stack.models()))
        typer.echo(describe(stack.triton))
        if stack.sidecar is not None:
            typer.echo(f"sidecar (AIRuntime gRPC) on {stack.sidecar.address}, log {companion.log_path}")
            if companion.http_port:
                typer.echo(f"sidecar HTTP (/readyz, /models, /capabilities, /metrics) on "
                           f"http://{options.host}:{companion.http_port}")
        typer.echo(STOP_HINT)
        return stack.triton

    with progress:
        serve_until_interrupted(running_stack(options, companion, progress), ready)


@app.command("infer")
def infer(
    model: Annotated[
        list[str], typer.Option("--model", help="The model_id; repeat --model/--version for several models.")
    ],
    version: Annotated[
        list[str], typer.Option("--version", help="The model version (there is no default), one per --model.")
    ],
    images: Annotated[
        list[Path] | None,
        typer.Argument(help="JPEG or PNG files, or folders of them (sent in name order).", exists=True),
    ] = None,
    video: Annotated[
        Path | None,
        typer.Option("--video", help="A video file: its frames, in order.", exists=True, dir_okay=False),
    ] = None,
    camera: Annotated[
        str | None,
        typer.Option(help="The camera id every frame carries (default: one of this run's own)."),
    ] = None,
    fps: Annotated[
        float | None,
        typer.Option(help="Frames per second to send (default: as fast as the model answers).", min=0.001),
    ] = None,
    realtime: Annotated[bool, typer.Option(help="Send the video at its own frame rate.")] = False,
    sidecar: Annotated[str, typer.Option("--sidecar", help="HOST:PORT of the sidecar.")] = "127.0.0.1:50051",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 10.0,
    annotate: Annotated[
        Path | None,
        typer.Option(help="Also write the answers drawn: on each image (PNG, JPEG) or in one video (.mp4)."),
    ] = None,
) -> None:
    """Send one camera's frames (images, a video) to a model through the sidecar; one JSON line per answer.

    With several models (--model A --version 1.0.0 --model B --version 2.0.0), each frame goes to all
    of them in one request; its JSON line holds one answer per model (``answers``)."""
    from ruthgen.errors import UsageError
    from ruthstack.infer import DEFAULT_VIDEO_FPS, Annotations, StreamOptions, own_camera_id, stream_frames
    from ruthstack.media import VideoSource, image_files, image_frames

    try:
        if len(model) != len(version):
            raise UsageError("give one --version for each --model, in the same order")
        if len(model) > 1 and annotate is not None:
            raise UsageError("--annotate draws one model's answers: give one --model")
        if bool(images) == (video is not None):
            raise UsageError("give images (files or folders) or --video FILE, not both")
        if realtime and (video is None or fps is not None):
            raise UsageError("--realtime sends a --video at its own frame rate (images: use --fps)")
        if video is not None:
            source = VideoSource(video)
            if realtime and not source.fps:
                raise UsageError(f"{video} does not say its frame rate: use --fps")
            rate = source.fps if realtime else fps
            frames, paths, base = source.frames(), None, {"video": str(video)}
            video_fps = source.fps or fps or DEFAULT_VIDEO_FPS
        else:
            paths = image_files(images or [])
            rate, frames, base = fps, image_frames(paths, fps), {}
            video_fps = fps or DEFAULT_VIDEO_FPS
        drawn = Annotations(annotate, paths, video_fps) if annotate is not None else None
    except UsageError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from e
    models = list(zip(model, version, strict=True))
    options = StreamOptions(sidecar, model[0], version[0], camera or own_camera_id(), rate, timeout,
                            models=models if len(models) > 1 else None)
    failed = 0

    def on_answer(frame, answer) -> None:
        nonlocal failed
        where = {"image": str(frame.path)} if frame.path is not None else {**base, "frame": frame.index}
        typer.echo(json.dumps({**where, **answer}, sort_keys=True))
        failed += "error" in answer or any("error" in one for one in answer.get("answers", ()))
        if drawn is not None:
            drawn.add(frame, answer)

    try:
        stream_frames(options, frames, on_answer)
    except ConnectionError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    finally:
        for line in drawn.close() if drawn is not None else ():
            typer.echo(line, err=True)
    raise typer.Exit(1 if failed else 0)


def main() -> None:
    """Console-script entry point (``ruthgen = ruthstack.cli:main``)."""
    app()
