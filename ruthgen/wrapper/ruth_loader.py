"""Imports a plugin's entry modules from its folder, under names no other code uses.

The entry modules become submodules of a synthetic package ``ruth_plugin_<model>_<version>``
whose ``__path__`` is the plugin folder, so relative imports (``from . import helpers``) work and
the plugin's ``inference`` never shadows or is shadowed by another module called ``inference``.
The plugin folder is on ``sys.path`` only while the plugin is imported and ``load()`` runs, so
plain sibling imports (``import helpers``) work at import time too; :func:`unload` drops every
module that was loaded from the plugin folder.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import re
import sys
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def package_name(model_id: str, version: str) -> str:
    return "ruth_plugin_" + re.sub(r"[^A-Za-z0-9_]", "_", f"{model_id}_{version}")


class PluginModules:
    """The plugin's ``load``/``infer`` and optional ``preprocess``/``postprocess`` callables."""

    def __init__(self, package: str, plugin_dir: Path) -> None:
        self.package = package
        self.plugin_dir = plugin_dir
        self.load: Any = None
        self.infer: Any = None
        self.preprocess: Any = None
        self.postprocess: Any = None


@contextmanager
def plugin_on_path(plugin_dir: Path) -> Iterator[None]:
    entry = str(plugin_dir)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # the plugin removed it itself
            sys.path.remove(entry)


def import_plugin(plugin_dir: Path, package: str, entry_points: Mapping[str, Any]) -> PluginModules:
    """Import the entry modules; raise with a message naming the file when one is unusable."""
    pkg = types.ModuleType(package)
    pkg.__path__ = [str(plugin_dir)]
    pkg.__package__ = package
    sys.modules[package] = pkg
    modules = PluginModules(package, plugin_dir)
    inference = _import_file(plugin_dir, package, str(entry_points.get("inference") or "inference.py"), True)
    modules.load = _callable(inference, "load")
    modules.infer = _callable(inference, "infer")
    for role, default in (("preprocess", "preprocessing.py"), ("postprocess", "postprocessing.py")):
        relative = entry_points.get(role, default)
        module = _import_file(plugin_dir, package, relative, False) if relative else None
        if module is not None:
            setattr(modules, role, _callable(module, role))
    return modules


def _import_file(plugin_dir: Path, package: str, relative: str, required: bool) -> types.ModuleType | None:
    path = plugin_dir / relative
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"{relative} is missing from the plugin folder")
        return None
    parts = Path(relative).with_suffix("").parts
    if all(_IDENTIFIER.match(p) for p in parts):
        return importlib.import_module(".".join((package, *parts)))
    name = f"{package}._{re.sub(r'[^A-Za-z0-9_]', '_', '_'.join(parts))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {relative}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _callable(module: types.ModuleType, name: str) -> Any:
    func = getattr(module, name, None)
    if not callable(func):
        file = Path(module.__file__ or "?").name
        raise AttributeError(f"{file} must define a function {name}()")
    return func


def unload(plugin_dir: Path, package: str) -> None:
    """Forget every module imported from the plugin folder (or under the plugin's package)."""
    roots = {str(plugin_dir), str(plugin_dir.resolve())}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or ""
        if name == package or name.startswith(package + ".") or any(file.startswith(r) for r in roots):
            del sys.modules[name]


def read_config(plugin_dir: Path, entry: Mapping[str, Any]) -> Any:
    """The plugin's ``config.yaml`` (or the manifest's copy of it) as parsed YAML, ``{}`` if none."""
    if "config" in entry and entry["config"] is not None:
        return entry["config"]
    path = plugin_dir / "config.yaml"
    if not path.is_file():
        return {}
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError("config.yaml must hold a mapping")
    return data
