"""Plugin versions validated and written as entries of a live repository, one version at a time.

What a runtime that owns a plugin folder needs of the generator (the sidecar's plugin-folder source),
over :func:`ruthgen.discovery.validate_plugin` and :mod:`ruthgen.writer`. It needs Jinja2, YAML and
the plugins' environments: reach it through :func:`ruthgen.interface.plugin_builder`, which imports
it on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

from ruthgen.contract import ModelContract
from ruthgen.discovery import validate_plugin
from ruthgen.errors import EntryNotWritten
from ruthgen.manifest import ManifestEntry
from ruthgen.naming import triton_name
from ruthgen.writer import build_copy, build_repository


class PluginBuilder:
    """Validates the versions of ``models_dir`` and writes their entries into ``repository``."""

    def __init__(
        self, models_dir: str | os.PathLike[str], repository: str | os.PathLike[str], target: str
    ) -> None:
        self.models_dir = Path(models_dir).absolute()
        self.repository = Path(repository).absolute()
        self.target = target

    def check(self, model_id: str, version: str) -> tuple[ModelContract | None, str]:
        """``(contract, "")`` for a valid version, ``(None, why not)`` otherwise."""
        report = validate_plugin(self.models_dir / model_id / version, model_id, version, self.target)
        if not report.valid or report.contract is None:
            return None, "; ".join(f"{i.check}: {i.message}" for i in report.errors) or "invalid plugin"
        return report.contract, ""

    def build(self, model_id: str, version: str) -> ManifestEntry:
        """Write the version's entry under its own Triton name (the manifest updated); its record.

        Raises :class:`~ruthgen.errors.EntryNotWritten` when the version is gone or invalid, and
        another :class:`~ruthgen.errors.RuthgenError` when the repository cannot be written."""
        name = triton_name(model_id, version)
        result = build_repository(self.models_dir, self.repository, self.target, only={name})
        report = next((r for r in result.reports if (r.model_id, r.version) == (model_id, version)), None)
        if report is None:
            raise EntryNotWritten(f"{model_id}/{version} is no longer in the models folder")
        if not report.valid or name not in (*result.written, *result.unchanged):
            reason = "; ".join(f"{i.check}: {i.message}" for i in report.errors)
            raise EntryNotWritten(reason or f"{name} was not generated")
        key = (model_id, version)
        record = next(m for m in result.manifest["models"] if (m["model_id"], m["version"]) == key)
        return ManifestEntry.model_validate(record)

    def build_copy(self, model_id: str, version: str, name: str) -> ManifestEntry:
        """Write a second entry of the version under Triton name ``name`` (not in the manifest)."""
        record = build_copy(self.models_dir, self.repository, model_id, version, name, self.target)
        return ManifestEntry.model_validate(record)

    def remove(self, model_id: str, version: str) -> None:
        """The version's folder is gone: remove its entry and its manifest record."""
        build_repository(self.models_dir, self.repository, self.target, only={triton_name(model_id, version)})

