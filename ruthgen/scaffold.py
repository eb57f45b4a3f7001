"""``ruthgen new``: a new plugin from ``templates/scaffold/`` that validates, builds and serves as is.

The scaffold is a complete, if trivial, plugin (the mean brightness of the frame) using all three
phases of the plugin API. Files ending in ``.j2`` are rendered with the plugin's identity; the
others are copied. The plugin folder appears atomically (written aside, then renamed).

Library API: ``scaffold_plugin(models_dir, model_id, version="1.0.0", ...) -> Path``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from ruthgen import render
from ruthgen.contract import INPUT_FORMATS, INPUT_TYPES
from ruthgen.errors import RuthgenError, UsageError
from ruthgen.naming import MODEL_ID_RE, is_model_id, is_semver

SCAFFOLD_DIR = "scaffold"


def scaffold_plugin(
    models_dir: str | os.PathLike[str],
    model_id: str,
    version: str = "1.0.0",
    input_type: str = "frame",
    input_format: str = "jpeg",
    display_name: str | None = None,
) -> Path:
    """Create ``<models_dir>/<model_id>/<version>/`` from the scaffold and return it."""
    if not is_model_id(model_id):
        raise UsageError(f"model_id {model_id!r} must match {MODEL_ID_RE.pattern} (at most 64 characters)")
    if not is_semver(version):
        raise UsageError(f"version {version!r} is not a semantic version MAJOR.MINOR.PATCH[-prerelease]")
    if input_type not in INPUT_TYPES:
        raise UsageError(f"input type {input_type!r} is not one of {', '.join(INPUT_TYPES)}")
    if input_format not in INPUT_FORMATS:
        raise UsageError(f"input format {input_format!r} is not one of {', '.join(INPUT_FORMATS)}")
    dest = Path(models_dir) / model_id / version
    if os.path.lexists(dest):
        raise RuthgenError(f"{dest} already exists")
    context = {
        "model_id": model_id,
        "version": version,
        "display_name": (display_name or model_id.replace("_", " ").title()).replace('"', "'"),
        "input_type": input_type,
        "input_format": input_format,
        "batch_size": 4 if input_type == "batch" else 1,
        "input_types": " | ".join(INPUT_TYPES),
        "input_formats": " | ".join(INPUT_FORMATS),
    }
    source = render.templates_dir() / SCAFFOLD_DIR
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{version}.new-{uuid.uuid4().hex[:8]}"
    try:
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source)
            if path.is_dir() or "__pycache__" in rel.parts:
                continue
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".j2":
                text = render.render_template(f"{SCAFFOLD_DIR}/{rel.as_posix()}", context)
                target.with_suffix("").write_text(text, "utf-8")
            else:
                shutil.copyfile(path, target)
        os.rename(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
