"""Build the repository from the plugins and serve it with the embedded tritonserver, as one stack.

`running_stack()` builds the repository, starts the embedded tritonserver with every VALID model
loaded, and yields a `Stack`; leaving the block stops what it started, in reverse order. A
:class:`~ruthgen.progress.Progress` given to it is told each step: the environments' builds, each
model loading in Triton and warming up, the server ready. Further
processes (``ruthgen up`` adds the sidecar: :mod:`ruthstack.stack`) join by entering their own
context manager on ``stack.exit_stack``. Signal handling and waiting belong to the caller.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from ruthgen.console import add_row, plain, state, table
from ruthgen.embedded.launcher import EmbeddedTriton
from ruthgen.embedded.loadlog import following_loads
from ruthgen.manifest import valid_records
from ruthgen.progress import Progress

LOGGER = logging.getLogger(__name__)


@dataclass
class UpOptions:
    """What the stack builds and how Triton serves it (CLI flags map one to one)."""

    models_dir: Path = Path("ai/models")
    repository: Path = Path("model_repository")
    target: str = "cpu"
    host: str = "127.0.0.1"
    grpc_port: int | None = None
    http_port: int | None = None
    metrics_port: int | None = None
    log_path: Path = Path(".ruth/tritonserver.log")
    startup_timeout_s: float = 300.0


@dataclass
class ModelRow:
    """One plugin version as ``up`` reports it: its manifest state joined with Triton's."""

    model_id: str
    version: str
    triton_name: str
    state: str  # Triton's (READY, UNAVAILABLE, ...), or INVALID when the generator refused it
    reason: str = ""


@dataclass
class Stack:
    """What `running_stack` started; ``exit_stack`` stops it all when the block ends."""

    options: UpOptions
    manifest: dict[str, Any]
    triton: EmbeddedTriton
    exit_stack: contextlib.ExitStack = field(repr=False)

    def models(self) -> list[ModelRow]:
        return model_rows(self.manifest, self.triton.repository_index())


@contextlib.contextmanager
def running_stack(options: UpOptions, progress: Progress | None = None) -> Iterator[Stack]:
    """Build the repository, serve every VALID model; stop everything when the block ends."""
    from ruthgen.writer import build_repository

    progress = progress or Progress()
    result = build_repository(options.models_dir, options.repository, options.target, progress=progress)
    names = sorted(valid_records(result.manifest))
    if not names:
        LOGGER.warning("no valid plugin under %s: serving an empty repository", options.models_dir)
    with contextlib.ExitStack() as exit_stack:
        server = EmbeddedTriton(
            options.repository,
            host=options.host,
            grpc_port=options.grpc_port,
            http_port=options.http_port,
            metrics_port=options.metrics_port,
            load_models=names,
            log_path=options.log_path,
            startup_timeout_s=options.startup_timeout_s,
        )
        progress.step("tritonserver", "starting", f"({len(names)} model(s) to load)")
        try:
            with following_loads(options.log_path, progress):
                triton = exit_stack.enter_context(server)
        except BaseException as e:
            progress.done("tritonserver", f"did not start: {_one_line(str(e)) or type(e).__name__}", ok=False)
            raise
        progress.done("tritonserver", f"ready on {triton.grpc_url} (gRPC)")
        yield Stack(options=options, manifest=result.manifest, triton=triton, exit_stack=exit_stack)


def model_rows(manifest: dict[str, Any], index: list[dict[str, str]]) -> list[ModelRow]:
    """Every manifest record with its state: Triton's for generated entries, INVALID otherwise."""
    by_name: dict[str, dict[str, str]] = {}
    for model in index:  # a model has one row per version directory; entries have one ("1")
        by_name.setdefault(model["name"], model)
    rows = []
    for record in manifest.get("models", []):
        name = record.get("triton_name") or ""
        if record.get("state") != "VALID":
            errors = record.get("errors") or []
            reason = "; ".join(f"{e.get('check')}: {e.get('message')}" for e in errors)
            rows.append(ModelRow(record["model_id"], record["version"], name, "INVALID", reason))
            continue
        served = by_name.get(name, {})
        rows.append(
            ModelRow(
                record["model_id"], record["version"], name,
                served.get("state") or "NOT LOADED", served.get("reason", ""),
            )
        )
    return rows


def model_table(rows: list[ModelRow]) -> Table | Text:
    """The `ModelRow`s as a table (the reason truncated to one line), states in colour."""
    if not rows:
        return Text("no plugins found")
    made = table("STATE", "MODEL", "VERSION", "TRITON NAME", "REASON")
    for r in rows:
        add_row(made, state(r.state), r.model_id, r.version, r.triton_name or "-", _one_line(r.reason))
    return made


def format_table(rows: list[ModelRow]) -> str:
    """:func:`model_table` as plain text."""
    return plain(model_table(rows))


def _one_line(text: str, limit: int = 100) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"
