from __future__ import annotations

import pytest
from plugin_harness import LoadedPlugin


@pytest.fixture(scope="session")
def load_plugin():
    loaded: dict[tuple[str, str], LoadedPlugin] = {}

    def _load(model_id: str, version: str) -> LoadedPlugin:
        key = (model_id, version)
        if key not in loaded:
            loaded[key] = LoadedPlugin(model_id, version)
        return loaded[key]

    return _load
