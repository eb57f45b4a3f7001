from __future__ import annotations

import fastjsonschema
import pytest

from ruthgen.schema_dialect import SchemaDialectError, compile_output_schema

FALL_SCHEMA = {
    "event_type": {"type": "string", "enum": ["fall_detected", "no_fall", "person_detected"]},
    "confidence": {"type": "float", "min": 0.0, "max": 1.0},
    "bounding_boxes": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "x": {"type": "integer"},
                "y": {"type": "integer"},
                "label": {"type": "string"},
                "confidence": {"type": "float"},
            },
        },
    },
    "note": {"type": "string", "optional": True, "nullable": True, "max": 20},
}


@pytest.fixture(scope="module")
def validate():
    return fastjsonschema.compile(compile_output_schema(FALL_SCHEMA))


def test_compiled_schema_accepts_output_when_it_matches(validate) -> None:
    validate(
        {
            "event_type": "no_fall",
            "confidence": 1,
            "bounding_boxes": [{"x": 1, "y": 2, "label": "person", "confidence": 0.3}],
        }
    )
    validate({"event_type": "fall_detected", "confidence": 0.5, "bounding_boxes": [], "note": None})


@pytest.mark.parametrize(
    "output",
    [
        {"event_type": "jump", "confidence": 0.5, "bounding_boxes": []},
        {"event_type": "no_fall", "confidence": 1.5, "bounding_boxes": []},
        {"event_type": "no_fall", "confidence": "high", "bounding_boxes": []},
        {"event_type": "no_fall", "bounding_boxes": []},
        {
            "event_type": "no_fall",
            "confidence": 0.5,
            "bounding_boxes": [{"x": 1.5, "y": 2, "label": "p", "confidence": 0}],
        },
        {"event_type": "no_fall", "confidence": 0.5, "bounding_boxes": [{"x": 1, "y": 2, "label": "p"}]},
        {"event_type": "no_fall", "confidence": 0.5, "bounding_boxes": [], "extra": 1},
        {"event_type": "no_fall", "confidence": 0.5, "bounding_boxes": [], "note": "x" * 21},
    ],
)
def test_compiled_schema_rejects_output_when_it_breaks_the_contract(validate, output: dict) -> None:
    with pytest.raises(fastjsonschema.JsonSchemaException):
        validate(output)


def test_compile_maps_bounds_per_type_when_min_max_are_given() -> None:
    compiled = compile_output_schema(
        {
            "n": {"type": "integer", "min": 0, "max": 9},
            "s": {"type": "string", "min": 1},
            "a": {"type": "array", "max": 3},
            "o": {"type": "object"},
            "b": {"type": "boolean"},
        }
    )
    props = compiled["properties"]
    assert props["n"] == {"type": "integer", "minimum": 0, "maximum": 9}
    assert props["s"] == {"type": "string", "minLength": 1}
    assert props["a"] == {"type": "array", "maxItems": 3}
    assert props["o"] == {"type": "object"}
    assert compiled["required"] == ["a", "b", "n", "o", "s"]
    assert compiled["additionalProperties"] is False


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ({}, "output.schema"),
        ([], "output.schema"),
        ({"x": "float"}, "output.schema.x"),
        ({"x": {"type": "double"}}, "output.schema.x.type"),
        ({"x": {"kind": "float"}}, "output.schema.x.kind"),
        ({"x": {"type": "float", "min": "low"}}, "output.schema.x.min"),
        ({"x": {"type": "float", "min": 2, "max": 1}}, "output.schema.x.min"),
        ({"x": {"type": "boolean", "max": 1}}, "output.schema.x.max"),
        ({"x": {"type": "string", "min": -1}}, "output.schema.x.min"),
        ({"x": {"type": "string", "enum": []}}, "output.schema.x.enum"),
        ({"x": {"type": "string", "enum": ["a", 1]}}, "output.schema.x.enum"),
        ({"x": {"type": "string", "enum": ["a", "a"]}}, "output.schema.x.enum"),
        ({"x": {"type": "string", "items": {"type": "string"}}}, "output.schema.x.items"),
        (
            {"x": {"type": "array", "items": {"type": "object", "properties": {"y": {"type": "nope"}}}}},
            "output.schema.x.items.properties.y.type",
        ),
        ({"x": {"type": "object", "properties": ["y"]}}, "output.schema.x.properties"),
        ({"x": {"type": "float", "optional": "yes"}}, "output.schema.x.optional"),
    ],
)
def test_compile_raises_with_field_path_when_dialect_is_wrong(schema, path: str) -> None:
    with pytest.raises(SchemaDialectError) as info:
        compile_output_schema(schema)
    assert info.value.path == path
    assert info.value.message
