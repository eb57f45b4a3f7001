"""Discovery and validation of plugins (docs/architecture.md#build-path).

Layout: ``<models>/<model_id>/<semver>/model.yaml``. Symlinks are followed; hidden folders are
skipped; a version folder that is not a semantic version is ignored with a warning. Every plugin
version gets a :class:`PluginReport`; one invalid plugin never blocks the others.

Library API (stable):

* ``discover(models_dir, target="cpu") -> list[PluginReport]``
* ``scan(models_dir, target="cpu") -> Discovery`` (the reports plus folder-level warnings)
* ``validate_plugin(plugin_dir, model_id, version, target="cpu") -> PluginReport``

Check names are listed in docs/plugin-contract.md.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ruthgen.contract import (
    DEFAULT_REQUEST_TIMEOUT_MS,
    REQUEST_TIMEOUT_ENV,
    Dependencies,
    ModelContract,
    contract_digest,
    parse_contract,
    timeout_warnings,
    upstream_issues,
)
from ruthgen.errors import UsageError, ValidationIssue
from ruthgen.naming import MODEL_ID_RE, is_model_id, is_semver, semver_key, triton_name
from ruthgen.spec import TARGETS, instance_kind

LOGGER = logging.getLogger(__name__)

CONTRACT_FILE = "model.yaml"
CONFIG_FILE = "config.yaml"
WEIGHTS_DIR = "weights"
DEFAULT_REQUIREMENTS = "requirements.txt"
MAX_YAML_BYTES = 256 * 1024
VALID, INVALID = "VALID", "INVALID"
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_UNREADABLE = object()  # _load_yaml's answer when model.yaml could not be read (the error is reported)


@dataclass
class PluginReport:
    """Validation outcome of one plugin version.

    ``state`` is ``"VALID"`` or ``"INVALID"``; ``triton_name`` is None only when the folder names
    cannot form one; ``contract`` and ``output_json_schema`` are None when INVALID.
    """

    model_id: str
    version: str
    plugin_dir: Path
    triton_name: str | None = None
    errors: list[ValidationIssue] = field(default_factory=list)
    warnings: list[ValidationIssue] = field(default_factory=list)
    contract: ModelContract | None = None
    output_json_schema: dict[str, Any] | None = None
    contract_digest: str | None = None

    @property
    def state(self) -> str:
        return INVALID if self.errors or self.contract is None else VALID

    def seal(self) -> PluginReport:
        """Close the report: an INVALID one always carries at least one error naming its check."""
        if self.contract is None and not self.errors:
            self.errors.append(
                ValidationIssue(
                    "validation_incomplete",
                    "the plugin could not be validated and no check said why; report this as a bug",
                    "",
                )
            )
        return self

    @property
    def valid(self) -> bool:
        return self.state == VALID

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` shape of one model (validate, list, build)."""
        return {
            "model_id": self.model_id,
            "version": self.version,
            "state": self.state,
            "triton_name": self.triton_name,
            "errors": [i.to_dict() for i in self.errors],
            "warnings": [i.to_dict() for i in self.warnings],
        }


@dataclass
class Discovery:
    """Every plugin report (sorted by model_id, then semver) and folder-level warnings."""

    reports: list[PluginReport]
    warnings: list[str] = field(default_factory=list)


def discover(models_dir: str | os.PathLike[str], target: str = "cpu") -> list[PluginReport]:
    """Validate every plugin version under ``models_dir`` for ``target`` (cpu, gpu, jetson)."""
    return scan(models_dir, target).reports


def scan(models_dir: str | os.PathLike[str], target: str = "cpu") -> Discovery:
    """Like :func:`discover`, and also return warnings about ignored folders."""
    root = Path(models_dir)
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")
    if not root.is_dir():
        raise UsageError(f"models folder {str(root)!r} does not exist")
    result = Discovery(reports=[])
    for model_dir in _subdirs(root):
        versions = _subdirs(model_dir)
        if not versions:
            result.warnings.append(f"{model_dir.name}/: no version folder, ignored")
        for version_dir in versions:
            if not is_semver(version_dir.name):
                result.warnings.append(
                    f"{model_dir.name}/{version_dir.name}/: not a semantic version folder "
                    "(MAJOR.MINOR.PATCH[-prerelease]), ignored"
                )
                continue
            result.reports.append(validate_plugin(version_dir, model_dir.name, version_dir.name, target))
    for warning in result.warnings:
        LOGGER.warning("%s", warning)
    result.reports.sort(key=lambda r: (r.model_id, semver_key(r.version)))
    check_upstreams(result.reports)
    return result


def check_upstreams(reports: list[PluginReport]) -> None:
    """The checks that need every plugin at once: each valid version's upstreams against the other
    valid versions (cycles, chains, formats and input types; see ``upstream_issues``). An error
    makes the version INVALID; a missing upstream is a warning."""
    contracts = {(r.model_id, r.version): r.contract for r in reports if r.valid and r.contract is not None}
    for report in reports:
        if report.contract is None or not report.contract.upstreams or not report.valid:
            continue
        errors, warnings = upstream_issues(report.contract, contracts)
        report.errors.extend(errors)
        report.warnings.extend(warnings)


def _subdirs(path: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as exc:
        LOGGER.warning("cannot list %s: %s", path, exc)
        return []
    return [Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=True)]


def validate_plugin(
    plugin_dir: str | os.PathLike[str], model_id: str, version: str, target: str = "cpu"
) -> PluginReport:
    """Run every check on one plugin version folder ``<models>/<model_id>/<version>``.

    The report is sealed: when it is INVALID, at least one error names the check that failed.
    """
    return _validate(Path(plugin_dir), model_id, version, target).seal()


def _validate(plugin_dir: Path, model_id: str, version: str, target: str) -> PluginReport:
    report = PluginReport(model_id=model_id, version=version, plugin_dir=plugin_dir)
    if not is_model_id(model_id):
        report.errors.append(
            ValidationIssue(
                "invalid_model_id",
                f"folder name {model_id!r} is not a valid model_id: rename it to match "
                f"{MODEL_ID_RE.pattern} (at most 64 characters)",
                "",
            )
        )
        return report
    report.triton_name = triton_name(model_id, version)
    raw = _load_yaml(plugin_dir, report)
    if raw is _UNREADABLE:
        return report
    parsed = parse_contract(raw)
    report.errors.extend(parsed.errors)
    report.warnings.extend(parsed.warnings)
    _check_folder_names(raw, model_id, version, report)
    if parsed.contract is None:
        return report
    contract = _check_files(plugin_dir, raw, parsed.contract, report)
    _check_hardware(contract, target, report)
    if report.errors:
        return report
    report.errors.extend(_requirement_issues(plugin_dir, contract))
    if not report.errors:
        report.contract = contract
        report.output_json_schema = contract.output_json_schema()
        report.contract_digest = contract_digest(contract)
        report.warnings.extend(timeout_warnings(contract, runtime_request_timeout_ms()))
    return report


def runtime_request_timeout_ms() -> int:
    """The runtime's total request timeout: ``RUTH_REQUEST_TIMEOUT_MS`` when set, else the default."""
    raw = os.environ.get(REQUEST_TIMEOUT_ENV, "").strip()
    try:
        value = int(raw) if raw else DEFAULT_REQUEST_TIMEOUT_MS
    except ValueError:
        LOGGER.warning("ignoring %s=%r: not a whole number of milliseconds", REQUEST_TIMEOUT_ENV, raw)
        return DEFAULT_REQUEST_TIMEOUT_MS
    return value if value > 0 else DEFAULT_REQUEST_TIMEOUT_MS


def _where(plugin_dir: Path) -> str:
    """``<model_id>/<version>/``: messages name the plugin, not the machine's paths."""
    return f"{plugin_dir.parent.name}/{plugin_dir.name}/"


def _load_yaml(plugin_dir: Path, report: PluginReport) -> Any:
    path = plugin_dir / CONTRACT_FILE
    if not path.is_file():
        report.errors.append(
            ValidationIssue(
                "model_yaml_missing",
                f"{CONTRACT_FILE} not found in {_where(plugin_dir)}: create it",
                CONTRACT_FILE,
            )
        )
        return _UNREADABLE
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ValueError(f"it is larger than {MAX_YAML_BYTES // 1024} KiB")
        text = path.read_bytes().decode("utf-8")
    except (OSError, ValueError) as exc:
        report.errors.append(
            ValidationIssue("model_yaml_unreadable", f"cannot read {CONTRACT_FILE}: {exc}", CONTRACT_FILE)
        )
        return _UNREADABLE
    try:
        return yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        report.errors.append(
            ValidationIssue(
                "model_yaml_invalid", f"{CONTRACT_FILE} is not valid YAML{where}: {problem}", CONTRACT_FILE
            )
        )
        return _UNREADABLE


def _check_folder_names(raw: Any, model_id: str, version: str, report: PluginReport) -> None:
    if not isinstance(raw, dict):
        return
    declared_id, declared_version = raw.get("model_id"), raw.get("version")
    if isinstance(declared_id, str) and declared_id != model_id:
        report.errors.append(
            ValidationIssue(
                "model_id_mismatch",
                f"model_id {declared_id!r} differs from its folder name {model_id!r}: make them equal",
                "model_id",
            )
        )
    if declared_version is not None and str(declared_version) != version:
        report.errors.append(
            ValidationIssue(
                "version_mismatch",
                f"version {declared_version!r} differs from its folder name {version!r}: make them equal",
                "version",
            )
        )


def _check_files(plugin_dir: Path, raw: dict, contract: ModelContract, report: PluginReport) -> ModelContract:
    """Entry points, config.yaml, weights/, requirements; returns the contract with files resolved."""
    declared = raw.get("entry_points") if isinstance(raw.get("entry_points"), dict) else {}
    updates: dict[str, Any] = {}
    for name in ("inference", "preprocess", "postprocess"):
        rel = getattr(contract.entry_points, name)
        if rel is None or (plugin_dir / rel).is_file():
            continue
        if name == "inference" or name in declared:
            report.errors.append(
                ValidationIssue(
                    "entry_point_missing",
                    f"{rel} not found in {_where(plugin_dir)}: create it or set entry_points.{name}",
                    f"entry_points.{name}",
                )
            )
        else:
            updates[name] = None  # optional default file absent: the runtime uses the identity
    if updates:
        contract = contract.model_copy(
            update={"entry_points": contract.entry_points.model_copy(update=updates)}
        )
    config = plugin_dir / CONFIG_FILE
    if config.exists():
        try:
            loaded = yaml.load(config.read_text("utf-8"), Loader=_YAML_LOADER)
            if loaded is not None and not isinstance(loaded, dict):
                raise ValueError("it must hold a mapping")
        except (OSError, ValueError, yaml.YAMLError) as exc:
            report.errors.append(
                ValidationIssue("config_invalid", f"{CONFIG_FILE} is unusable: {exc}", CONFIG_FILE)
            )
    if not (plugin_dir / WEIGHTS_DIR).is_dir():
        report.warnings.append(
            ValidationIssue(
                "weights_missing", f"no {WEIGHTS_DIR}/ folder: put model weights there", WEIGHTS_DIR
            )
        )
    deps = contract.dependencies
    if deps is not None and deps.requirements is not None:
        if not (plugin_dir / deps.requirements).is_file():
            report.errors.append(
                ValidationIssue(
                    "requirements_missing",
                    f"{deps.requirements} not found in {_where(plugin_dir)}: "
                    "create it or remove dependencies.requirements",
                    "dependencies.requirements",
                )
            )
    elif (plugin_dir / DEFAULT_REQUIREMENTS).is_file():
        filled = (deps or Dependencies()).model_copy(update={"requirements": DEFAULT_REQUIREMENTS})
        contract = contract.model_copy(update={"dependencies": filled})
    return contract


def _check_hardware(contract: ModelContract, target: str, report: PluginReport) -> None:
    if instance_kind(contract.hardware, target) is None:
        hw = contract.hardware
        declared = [k for k in ("cpu", "gpu", "jetson") if getattr(hw, f"supports_{k}")] or ["nothing"]
        report.errors.append(
            ValidationIssue(
                "hardware_incompatible",
                f"the plugin supports {', '.join(declared)} but the build target is {target}: "
                f"set hardware.supports_{'cpu' if target == 'cpu' else target} or build for another --target",
                "hardware",
            )
        )


def _requirement_issues(plugin_dir: Path, contract: ModelContract) -> list[ValidationIssue]:
    if contract.dependencies is None or contract.dependencies.requirements is None:
        return []
    from ruthgen import envs  # imported here: envs imports the contract, discovery is imported first

    return list(envs.check_requirements(plugin_dir, contract))
