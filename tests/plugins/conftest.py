from __future__ import annotations

import os
import tempfile

import pytest
from plugin_harness import LoadedPlugin

# matplotlib (imported by mediapipe) writes a config folder; keep it out of the plugin sources
os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="ruth-plugin-tests-mpl-"))


@pytest.fixture(scope="session")
def load_plugin():
    loaded: dict[tuple[str, str], LoadedPlugin] = {}

    def _load(model_id: str, version: str) -> LoadedPlugin:
        key = (model_id, version)
        if key not in loaded:
            loaded[key] = LoadedPlugin(model_id, version)
        return loaded[key]

    return _load
