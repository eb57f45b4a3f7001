"""The output-schema dialect of ``model.yaml`` compiled to JSON Schema.

``output.schema`` maps each top-level result field to a field spec::

    confidence: {type: float, min: 0.0, max: 1.0}
    event_type: {type: string, enum: [fall_detected, no_fall]}
    boxes:      {type: array, items: {type: object, properties: {x: {type: integer}}}}

Field spec keys: ``type`` (string | float | integer | boolean | array | object, required),
``enum``, ``min``/``max`` (value bounds for numbers, length bounds for strings, item-count bounds
for arrays), ``items`` (arrays), ``properties`` (objects), ``optional`` (default false: the field
must be present), ``nullable`` (default false: ``null`` is accepted too) and ``description``.
Objects, the top level included, accept no undeclared keys; an ``object`` without ``properties``
accepts any mapping. The compiled schema is what the runtime validates every plugin output with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_JSON_TYPES = {
    "string": "string",
    "float": "number",
    "integer": "integer",
    "boolean": "boolean",
    "array": "array",
    "object": "object",
}
_BOUNDS = {
    "number": ("minimum", "maximum"),
    "integer": ("minimum", "maximum"),
    "string": ("minLength", "maxLength"),
    "array": ("minItems", "maxItems"),
}
_KEYS = {"type", "enum", "min", "max", "items", "properties", "optional", "nullable", "description"}


class SchemaDialectError(ValueError):
    """The dialect could not be compiled; ``path`` is the offending field, e.g. ``output.schema.x.type``."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


def compile_output_schema(schema: Any, path: str = "output.schema") -> dict[str, Any]:
    """Compile the whole ``output.schema`` mapping into a JSON Schema (draft 7) object schema."""
    if not isinstance(schema, Mapping) or not schema:
        raise SchemaDialectError(
            "output.schema must be a non-empty mapping of field name to field spec", path
        )
    compiled = _compile_object(schema, path)
    compiled["$schema"] = "http://json-schema.org/draft-07/schema#"
    return compiled


def _compile_object(properties: Mapping[str, Any], path: str) -> dict[str, Any]:
    out_props: dict[str, Any] = {}
    required: list[str] = []
    for name in properties:
        if not isinstance(name, str) or not name:
            raise SchemaDialectError(f"field names must be non-empty strings, got {name!r}", path)
        spec = properties[name]
        field_path = f"{path}.{name}"
        out_props[name] = _compile_field(spec, field_path)
        if not (isinstance(spec, Mapping) and spec.get("optional", False)):
            required.append(name)
    return {
        "type": "object",
        "properties": out_props,
        "required": sorted(required),
        "additionalProperties": False,
    }


def _compile_field(spec: Any, path: str) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise SchemaDialectError(f"a field spec must be a mapping with a 'type', got {spec!r}", path)
    unknown = sorted(str(k) for k in spec if k not in _KEYS)
    if unknown:
        raise SchemaDialectError(
            f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_KEYS))}",
            f"{path}.{unknown[0]}",
        )
    kind = spec.get("type")
    if kind not in _JSON_TYPES:
        raise SchemaDialectError(
            f"type must be one of {', '.join(_JSON_TYPES)}, got {kind!r}", f"{path}.type"
        )
    json_type = _JSON_TYPES[kind]
    out: dict[str, Any] = {"type": json_type}
    if "description" in spec:
        out["description"] = str(spec["description"])
    for flag in ("optional", "nullable"):
        if flag in spec and not isinstance(spec[flag], bool):
            raise SchemaDialectError(f"{flag} must be true or false", f"{path}.{flag}")
    if "enum" in spec:
        out["enum"] = _compile_enum(spec["enum"], json_type, f"{path}.enum")
    _compile_bounds(spec, json_type, out, path)
    if "items" in spec:
        if json_type != "array":
            raise SchemaDialectError("items is allowed only on type: array", f"{path}.items")
        out["items"] = _compile_field(spec["items"], f"{path}.items")
    if "properties" in spec:
        if json_type != "object":
            raise SchemaDialectError("properties is allowed only on type: object", f"{path}.properties")
        props = spec["properties"]
        if not isinstance(props, Mapping):
            raise SchemaDialectError(
                "properties must be a mapping of field name to field spec", f"{path}.properties"
            )
        out.update(_compile_object(props, f"{path}.properties"))
    if spec.get("nullable", False):
        out["type"] = [json_type, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def _compile_enum(values: Any, json_type: str, path: str) -> list[Any]:
    if not isinstance(values, list) or not values:
        raise SchemaDialectError("enum must be a non-empty list", path)
    for value in values:
        if not _matches(value, json_type):
            raise SchemaDialectError(f"enum value {value!r} is not of the field's type", path)
    if len({repr(v) for v in values}) != len(values):
        raise SchemaDialectError("enum values must be unique", path)
    return list(values)


def _compile_bounds(spec: Mapping[str, Any], json_type: str, out: dict[str, Any], path: str) -> None:
    present = [b for b in ("min", "max") if b in spec]
    if not present:
        return
    if json_type not in _BOUNDS:
        raise SchemaDialectError(f"min/max are not allowed on type {spec['type']}", f"{path}.{present[0]}")
    integral = json_type != "number"
    for bound, key in zip(("min", "max"), _BOUNDS[json_type], strict=True):
        if bound not in spec:
            continue
        value = spec[bound]
        ok = isinstance(value, int) if integral else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or (integral and json_type != "integer" and value < 0):
            kind = "a non-negative integer" if integral and json_type != "integer" else "a number"
            raise SchemaDialectError(f"{bound} must be {kind}, got {value!r}", f"{path}.{bound}")
        out[key] = value
    if "min" in spec and "max" in spec and spec["min"] > spec["max"]:
        raise SchemaDialectError(f"min ({spec['min']}) is greater than max ({spec['max']})", f"{path}.min")


def _matches(value: Any, json_type: str) -> bool:
    if isinstance(value, bool):
        return json_type == "boolean"
    return {
        "string": isinstance(value, str),
        "number": isinstance(value, (int, float)),
        "integer": isinstance(value, int),
        "boolean": False,
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }[json_type]
