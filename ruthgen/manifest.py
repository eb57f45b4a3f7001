"""The repository manifest ``<repository>/ruth-manifest.json`` (shape in docs/internals.md).

It lists every discovered plugin version, valid or not, with the normalised contract, the compiled
output schema and the Triton facts of its entry, so that the sidecar never re-parses plugins. It is
also the generator's record of what it created: only entries named in it are ever replaced or
removed. Written last, atomically, with sorted keys and a 2-space indent.

Library API (stable): :func:`load_manifest`, :func:`manifest_path`, :func:`dumps`,
:func:`valid_records`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ruthgen.discovery import PluginReport
from ruthgen.errors import RepositoryError
from ruthgen.spec import ModelSpec

MANIFEST_FILE = "ruth-manifest.json"
MANIFEST_VERSION = 1
ENTRY_RECORD_FILE = "ruth_entry.json"


def manifest_path(repo_dir: str | os.PathLike[str]) -> Path:
    """Where the manifest of ``repo_dir`` lives."""
    return Path(repo_dir) / MANIFEST_FILE


def load_manifest(repo_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of ``repo_dir``, or None when the repository has none (never built).

    Raises :class:`~ruthgen.errors.RepositoryError` when it exists but is not a manifest.
    """
    path = manifest_path(repo_dir)
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RepositoryError(f"{path} is unreadable: {exc}") from exc
    if not isinstance(data, dict) or data.get("manifest_version") != MANIFEST_VERSION:
        raise RepositoryError(f"{path} is not a version {MANIFEST_VERSION} ruth manifest")
    return data


def dumps(data: Any) -> str:
    """The canonical text of the manifest and of every ``ruth_entry.json``."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def new_manifest(target: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"manifest_version": MANIFEST_VERSION, "target": target, "models": records}


def valid_records(manifest: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The records of generated entries, by Triton name."""
    if not manifest:
        return {}
    return {
        m["triton_name"]: m for m in manifest.get("models", []) if m.get("state") == "VALID" and m.get("path")
    }


def entry_record(report: PluginReport, spec: ModelSpec, source_digest: str) -> dict[str, Any]:
    """The manifest record of a generated entry (also written as ``1/ruth_entry.json``)."""
    assert report.contract is not None and report.triton_name is not None
    return {
        "model_id": report.model_id,
        "version": report.version,
        "triton_name": report.triton_name,
        "state": "VALID",
        "errors": [],
        "warnings": [w.to_dict() for w in report.warnings],
        "contract_digest": report.contract_digest,
        "source_digest": source_digest,
        "path": report.triton_name,
        "contract": report.contract.normalized(),
        "output_json_schema": report.output_json_schema,
        "triton": spec.manifest_triton(),
    }


def invalid_record(report: PluginReport) -> dict[str, Any]:
    """The manifest record of an INVALID plugin: its errors, no entry."""
    return {
        "model_id": report.model_id,
        "version": report.version,
        "triton_name": report.triton_name,
        "state": "INVALID",
        "errors": [e.to_dict() for e in report.errors],
        "warnings": [w.to_dict() for w in report.warnings],
    }


def check_repository(repo_dir: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Problems of a generated repository; an empty list means every entry is sound.

    Every ``<entry>/config.pbtxt`` must parse as Triton's ``ModelConfig`` with ``name`` equal to its
    folder and ``backend: "python"``, and every VALID manifest record must have its entry.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    repo = Path(repo_dir)
    if not repo.is_dir():
        raise RepositoryError(f"repository {str(repo)!r} does not exist")
    problems: list[dict[str, str]] = []
    for config in sorted(repo.glob("*/config.pbtxt")):
        entry = config.parent.name
        try:
            parsed = text_format.Parse(config.read_text("utf-8"), model_config_pb2.ModelConfig())
        except (OSError, UnicodeDecodeError, text_format.ParseError) as exc:
            problems.append({"entry": entry, "message": f"config.pbtxt is not a ModelConfig: {exc}"})
            continue
        if parsed.name != entry:
            problems.append({"entry": entry, "message": f"name {parsed.name!r} differs from the folder name"})
        if parsed.backend != "python":
            problems.append({"entry": entry, "message": f"backend is {parsed.backend!r}, not 'python'"})
    for name in sorted(valid_records(load_manifest(repo))):
        if not (repo / name / "config.pbtxt").is_file():
            problems.append({"entry": name, "message": "listed in the manifest but has no config.pbtxt"})
    return problems
