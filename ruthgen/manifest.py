"""The repository manifest ``<repository>/ruth-manifest.json`` (shape in docs/internals.md).

It lists every discovered plugin version, valid or not, with the normalised contract, the compiled
output schema and the Triton facts of its entry, so that the sidecar never re-parses plugins. It is
also the generator's record of what it created: only entries named in it are ever replaced or
removed. Written last, atomically, with sorted keys and a 2-space indent.

Library API (stable): :func:`load_manifest`, :func:`manifest_path`, :func:`dumps`,
:func:`valid_records`, and :class:`ManifestEntry` / :func:`load_entries`, the typed reading of one
record that the sidecar uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ruthgen.contract import ModelContract
from ruthgen.errors import RepositoryError
from ruthgen.spec import ModelSpec
from ruthgen.wrapper.ruth_protocol import ENCODED_FORMATS

if TYPE_CHECKING:
    from ruthgen.discovery import PluginReport

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


class TritonFacts(BaseModel):
    """The ``triton`` block of a record: what the generated ``config.pbtxt`` says."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    max_batch_size: int = 0
    input: str = "FRAME"
    input_dims: list[int] = []
    output: str = "RESULT"
    sequence: bool = False
    instance_kind: str = "KIND_CPU"
    instance_count: int = 1


class ManifestEntry(BaseModel):
    """One ``models[]`` record of the manifest (or one entry's ``ruth_entry.json``), typed."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model_id: str
    version: str
    triton_name: str | None = None
    state: str
    errors: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    contract_digest: str | None = None
    source_digest: str | None = None
    path: str | None = None
    contract: ModelContract | None = None
    output_json_schema: dict[str, Any] | None = None
    triton: TritonFacts | None = None

    @property
    def valid(self) -> bool:
        """A generated entry: VALID, with its contract and Triton facts."""
        return self.state == "VALID" and self.contract is not None and self.triton is not None

    @property
    def reason(self) -> str:
        """Why the version is INVALID: every error as ``check: message`` (never empty when INVALID)."""
        found = "; ".join(f"{e.get('check', '')}: {e.get('message', '')}" for e in self.errors)
        if not found and self.state != "VALID":
            return f"validation_incomplete: the manifest records {self.state} without an error"
        return found

    @property
    def digest(self) -> str:
        """Changes whenever the contract or any generated file changes."""
        return f"{self.contract_digest or ''}/{self.source_digest or ''}"

    @property
    def raw_frames(self) -> bool:
        return self.contract is not None and self.contract.input.format not in ENCODED_FORMATS


def load_entries(repo_dir: str | os.PathLike[str]) -> list[ManifestEntry] | None:
    """The typed records of the manifest of ``repo_dir`` (None when it has none).

    Raises :class:`~ruthgen.errors.RepositoryError` when the manifest or a record cannot be read.
    """
    data = load_manifest(repo_dir)
    if data is None:
        return None
    try:
        return [ManifestEntry.model_validate(record) for record in data.get("models", [])]
    except ValidationError as exc:
        raise RepositoryError(f"{manifest_path(repo_dir)} holds a record that cannot be read: {exc}") from exc


def entry_record(report: PluginReport, spec: ModelSpec, source_digest: str) -> dict[str, Any]:
    """The manifest record of a generated entry (also written as ``1/ruth_entry.json``)."""
    assert report.contract is not None and report.triton_name is not None
    return {
        "model_id": report.model_id,
        "version": report.version,
        "triton_name": spec.name,
        "state": "VALID",
        "errors": [],
        "warnings": [w.to_dict() for w in report.warnings],
        "contract_digest": report.contract_digest,
        "source_digest": source_digest,
        "path": spec.name,
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
