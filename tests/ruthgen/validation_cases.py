"""One broken fixture plugin per validation check: folder name -> (expected check, expected path).

The fixtures live in tests/testdata/plugins/broken/<folder>/1.0.0/.
"""

BROKEN_CASES: dict[str, tuple[str, str]] = {
    "model_yaml_missing": ("model_yaml_missing", "model.yaml"),
    "model_yaml_unreadable": ("model_yaml_unreadable", "model.yaml"),
    "model_yaml_invalid": ("model_yaml_invalid", "model.yaml"),
    "model_yaml_not_mapping": ("model_yaml_invalid", ""),
    "model_yaml_empty": ("model_yaml_empty", "model.yaml"),
    "required_field_missing": ("required_field_missing", "output"),
    "version_mismatch": ("version_mismatch", "version"),
    "model_id_mismatch": ("model_id_mismatch", "model_id"),
    "Bad-Name": ("invalid_model_id", ""),
    "invalid_version": ("invalid_version", "version"),
    "unknown_input_type": ("unknown_input_type", "input.type"),
    "unknown_input_format": ("unknown_input_format", "input.format"),
    "output_schema_invalid": ("output_schema_invalid", "output.schema.boxes.items.type"),
    "entry_point_missing": ("entry_point_missing", "entry_points.inference"),
    "declared_entry_point_missing": ("entry_point_missing", "entry_points.preprocess"),
    "invalid_entry_point": ("invalid_entry_point", "entry_points.inference"),
    "hardware_incompatible": ("hardware_incompatible", "hardware"),
    "bad_timeouts": ("bad_timeouts", "timeouts.inference_ms"),
    "config_invalid": ("config_invalid", "config.yaml"),
    "requirements_missing": ("requirements_missing", "dependencies.requirements"),
    "unsupported_schema_version": ("unsupported_schema_version", "schema_version"),
    "invalid_field": ("invalid_field", "input.min_width"),
}
