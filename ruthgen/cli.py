"""The generator's commands: thin over the library API.

Commands: ``new``, ``validate``, ``build``, ``list``, ``check``, ``triton`` (``python -m ruthgen``
runs these alone; the ``ruthgen`` console script adds ``up`` and ``infer``, see :mod:`ruthstack.cli`).
Each parses its options, calls one library function, prints a table (or ``--json``) and returns an
exit code:

* 0: success (``validate``: every plugin is VALID);
* 1: something is INVALID (``validate``; ``build --strict``), or ``check`` found a broken entry;
* 2: usage error (bad option, missing models folder, ...);
* 3: the repository could not be written (it is left as it was).

To add a command, write one function decorated with ``@app.command()`` and ``@_reports_errors``.
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ruthgen import console
from ruthgen.contract import INPUT_FORMATS, INPUT_TYPES
from ruthgen.embedded import commands as embedded_commands
from ruthgen.errors import RuthgenError

#: How every command-line app of the project behaves (this one and the ``ruthgen`` console script's).
APP_SETTINGS: dict[str, Any] = {
    "no_args_is_help": True, "add_completion": False, "pretty_exceptions_enable": False,
}

app = typer.Typer(
    name="python -m ruthgen", help="Turn model.yaml plugins into a Triton model repository.", **APP_SETTINGS
)

F = TypeVar("F", bound=Callable[..., Any])


class Target(str, enum.Enum):
    cpu = "cpu"
    gpu = "gpu"
    jetson = "jetson"


InputType = enum.Enum("InputType", [(name, name) for name in INPUT_TYPES], type=str)
InputFormat = enum.Enum("InputFormat", [(name, name) for name in INPUT_FORMATS], type=str)


ModelsOption = Annotated[Path, typer.Option("--models", "-m", help="The plugins folder.")]
RepoOption = Annotated[Path, typer.Option("--out", "-o", help="The model repository to write.")]
TargetOption = Annotated[
    Target | None,
    typer.Option("--target", "-t", help="Where the repository will run (default: this machine's hardware)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DEFAULT_MODELS = Path("ai/models")
DEFAULT_REPOSITORY = Path("model_repository")


def _target(target: Target | None, quiet: bool = False) -> str:
    """The build target asked for, else the one this machine's hardware calls for; said on
    stderr unless ``quiet`` (--json prints nothing but its JSON)."""
    if target is not None:
        return target.value
    from ruthgen.hardware import detected_target

    found = detected_target()
    if not quiet:
        typer.echo(f"target: {found} (detected; --target sets another)", err=True)
    return found


def _reports_errors(func: F) -> F:
    """Turn library errors into a message on stderr and the error's exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RuthgenError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from exc

    return wrapper  # type: ignore[return-value]


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s"
    )


@app.command()
@_reports_errors
def new(
    model_id: Annotated[str, typer.Argument(help="The new plugin's model_id, e.g. crowd_counter.")],
    models: ModelsOption = DEFAULT_MODELS,
    version: Annotated[str, typer.Option(help="Its first version.")] = "1.0.0",
    input_type: Annotated[
        InputType, typer.Option("--input-type", help=" | ".join(INPUT_TYPES))
    ] = InputType.frame,
    input_format: Annotated[
        InputFormat, typer.Option("--format", help="The frame encoding: " + " | ".join(INPUT_FORMATS))
    ] = InputFormat.jpeg,
) -> None:
    """Scaffold <models>/<model_id>/<version>/, a plugin that validates, builds and serves as is."""
    from ruthgen.discovery import validate_plugin
    from ruthgen.scaffold import scaffold_plugin

    path = scaffold_plugin(models, model_id, version, input_type.value, input_format.value)
    report = validate_plugin(path, model_id, version)
    typer.echo(f"created {path} ({report.state})")
    _print_issues(report.errors, report.warnings)


@app.command()
@_reports_errors
def validate(
    models: ModelsOption = DEFAULT_MODELS, target: TargetOption = None, as_json: JsonOption = False
) -> None:
    """Check every plugin; exit 1 when any is INVALID."""
    from ruthgen.discovery import scan

    found = scan(models, _target(target, as_json))
    _emit({"models": [r.to_dict() for r in found.reports], "warnings": found.warnings}, as_json)
    raise typer.Exit(0 if all(r.valid for r in found.reports) else 1)


@app.command()
@_reports_errors
def build(
    models: ModelsOption = DEFAULT_MODELS,
    out: RepoOption = DEFAULT_REPOSITORY,
    target: TargetOption = None,
    as_json: JsonOption = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when any plugin is INVALID.")] = False,
) -> None:
    """Build the model repository from every valid plugin; invalid ones are reported, not fatal.

    Building the plugins' environments is shown as it goes on stderr (not with --json).
    """
    from ruthgen.writer import build_repository

    with console.progress_for(sys.stderr, quiet=as_json) as progress:
        result = build_repository(models, out, _target(target, as_json), progress=progress)
    _emit(result.to_dict(), as_json)
    if not as_json:
        typer.echo(f"{out}: {result.summary()}")
    raise typer.Exit(1 if strict and not all(r.valid for r in result.reports) else 0)


@app.command("list")
@_reports_errors
def list_models(
    models: ModelsOption = DEFAULT_MODELS, target: TargetOption = None, as_json: JsonOption = False
) -> None:
    """List every plugin version with its state and Triton name."""
    from ruthgen.discovery import scan

    found = scan(models, _target(target, as_json))
    items = []
    for report in found.reports:
        item = report.to_dict()
        contract = report.contract
        item["display_name"] = contract.display_name if contract else None
        item["input_type"] = contract.input.type if contract else None
        item["input_format"] = contract.input.format if contract else None
        items.append(item)
    _emit({"models": items, "warnings": found.warnings}, as_json, details=False)


@app.command()
@_reports_errors
def check(
    repo: Annotated[Path, typer.Option("--repo", "-r", help="The model repository.")] = DEFAULT_REPOSITORY,
    as_json: JsonOption = False,
) -> None:
    """Parse every config.pbtxt of a repository as Triton's ModelConfig and match it to the manifest."""
    from ruthgen.manifest import check_repository

    problems = check_repository(repo)
    if as_json:
        typer.echo(json.dumps({"repository": str(repo), "problems": problems}, indent=2, sort_keys=True))
    else:
        for problem in problems:
            typer.echo(f"{problem['entry']}: {problem['message']}")
        typer.echo(f"{repo}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    raise typer.Exit(1 if problems else 0)


# ``triton`` (serve a repository): ruthgen.embedded.commands. ``up`` and ``infer``, which also start
# or call the sidecar, are added by ruthstack.cli (the ``ruthgen`` console script).
app.command("triton")(embedded_commands.triton)


def _emit(data: dict[str, Any], as_json: bool, details: bool = True) -> None:
    """``data`` as JSON, or its models as a table (with their issues when ``details``)."""
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    models = data["models"]
    with_issues = details and any(m["errors"] or m["warnings"] for m in models)
    made = console.table("STATE", "MODEL", "VERSION", "TRITON NAME", *(["ISSUES"] if with_issues else []))
    for m in models:
        issues = ["\n".join(_issue_lines(m["errors"], m["warnings"]))] if with_issues else []
        console.add_row(made, console.state(m["state"]), m["model_id"], m["version"], m["triton_name"] or "-",
                        *issues)
    if models:
        console.show(made)
    for warning in data.get("warnings", []):
        typer.echo(f"warning: {warning}", err=True)
    if not models:
        typer.echo("no plugins found")


def _issue_lines(errors: Iterable[Any], warnings: Iterable[Any]) -> list[str]:
    lines = []
    for mark, issues in (("error", errors), ("warning", warnings)):
        for issue in issues:
            item = issue if isinstance(issue, dict) else issue.to_dict()
            where = f" [{item['path']}]" if item["path"] else ""
            lines.append(f"{mark} {item['check']}{where}: {item['message']}")
    return lines


def _print_issues(errors: Iterable[Any], warnings: Iterable[Any]) -> None:
    for line in _issue_lines(errors, warnings):
        typer.echo(f"    {line}")


def main() -> None:
    """Console-script entry point (``ruthgen = ruthgen.cli:main``)."""
    app()
