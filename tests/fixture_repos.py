"""Generated repositories of the plugin fixtures in ``tests/testdata/plugins``, for the integration tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest

from ruthgen.writer import build_repository

PLUGINS = Path(__file__).resolve().parent / "testdata" / "plugins"


def fixture_repository(tmp_path_factory: pytest.TempPathFactory, names: Iterable[str]) -> Path:
    """``ruthgen build`` of the fixture plugins ``names`` (folder names under testdata/plugins)."""
    models = tmp_path_factory.mktemp("models")
    for name in names:
        shutil.copytree(PLUGINS / name, models / name)
    repo = tmp_path_factory.mktemp("repo") / "model_repository"
    build_repository(models, repo)
    return repo
