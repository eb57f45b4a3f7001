"""The project's own requirements as pyproject.toml declares them, its extras expanded as pip expands
them (``ruth-ai-runtime[generator]`` inside another extra brings that extra's requirements)."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own TOML parser
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NAME = canonicalize_name(PROJECT["name"])
EXTRAS = tuple(PROJECT["optional-dependencies"])
#: A local install of the project with extras, as a Dockerfile writes it: ``.[sidecar]``, ``/src[a,b]``.
LOCAL_INSTALL = re.compile(r"^(?P<path>[./][^\[\]]*)(?:\[(?P<extras>[\w,\s-]+)\])?$")


def requirements(*extras: str) -> list[Requirement]:
    """What installing the project with ``extras`` asks for, the project's own extras expanded."""
    found = [Requirement(text) for text in PROJECT["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in PROJECT["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == NAME:
                todo.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


def names(requirement_list: list[Requirement]) -> set[str]:
    return {canonicalize_name(r.name) for r in requirement_list}


def local_install(word: str) -> tuple[str, list[str]] | None:
    """``(path, extras)`` when a `pip install` argument is the project from a folder, else None."""
    match = LOCAL_INSTALL.match(word)
    if match is None:
        return None
    extras = [e.strip() for e in (match["extras"] or "").split(",") if e.strip()]
    return match["path"], extras
