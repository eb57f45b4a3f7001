"""Jinja2 rendering of ``templates/``: pure functions that return strings (no file writes, no YAML).

Templates are found in the installed package (``ruthgen/_templates``, force-included into the wheel)
or, in a source checkout, in ``<repo>/templates``. Compiled templates are cached per process.

Library API: :func:`templates_dir`, :func:`render_config`, :func:`render_model_py`,
:func:`has_template`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2

import ruthgen
from ruthgen.spec import ModelSpec

CONFIG_TEMPLATE = "config.pbtxt.j2"
MODEL_PY_TEMPLATE = "model.py.j2"


@functools.lru_cache(maxsize=1)
def templates_dir() -> Path:
    """The folder holding ``config.pbtxt.j2``, ``model.py.j2`` and ``scaffold/``."""
    packaged = Path(ruthgen.__file__).parent / "_templates"
    if packaged.is_dir():
        return packaged
    return Path(ruthgen.__file__).resolve().parent.parent / "templates"


def _pbstr(value: Any) -> str:
    """A protobuf text-format string literal."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


@functools.lru_cache(maxsize=4)
def _environment(folder: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        auto_reload=False,
    )
    env.filters["pbstr"] = _pbstr
    return env


def environment() -> jinja2.Environment:
    """The shared Jinja2 environment over :func:`templates_dir`."""
    return _environment(str(templates_dir()))


def has_template(name: str) -> bool:
    """True when ``templates/<name>`` exists."""
    return (templates_dir() / name).is_file()


def render_config(spec: ModelSpec, source: str = "model.yaml") -> str:
    """``config.pbtxt`` text of one entry; ``source`` names the plugin in the header comment."""
    return environment().get_template(CONFIG_TEMPLATE).render(spec=spec, source=source)


def render_model_py(context: dict[str, Any]) -> str:
    """``1/model.py`` text of one entry from ``templates/model.py.j2``.

    ``context`` holds ``entry`` (the entry's manifest record), ``model_id``, ``version`` and
    ``triton_name``.
    """
    return environment().get_template(MODEL_PY_TEMPLATE).render(**context)


def render_template(name: str, context: dict[str, Any]) -> str:
    """Any template under ``templates/`` (e.g. ``scaffold/model.yaml.j2``) with ``context``."""
    return environment().get_template(name).render(**context)
