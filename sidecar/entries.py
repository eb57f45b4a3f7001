"""Plugin folders -> Triton entries for the lifecycle manager, through ruthgen's library API.

Each plugin version has two physical Triton entries ("slots") so that a reload never replaces the
files of a copy that is serving:

* slot A, ``<model_id>__<version>`` (docs/internals.md), written in place by
  ``ruthgen.writer.build_repository(..., only={name})``, which also keeps the manifest up to date;
* slot B, ``<model_id>__<version>__b``: the same entry built into a staging repository beside the
  live one, then moved into the live repository under that name (``config.pbtxt``'s ``name``
  rewritten). ruthgen never touches it (it only manages the entries its manifest names).

A reload loads the slot that is not serving, switches the routing to it, then unloads the other.
``__b`` cannot be mistaken for a version: ``ruthgen.naming.parse_triton_name`` rejects the name,
and :func:`parse_slot_name` maps it back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruthgen.discovery import validate_plugin
from ruthgen.errors import RuthgenError
from ruthgen.manifest import ENTRY_RECORD_FILE
from ruthgen.naming import is_semver, parse_triton_name, triton_name
from ruthgen.writer import VERSION_DIR, build_repository

LOGGER = logging.getLogger(__name__)

SLOT_B_SUFFIX = "__b"
_SKIPPED = frozenset({"__pycache__", ".git", ".hg", ".svn", ".DS_Store"})
_NAME_LINE = re.compile(r'^name:\s*".*"\s*$', re.M)


class StageError(Exception):
    """An entry could not be generated; ``reason`` says why (validation errors or a write failure)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PluginCheck:
    """The validation outcome of one plugin version."""

    valid: bool
    reason: str
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StagedEntry:
    name: str  # the Triton name it was written under
    record: dict[str, Any]  # its manifest record (ruth_entry.json)


def slot_names(model_id: str, version: str) -> tuple[str, str]:
    """The two Triton names one plugin version alternates between."""
    name = triton_name(model_id, version)
    return name, name + SLOT_B_SUFFIX


def parse_slot_name(name: str) -> tuple[str, str]:
    """``(model_id, version)`` of either slot's Triton name; raises ``ValueError`` otherwise."""
    return parse_triton_name(name.removesuffix(SLOT_B_SUFFIX))


def facts_from_contract(contract: dict[str, Any], triton: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the lifecycle keeps from a normalised contract (and the entry's Triton facts)."""
    performance = contract.get("performance") or {}
    triton = triton or {}
    return {
        "input_type": (contract.get("input") or {}).get("type"),
        "output_schema_version": str(contract.get("schema_version", "1")),
        "inference_time_hint_ms": performance.get("inference_time_hint_ms"),
        "max_batch_size": int(triton.get("max_batch_size", performance.get("recommended_batch_size", 1))),
        "instance_count": int(triton.get("instance_count", performance.get("instance_count", 1))),
    }


class RuthgenEntries:
    """Validates plugins and writes their entries into the live repository ``repository``."""

    def __init__(
        self, models_dir: str | os.PathLike[str], repository: str | os.PathLike[str], target: str
    ) -> None:
        self.models_dir = Path(models_dir).absolute()
        self.repository = Path(repository).absolute()
        self.target = target
        self.staging = self.repository.parent / f".{self.repository.name}.ruth-slots"

    def plugins(self, model_id: str | None = None) -> dict[tuple[str, str], Path]:
        """Every ``<models>/<model_id>/<semver>/`` folder (validity aside)."""
        found: dict[tuple[str, str], Path] = {}
        for model_dir in _subdirs(self.models_dir):
            if model_id is not None and model_dir.name != model_id:
                continue
            for version_dir in _subdirs(model_dir):
                if is_semver(version_dir.name):
                    found[(model_dir.name, version_dir.name)] = version_dir
        return found

    def digest(self, model_id: str, version: str) -> str:
        """A cheap fingerprint of the plugin folder (names, sizes, mtimes), to notice edits."""
        root = self.models_dir / model_id / version
        hasher = hashlib.sha256()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED and not d.startswith("."))
            for name in sorted(filenames):
                if name in _SKIPPED or name.endswith((".pyc", ".pyo")):
                    continue
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except OSError:
                    continue
                rel = path.relative_to(root).as_posix()
                hasher.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return "files:" + hasher.hexdigest()[:32]

    def check(self, model_id: str, version: str) -> PluginCheck:
        report = validate_plugin(self.models_dir / model_id / version, model_id, version, self.target)
        if not report.valid or report.contract is None:
            return PluginCheck(False, _issues(report.errors) or "invalid plugin")
        return PluginCheck(True, "valid", facts_from_contract(report.contract.normalized()))

    def stage(self, model_id: str, version: str, name: str) -> StagedEntry:
        """Generate the entry of one plugin version as Triton model ``name`` (either slot)."""
        canonical, slot_b = slot_names(model_id, version)
        if name == canonical:
            return self._build(self.repository, canonical, model_id, version)
        if name != slot_b:
            raise ValueError(f"{name!r} is not a slot of {model_id}:{version}")
        self.staging.mkdir(parents=True, exist_ok=True)
        staged = self._build(self.staging, canonical, model_id, version)
        source = self.staging / canonical
        tmp = self.repository.parent / f".{name}.{uuid.uuid4().hex[:8]}"
        try:
            shutil.copytree(source, tmp, symlinks=True)
            config = tmp / "config.pbtxt"
            config.write_text(_NAME_LINE.sub(f'name: "{name}"', config.read_text("utf-8"), count=1), "utf-8")
            self.discard(name)
            os.rename(tmp, self.repository / name)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StageError(f"cannot write entry {name}: {exc}") from exc
        return StagedEntry(name, staged.record)

    def discard(self, name: str) -> None:
        """Remove a slot-B entry from the live repository (slot A is ruthgen's: see :meth:`forget`)."""
        if not name.endswith(SLOT_B_SUFFIX):
            return
        shutil.rmtree(self.repository / name, ignore_errors=True)

    def forget(self, model_id: str, version: str) -> None:
        """After the plugin folder is gone: ruthgen removes slot A and its manifest record."""
        canonical, slot_b = slot_names(model_id, version)
        self.discard(slot_b)
        try:
            build_repository(self.models_dir, self.repository, self.target, only={canonical})
            build_repository(self.models_dir, self.staging, self.target, only={canonical})
        except RuthgenError as exc:
            LOGGER.warning("cannot remove the entry of %s:%s: %s", model_id, version, exc)

    def _build(self, repo: Path, canonical: str, model_id: str, version: str) -> StagedEntry:
        try:
            result = build_repository(self.models_dir, repo, self.target, only={canonical})
        except RuthgenError as exc:
            raise StageError(f"cannot generate {canonical}: {exc}") from exc
        report = next((r for r in result.reports if (r.model_id, r.version) == (model_id, version)), None)
        if report is None:
            raise StageError(f"{model_id}/{version} is no longer in the models folder")
        if not report.valid or canonical not in (*result.written, *result.unchanged):
            raise StageError(_issues(report.errors) or f"{canonical} was not generated")
        record_file = repo / canonical / VERSION_DIR / ENTRY_RECORD_FILE
        return StagedEntry(canonical, json.loads(record_file.read_text("utf-8")))


def _issues(issues: list[Any]) -> str:
    return "; ".join(f"{i.check}: {i.message}" for i in issues)


def _subdirs(path: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return []
    return [Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=True)]
