from __future__ import annotations

import pytest

from sidecar.control.states import TRANSITIONS, IllegalTransition, ModelRecord, ModelRegistry, ModelState

S = ModelState
APPENDIX_A = [
    (S.DISCOVERED, S.VALIDATING),
    (S.VALIDATING, S.INVALID),
    (S.VALIDATING, S.LOADING),
    (S.LOADING, S.READY),
    (S.LOADING, S.FAILED),
    (S.READY, S.ERROR),
    (S.READY, S.UNLOADING),
    (S.FAILED, S.UNLOADING),
    (S.ERROR, S.UNLOADING),
    (S.UNLOADING, S.UNLOADED),
    (S.UNLOADED, S.DISCOVERED),
]
ADDED = [(S.INVALID, S.DISCOVERED), (S.INVALID, S.UNLOADED), (S.ERROR, S.LOADING), (S.LOADING, S.ERROR)]


def _record_in(state: ModelState):
    registry = ModelRegistry()
    record = registry.add("m", "1.0.0")
    record.state = state
    return record


@pytest.mark.parametrize(("source", "target"), APPENDIX_A + ADDED)
def test_transition_succeeds_when_allowed(source, target):
    record = _record_in(source)
    step = record.transition(target, "because")
    assert record.state is target and record.reason == "because"
    assert step.source is source and record.history[-1] == step and record.since == step.at


def test_transition_table_is_appendix_a_plus_documented_additions():
    table = {(s, t) for s, targets in TRANSITIONS.items() for t in targets}
    assert table == set(APPENDIX_A) | set(ADDED)


@pytest.mark.parametrize(
    ("source", "target"),
    [(s, t) for s in ModelState for t in ModelState if (s, t) not in set(APPENDIX_A + ADDED)],
)
def test_transition_raises_when_not_allowed(source, target):
    record = _record_in(source)
    with pytest.raises(IllegalTransition, match=f"{source.value} -> {target.value}"):
        record.transition(target, "nope")
    assert record.state is source


def test_history_is_bounded_when_many_transitions_happen():
    registry = ModelRegistry(history=5)
    record = registry.add("m", "1.0.0")
    for _ in range(10):
        record.transition(S.VALIDATING, "v")
        record.transition(S.INVALID, "bad")
        record.transition(S.DISCOVERED, "changed")
    assert len(record.history) == 5
    assert record.history[-1].target is S.DISCOVERED


def test_error_states_set_last_error_when_entered():
    record = _record_in(S.LOADING)
    record.transition(S.FAILED, "Internal: no module named cv2")
    assert record.last_error == "Internal: no module named cv2" and record.last_error_at is not None


def test_registry_notifies_listeners_when_a_record_changes():
    registry = ModelRegistry()
    seen = []
    registry.add_listener(lambda record, step: seen.append((record.key, step.target)))
    record = registry.add("a", "1.0.0")
    record.transition(S.VALIDATING, "v")
    assert seen == [(("a", "1.0.0"), S.DISCOVERED), (("a", "1.0.0"), S.VALIDATING)]
    with pytest.raises(ValueError):
        registry.add("a", "1.0.0")


def test_to_dict_reports_state_history_and_rejected_change():
    record = _record_in(S.DISCOVERED)
    record.transition(S.VALIDATING, "checking")
    data = record.to_dict()
    assert data["state"] == "VALIDATING" and data["history"][-1]["from"] == "DISCOVERED"
    assert data["history"][-1]["at"].endswith("Z") and data["rejected_change"] is None


def test_transition_gives_a_reason_when_the_caller_gave_none():
    record = ModelRecord("m", "1.0.0")
    record.transition(ModelState.VALIDATING, "checking")
    record.transition(ModelState.INVALID, "  ")
    assert "no reason was given" in record.reason and record.last_error == record.reason


def test_manifest_entry_reason_is_never_empty_when_invalid():
    from ruthgen.manifest import ManifestEntry

    entry = ManifestEntry(model_id="m", version="1.0.0", state="INVALID")
    assert entry.reason.startswith("validation_incomplete")
