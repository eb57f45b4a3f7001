"""The ``model.yaml`` plugin contract, modelled once (pydantic v2).

The fields are the model's identity, input, output, hardware and performance hints, plus what the
runtime needs (``schema_version``, ``timeouts``, ``dependencies``, ``permissions`` and a few
performance knobs); docs/plugin-contract.md
describes every field and its default. Unknown keys are reported as warnings, never errors, so that
a newer contract still loads. This module does no file I/O and knows nothing of Triton.

Library API: :func:`parse_contract` (mapping -> :class:`ContractParse`), :class:`ModelContract`,
:func:`contract_digest`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ruthgen.errors import ValidationIssue
from ruthgen.naming import MODEL_ID_RE, is_model_id, is_semver
from ruthgen.schema_dialect import SchemaDialectError, compile_output_schema
from ruthgen.wrapper.ruth_protocol import ENCODED_FORMATS, INPUT_FORMATS, INPUT_TYPES, RAW_FORMATS

InputType = Literal[INPUT_TYPES]  # type: ignore[valid-type]
InputFormat = Literal[INPUT_FORMATS]  # type: ignore[valid-type]
SCHEMA_VERSIONS: tuple[str, ...] = ("1",)
MAX_TIMEOUT_MS = 600_000
#: The runtime's total request timeout (the sidecar's ``request_timeout_ms``, docs/sidecar.md#deadlines).
DEFAULT_REQUEST_TIMEOUT_MS = 7000
REQUEST_TIMEOUT_ENV = "RUTH_REQUEST_TIMEOUT_MS"


class _Section(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class InputSpec(_Section):
    """What the plugin consumes: one frame, a batch of frames, or one camera's frames in order."""

    type: InputType
    format: InputFormat
    min_width: int = Field(1, ge=1)
    min_height: int = Field(1, ge=1)
    max_width: int | None = Field(None, ge=1)
    max_height: int | None = Field(None, ge=1)
    channels: Literal[3] = 3

    @model_validator(mode="after")
    def _bounds(self) -> InputSpec:
        for axis in ("width", "height"):
            low, high = getattr(self, f"min_{axis}"), getattr(self, f"max_{axis}")
            if high is not None and high < low:
                raise ValueError(f"max_{axis} ({high}) is smaller than min_{axis} ({low})")
        return self


class OutputSpec(_Section):
    """The result: ``schema`` is the output-schema dialect (see :mod:`ruthgen.schema_dialect`);
    ``schema_version`` optionally names its version (else a hash of the schema stands for it)."""

    schema_: dict[str, Any] = Field(alias="schema")
    schema_version: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:+-]+$")

    @field_validator("schema_")
    @classmethod
    def _compiles(cls, value: dict[str, Any]) -> dict[str, Any]:
        compile_output_schema(value)  # SchemaDialectError is a ValueError: pydantic reports it
        return value


class Hardware(_Section):
    """Where the plugin can run; matched against the build's ``--target``."""

    supports_cpu: bool = True
    supports_gpu: bool = False
    supports_jetson: bool = False
    min_gpu_memory_mb: int | None = Field(None, ge=0)


class Performance(_Section):
    """Hints that shape batching and instances (all optional)."""

    recommended_batch_size: int = Field(1, ge=1, le=1024)
    recommended_fps: float | None = Field(None, gt=0)
    inference_time_hint_ms: float | None = Field(None, gt=0)
    instance_count: int = Field(1, ge=1, le=64)
    instances_per_gpu: int | None = Field(None, ge=1, le=64)
    max_queue_delay_ms: float = Field(0, ge=0, le=10_000)
    max_candidate_sequences: int = Field(64, ge=1, le=4096)
    sequence_idle_ms: int = Field(60_000, ge=1, le=86_400_000)


class EntryPoints(_Section):
    """Plugin source files, relative to the plugin folder. ``null`` turns an optional one off."""

    inference: str = "inference.py"
    preprocess: str | None = "preprocessing.py"
    postprocess: str | None = "postprocessing.py"

    @field_validator("inference", "preprocess", "postprocess")
    @classmethod
    def _relative_py(cls, value: str | None) -> str | None:
        if value is None:
            return None
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or "\\" in value or path.suffix != ".py":
            raise ValueError(f"{value!r} must be a relative path to a .py file inside the plugin folder")
        return path.as_posix()


class Timeouts(_Section):
    """Per-phase time limits in milliseconds, enforced by the runtime."""

    preprocess_ms: int = Field(1000, gt=0, le=MAX_TIMEOUT_MS)
    inference_ms: int = Field(5000, gt=0, le=MAX_TIMEOUT_MS)
    postprocess_ms: int = Field(1000, gt=0, le=MAX_TIMEOUT_MS)


class Dependencies(_Section):
    """The plugin's own Python packages (its ``requirements.txt``)."""

    requirements: str | None = None
    no_deps: bool = False

    @field_validator("requirements")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is None:
            return None
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or not value.strip():
            raise ValueError(f"{value!r} must be a relative path inside the plugin folder")
        return path.as_posix()


#: The longest chain of upstreams a model may stand at the end of (A needs B needs C: 2).
MAX_UPSTREAM_DEPTH = 3


class Upstream(_Section):
    """Another model whose result for the same frame this plugin needs, named as a backend names it:
    ``model_id`` and ``version`` (there is no default version)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = Field(pattern=MODEL_ID_RE.pattern, max_length=64)
    version: str

    @field_validator("version", mode="before")
    @classmethod
    def _semver(cls, value: Any) -> str:
        if not isinstance(value, str) or not is_semver(value):
            raise ValueError(f"{value!r} is not a semantic version MAJOR.MINOR.PATCH (quote it in YAML)")
        return value

    @property
    def key(self) -> tuple[str, str]:
        return (self.model_id, self.version)

    def __str__(self) -> str:
        return f"{self.model_id} {self.version}"


_ENDPOINT_RE = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+(?:/\d{1,3})?)\]|(?P<host>[^\s:\[\]/]+(?:/\d{1,2})?))"
    r":(?P<port>\d{1,5}|\*)$"
)


def check_endpoint(entry: str) -> str:
    """Raise ValueError unless ``entry`` is ``host:port``, ``ip:port``, ``cidr:port`` or
    ``[ipv6 or ipv6-cidr]:port`` (``*`` for any port); returns it unchanged."""
    match = _ENDPOINT_RE.match(entry)
    if match is None:
        raise ValueError(f"{entry!r} is not host:port, CIDR:port or [IPv6]:port (port 1-65535 or *)")
    port = match.group("port")
    if port != "*" and not 1 <= int(port) <= 65535:
        raise ValueError(f"{entry!r}: port {port} is not in 1-65535")
    address = match.group("v6") or match.group("host")
    if "/" in address or match.group("v6"):
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError as exc:
            raise ValueError(f"{entry!r}: {exc}") from None
    return entry


class Permissions(_Section):
    """What the plugin may do beyond computing on its input: ``network`` is false (nothing), true
    (anything) or an allowlist of ``host:port`` / ``CIDR:port`` endpoints it may reach."""

    network: bool | list[str] = False

    @field_validator("network")
    @classmethod
    def _endpoints(cls, value: bool | list[str]) -> bool | list[str]:
        if isinstance(value, list):
            if not value:
                raise ValueError("an empty allowlist permits nothing: write false instead")
            for entry in value:
                check_endpoint(entry)
        return value


class ModelContract(_Section):
    """One plugin version's ``model.yaml``, with every default filled in."""

    schema_version: str = "1"
    model_id: str = Field(pattern=MODEL_ID_RE.pattern, max_length=64)
    version: str
    display_name: str = Field(min_length=1, max_length=200)
    input: InputSpec
    output: OutputSpec
    hardware: Hardware = Hardware()
    performance: Performance = Performance()
    entry_points: EntryPoints = EntryPoints()
    timeouts: Timeouts = Timeouts()
    dependencies: Dependencies | None = None
    permissions: Permissions = Permissions()
    upstreams: tuple[Upstream, ...] = ()

    @field_validator("schema_version", mode="before")
    @classmethod
    def _schema_version(cls, value: Any) -> str:
        text = str(value)
        if text not in SCHEMA_VERSIONS:
            raise ValueError(
                f"schema_version {text!r} is not supported (supported: {', '.join(SCHEMA_VERSIONS)})"
            )
        return text

    @field_validator("version", mode="before")
    @classmethod
    def _semver(cls, value: Any) -> str:
        if not isinstance(value, str) or not is_semver(value):
            raise ValueError(
                f"{value!r} is not a semantic version MAJOR.MINOR.PATCH[-prerelease] (quote it in YAML)"
            )
        return value

    @field_validator("upstreams")
    @classmethod
    def _upstreams(cls, value: tuple[Upstream, ...], info: ValidationInfo) -> tuple[Upstream, ...]:
        me = info.data.get("model_id")
        seen: set[str] = set()
        for upstream in value:
            if upstream.model_id == me:
                raise ValueError(f"{upstream} is this model itself")
            if upstream.model_id in seen:  # its results reach the plugin by model_id
                raise ValueError(f"{upstream.model_id} is listed twice: name one version of a model")
            seen.add(upstream.model_id)
        return value

    def output_json_schema(self) -> dict[str, Any]:
        """The JSON Schema every plugin output is validated with."""
        return compile_output_schema(self.output.schema_)

    def output_schema_version(self) -> str:
        """What identifies the output schema: ``output.schema_version`` when declared, else
        ``sha256:`` and the first 12 hex digits of the hash of the compiled JSON Schema's canonical
        JSON (key order, spacing and YAML spelling do not change it; any change of the shape does)."""
        if self.output.schema_version:
            return self.output.schema_version
        text = json.dumps(self.output_json_schema(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:12]

    def normalized(self) -> dict[str, Any]:
        """JSON-ready mapping of the contract, defaults filled in, keys as in model.yaml."""
        return self.model_dump(mode="json", by_alias=True)


@dataclass
class ContractParse:
    """Outcome of :func:`parse_contract`: a contract (or None) and the issues found."""

    contract: ModelContract | None
    errors: list[ValidationIssue] = field(default_factory=list)
    warnings: list[ValidationIssue] = field(default_factory=list)


def parse_contract(raw: Any) -> ContractParse:
    """Validate the loaded YAML of one ``model.yaml``; never raises on bad content."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return ContractParse(
            None,
            [
                ValidationIssue(
                    "model_yaml_empty",
                    "model.yaml is empty: declare at least model_id, version, display_name, input and "
                    "output (`ruthgen new` writes a complete one)",
                    "model.yaml",
                )
            ],
        )
    if not isinstance(raw, Mapping):
        return ContractParse(
            None,
            [ValidationIssue("model_yaml_invalid", "model.yaml must hold a mapping of fields", "")],
        )
    warnings = [
        ValidationIssue("unknown_field", f"unknown field {p!r} is ignored (check its spelling)", p)
        for p in unknown_fields(raw, ModelContract)
    ]
    try:
        contract = ModelContract.model_validate(dict(raw))
    except ValidationError as exc:
        return ContractParse(None, _issues(exc, raw), warnings)
    return ContractParse(contract, [], warnings)


def unknown_fields(raw: Mapping[str, Any], model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of keys in ``raw`` that ``model`` does not declare (recursively)."""
    found: list[str] = []
    by_key = {(f.alias or name): f for name, f in model.model_fields.items()}
    for key, value in raw.items():
        path = f"{prefix}{key}"
        info = by_key.get(key)
        if info is None:
            found.append(path)
            continue
        sub = _section_type(info.annotation)
        if sub is not None and isinstance(value, Mapping):
            found.extend(unknown_fields(value, sub, f"{path}."))
    return found


def _section_type(annotation: Any) -> type[BaseModel] | None:
    candidates = getattr(annotation, "__args__", None) or (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, _Section):
            return candidate
    return None


_CHECK_BY_FIELD = {
    "input.type": "unknown_input_type",
    "input.format": "unknown_input_format",
    "model_id": "invalid_model_id",
    "version": "invalid_version",
    "schema_version": "unsupported_schema_version",
}
_CHECK_BY_SECTION = {
    "timeouts": "bad_timeouts",
    "permissions": "invalid_permissions",
    "output": "output_schema_invalid",
    "entry_points": "invalid_entry_point",
    "upstreams": "invalid_upstreams",
}


def _issues(exc: ValidationError, raw: Mapping[str, Any]) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        path = ".".join(loc)
        if err["type"] == "missing" and loc[:1] != ["upstreams"]:
            issues.append(
                ValidationIssue("required_field_missing", f"required field {path!r} is missing: add it", path)
            )
            continue
        check = _CHECK_BY_FIELD.get(path) or _CHECK_BY_SECTION.get(loc[0] if loc else "", "invalid_field")
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, SchemaDialectError):
            issues.append(ValidationIssue("output_schema_invalid", ctx_error.message, ctx_error.path))
            continue
        issues.append(ValidationIssue(check, _message(path, err), path))
    return issues


def _message(path: str, err: Mapping[str, Any]) -> str:
    got = err.get("input")
    if path == "input.type":
        return f"input.type must be one of {', '.join(INPUT_TYPES)}, got {got!r}"
    if path == "input.format":
        return f"input.format must be one of {', '.join(INPUT_FORMATS)}, got {got!r}"
    if path == "model_id":
        return f"model_id must match {MODEL_ID_RE.pattern} (at most 64 characters), got {got!r}"
    text = str(err["msg"]).removeprefix("Value error, ")
    if isinstance(got, (str, int, float, bool)) and repr(got) not in text:
        text = f"{text} (got {got!r})"
    return f"{path}: {text}" if path and not text.startswith(path.rsplit(".", 1)[-1]) else text


def declared_limits_ms(contract: ModelContract) -> int:
    """The longest a request may run inside the model by its own limits: the three phases' sum."""
    limits = contract.timeouts
    return limits.preprocess_ms + limits.inference_ms + limits.postprocess_ms


def timeout_warnings(contract: ModelContract, request_timeout_ms: int) -> list[ValidationIssue]:
    """A warning when the phase limits add up to more than the runtime's total request timeout:
    requests would then be answered TIMEOUT by the runtime before the model's own limits apply."""
    declared = declared_limits_ms(contract)
    if declared <= request_timeout_ms:
        return []
    return [
        ValidationIssue(
            "timeouts_exceed_runtime",
            f"the phase limits add up to {declared} ms but the runtime answers TIMEOUT after "
            f"{request_timeout_ms} ms (its request_timeout_ms): lower timeouts.* or raise "
            f"{REQUEST_TIMEOUT_ENV}",
            "timeouts",
        )
    ]


def upstream_issues(
    contract: ModelContract, contracts: Mapping[tuple[str, str], ModelContract]
) -> tuple[list[ValidationIssue], list[ValidationIssue]]:
    """(errors, warnings) of ``contract``'s upstreams against the other valid ``contracts`` by key.

    Errors: an upstream that cannot feed it (``upstream_incompatible``: another input format, or a
    temporal upstream of a model that is not temporal), a cycle through it (``upstream_cycle``), a
    chain of upstreams deeper than :data:`MAX_UPSTREAM_DEPTH` (``upstream_chain_too_long``).
    Warnings: an upstream that is not there (``upstream_missing``): valid, but the model does not
    serve until that upstream is READY.
    """
    errors: list[ValidationIssue] = []
    warnings: list[ValidationIssue] = []
    me = (contract.model_id, contract.version)
    for i, upstream in enumerate(contract.upstreams):
        path = f"upstreams.{i}"
        found = contracts.get(upstream.key)
        if found is None:
            warnings.append(ValidationIssue(
                "upstream_missing", f"upstream {upstream} is not among the valid models: this model does "
                "not serve until it is there and READY", path,
            ))
            continue
        why = _cannot_feed(found, contract)
        if why:
            errors.append(ValidationIssue("upstream_incompatible", f"upstream {upstream} {why}", path))
    cycle = _cycle_through(me, contract, contracts)
    if cycle:
        text = " -> ".join(f"{m} {v}" for m, v in cycle)
        errors.append(ValidationIssue("upstream_cycle", f"upstreams form a cycle: {text}", "upstreams"))
    else:
        depth, chain = _depth(me, contract, contracts)
        if depth > MAX_UPSTREAM_DEPTH:
            errors.append(ValidationIssue(
                "upstream_chain_too_long",
                f"a chain of {depth} upstreams ({' -> '.join(f'{m} {v}' for m, v in chain)}); at most "
                f"{MAX_UPSTREAM_DEPTH}", "upstreams",
            ))
    return errors, warnings


def _cannot_feed(upstream: ModelContract, dependent: ModelContract) -> str | None:
    """Why ``upstream``'s result for a frame cannot go with that frame to ``dependent`` (None: it can)."""
    if upstream.input.format != dependent.input.format:
        return (f"takes {upstream.input.format} frames and this model {dependent.input.format}: one frame "
                "feeds both, so the formats must be the same")
    if upstream.input.type == "temporal" and dependent.input.type != "temporal":
        return (f"is temporal (it needs every frame of a camera, in order) and this model is "
                f"{dependent.input.type}: only a temporal model may depend on a temporal one")
    return None


def _cycle_through(
    me: tuple[str, str], contract: ModelContract, contracts: Mapping[tuple[str, str], ModelContract]
) -> list[tuple[str, str]] | None:
    """The keys of a cycle of upstreams that comes back to ``me`` (``me`` first and last), or None."""
    path: list[tuple[str, str]] = [me]
    seen: set[tuple[str, str]] = set()

    def walk(current: ModelContract) -> list[tuple[str, str]] | None:
        for upstream in current.upstreams:
            if upstream.key == me:
                return [*path, me]
            nxt = contracts.get(upstream.key)
            if nxt is None or upstream.key in seen:
                continue
            seen.add(upstream.key)
            path.append(upstream.key)
            found = walk(nxt)
            if found:
                return found
            path.pop()
        return None

    return walk(contract)


def _depth(
    me: tuple[str, str], contract: ModelContract, contracts: Mapping[tuple[str, str], ModelContract]
) -> tuple[int, list[tuple[str, str]]]:
    """The longest chain of upstreams below ``contract`` (no cycle below it), and that chain."""
    best: tuple[int, list[tuple[str, str]]] = (0, [me])
    for upstream in contract.upstreams:
        below = contracts.get(upstream.key)
        if below is None:
            depth, chain = 1, [me, upstream.key]
        elif _cycle_through(upstream.key, below, contracts):
            continue  # reported on the models of that cycle
        else:
            sub_depth, sub_chain = _depth(upstream.key, below, contracts)
            depth, chain = sub_depth + 1, [me, *sub_chain]
        if depth > best[0]:
            best = (depth, chain)
    return best


def contract_digest(contract: ModelContract) -> str:
    """``sha256:<hex>`` of the canonical JSON of the normalised contract."""
    data = json.dumps(contract.normalized(), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()


__all__ = [
    "ENCODED_FORMATS",
    "INPUT_FORMATS",
    "INPUT_TYPES",
    "RAW_FORMATS",
    "ContractParse",
    "Dependencies",
    "EntryPoints",
    "Hardware",
    "InputSpec",
    "ModelContract",
    "OutputSpec",
    "Performance",
    "Permissions",
    "Timeouts",
    "Upstream",
    "contract_digest",
    "declared_limits_ms",
    "is_model_id",
    "parse_contract",
    "timeout_warnings",
    "upstream_issues",
]
