"""The one mapping between ``(model_id, version)`` and the Triton model name.

``triton_name = f"{model_id}__{version}"``, e.g. ``fall_detection__1.0.0``.

* ``model_id`` matches :data:`MODEL_ID_RE` (``^[a-z][a-z0-9_]*$``);
* ``version`` is a semantic version ``MAJOR.MINOR.PATCH[-prerelease]`` with a lower-case
  prerelease and no ``+build`` part (:data:`SEMVER_RE`).

The name therefore holds only ``[a-z0-9_.-]``: Triton 2.51 launches the Python stub through an
unquoted ``bash -c``, so nothing a shell would interpret may appear in it. It is reversible with
``name.rsplit("__", 1)`` because a version never contains ``_``. Several versions of one model are
separate Triton models and coexist.
"""

from __future__ import annotations

import re

MODEL_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_ID = r"(?:0|[1-9][0-9]*|[0-9]*[a-z-][0-9a-z-]*)"
SEMVER_RE = re.compile(rf"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:-({_ID}(?:\.{_ID})*))?$")
SEPARATOR = "__"
MAX_MODEL_ID_LENGTH = 64


def is_model_id(value: str) -> bool:
    """True when ``value`` is an acceptable ``model_id`` (and plugin folder name)."""
    return bool(MODEL_ID_RE.match(value)) and len(value) <= MAX_MODEL_ID_LENGTH


def is_semver(value: str) -> bool:
    """True when ``value`` is an acceptable plugin version (and version folder name)."""
    return bool(SEMVER_RE.match(value))


def triton_name(model_id: str, version: str) -> str:
    """The Triton model name of one plugin version; raises ``ValueError`` on a bad part."""
    if not is_model_id(model_id):
        raise ValueError(f"model_id {model_id!r} does not match {MODEL_ID_RE.pattern}")
    if not is_semver(version):
        raise ValueError(f"version {version!r} is not a semantic version MAJOR.MINOR.PATCH[-pre]")
    return f"{model_id}{SEPARATOR}{version}"


def parse_triton_name(name: str) -> tuple[str, str]:
    """Inverse of :func:`triton_name`: ``"a_b__1.0.0"`` -> ``("a_b", "1.0.0")``."""
    model_id, sep, version = name.rpartition(SEPARATOR)
    if not sep or not is_model_id(model_id) or not is_semver(version):
        raise ValueError(f"{name!r} is not a generated Triton model name <model_id>__<version>")
    return model_id, version


def semver_key(version: str) -> tuple:
    """Sort key that orders versions by semver precedence (a prerelease sorts before its release)."""
    match = SEMVER_RE.match(version)
    if not match:
        raise ValueError(f"{version!r} is not a semantic version")
    major, minor, patch, pre = match.groups()
    if pre is None:
        pre_key: tuple = ((1,),)
    else:
        pre_key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
        pre_key = ((0,), *pre_key)
    return (int(major), int(minor), int(patch), pre_key)
