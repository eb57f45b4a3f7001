from __future__ import annotations

import os
import tempfile

import pytest
from plugin_harness import ISLANDS_DIR, load


@pytest.fixture(scope="package", autouse=True)
def matplotlib_config_outside_the_sources():
    """matplotlib (imported by mediapipe) writes a config folder: keep it out of the plugin sources,
    for this folder's tests only (a tritonserver another test starts must not inherit it)."""
    with pytest.MonkeyPatch.context() as patch:
        if "MPLCONFIGDIR" not in os.environ:
            patch.setenv("MPLCONFIGDIR", tempfile.mkdtemp(prefix="ruth-plugin-tests-mpl-"))
        yield


@pytest.fixture(scope="session")
def load_plugin():
    """A plugin of ai/models, loaded once per session (with its upstreams)."""
    return load


@pytest.fixture(scope="session")
def load_island():
    """The same plugin as it was with its own person detector (benchmarks/fixtures/islands)."""
    return lambda model_id, version: load(model_id, version, ISLANDS_DIR)
