"""The registry: manifest records, Triton index states, counters and health."""

from __future__ import annotations

import pytest

from sidecar.errors import ManifestError
from sidecar.registry import (
    Health,
    IndexEntry,
    ModelState,
    Registry,
    read_manifest,
    record_from_manifest,
    state_from_index,
)
from tests.sidecar.conftest import manifest_entry, write_manifest


def test_record_from_manifest_precomputes_request_facts():
    record = record_from_manifest(manifest_entry("cam", type="temporal", format="raw_bgr", max_width=640))
    assert (record.triton_name, record.format, record.raw, record.batched, record.sequence) == (
        "cam__1.0.0",
        "raw_bgr",
        True,
        True,
        True,
    )
    assert (record.min_width, record.max_width, record.max_height) == (8, 640, None)
    assert record.state is ModelState.UNLOADED


def test_read_manifest_raises_manifest_error_when_missing_or_broken(tmp_path):
    with pytest.raises(ManifestError, match="ruthgen build"):
        read_manifest(tmp_path / "ruth-manifest.json")
    (tmp_path / "ruth-manifest.json").write_text("{")
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(tmp_path / "ruth-manifest.json")


@pytest.mark.parametrize(
    ("entry", "state"),
    [
        (None, ModelState.UNLOADED),
        (IndexEntry("m", "", "", ""), ModelState.UNLOADED),
        (IndexEntry("m", "1", "READY", ""), ModelState.READY),
        (IndexEntry("m", "1", "LOADING", ""), ModelState.LOADING),
        (IndexEntry("m", "1", "UNLOADING", ""), ModelState.UNLOADING),
        (IndexEntry("m", "1", "UNAVAILABLE", "unloaded"), ModelState.UNLOADED),
        (IndexEntry("m", "1", "UNAVAILABLE", "Internal: boom"), ModelState.FAILED),
    ],
)
def test_state_from_index_maps_triton_states_to_lifecycle(entry, state):
    assert state_from_index(entry)[0] is state


def test_registry_keeps_state_and_counters_of_unchanged_models_when_manifest_is_replaced(tmp_path):
    registry = Registry()
    path = write_manifest(tmp_path, [manifest_entry("a"), manifest_entry("b")])
    new, changed = registry.replace(read_manifest(path))
    assert len(new) == 2 and changed == []
    registry.apply_index([IndexEntry("a__1.0.0", "1", "READY", ""), IndexEntry("b__1.0.0", "1", "READY", "")])
    registry.get("a", "1.0.0").stats.record(True, False, 3.0)
    edited = manifest_entry("b")
    edited["source_digest"] = "sha256:other"
    new, changed = registry.replace(read_manifest(write_manifest(tmp_path, [manifest_entry("a"), edited])))
    assert new == [] and [r.model_id for r in changed] == ["b"]
    assert registry.get("a", "1.0.0").state is ModelState.READY
    assert registry.get("a", "1.0.0").stats.requests == 1


def test_apply_index_keeps_error_until_the_model_is_reloaded():
    registry = Registry()
    registry.replace([record_from_manifest(manifest_entry("a"))])
    record = registry.get("a", "1.0.0")
    record.set_state(ModelState.ERROR, "process died")
    registry.apply_index([IndexEntry("a__1.0.0", "1", "READY", "")])
    assert record.state is ModelState.ERROR


def test_health_follows_error_rate_timeouts_and_state():
    record = record_from_manifest(manifest_entry("a"))
    record.state = ModelState.READY
    for _ in range(99):
        record.stats.record(True, False, 1.0)
    assert record.health is Health.HEALTHY
    record.stats.record(False, False, 1.0)
    assert record.health is Health.DEGRADED  # 1%
    for _ in range(3):
        record.stats.record(False, True, 1.0)
    assert record.health is Health.UNHEALTHY  # 3 timeouts in a row
    for _ in range(100):
        record.stats.record(True, False, 1.0)
    assert record.health is Health.HEALTHY  # failures left the window
    record.state = ModelState.LOADING
    assert record.health is Health.DEGRADED
    record.state = ModelState.FAILED
    assert record.health is Health.UNHEALTHY
