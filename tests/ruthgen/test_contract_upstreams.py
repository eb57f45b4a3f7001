"""Declared upstreams in model.yaml: each entry's shape, and the checks over every plugin at once."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from ruthgen.contract import MAX_UPSTREAM_DEPTH, parse_contract
from ruthgen.discovery import scan


def _checks(report) -> list[str]:
    return [issue.check for issue in report.errors]


def _by_id(models_dir: Path) -> dict[str, object]:
    return {r.model_id: r for r in scan(models_dir).reports}


def test_a_contract_without_upstreams_has_none():
    parsed = parse_contract({
        "model_id": "demo", "version": "1.0.0", "display_name": "d",
        "input": {"type": "frame", "format": "jpeg"}, "output": {"schema": {"ok": {"type": "boolean"}}},
    })
    assert parsed.errors == [] and parsed.contract.upstreams == ()


@pytest.mark.parametrize(
    ("upstreams", "fragment"),
    [
        ([{"model_id": "person_detection"}], "upstreams.0.version"),
        ([{"model_id": "person_detection", "version": "1.0"}], "semantic version"),
        ([{"model_id": "Person", "version": "1.0.0"}], "upstreams.0.model_id"),
        ([{"model_id": "a", "version": "1.0.0", "extra": 1}], "upstreams.0.extra"),
        (["person_detection"], "upstreams.0"),
        ([{"model_id": "a", "version": "1.0.0"}, {"model_id": "a", "version": "2.0.0"}], "listed twice"),
        ([{"model_id": "demo", "version": "1.0.0"}], "this model itself"),
    ],
)
def test_a_malformed_upstream_entry_is_invalid_upstreams_with_its_reason(make_plugin, models_dir, upstreams,
                                                                          fragment):
    make_plugin("demo", upstreams=upstreams)
    (report,) = scan(models_dir).reports
    assert _checks(report) == ["invalid_upstreams"], report.errors
    assert any(fragment in f"{i.path} {i.message}" for i in report.errors), report.errors


def test_an_upstream_not_there_is_a_warning_and_the_dependent_stays_valid(make_plugin, models_dir):
    make_plugin("helmet", upstreams=[{"model_id": "person", "version": "1.0.0"}])
    (report,) = scan(models_dir).reports
    assert report.valid
    (warning,) = [w for w in report.warnings if w.check == "upstream_missing"]
    assert "person 1.0.0" in warning.message and warning.path == "upstreams.0"


def test_a_cycle_makes_each_of_its_models_invalid_and_names_the_cycle(make_plugin, models_dir):
    make_plugin("a", upstreams=[{"model_id": "b", "version": "1.0.0"}])
    make_plugin("b", upstreams=[{"model_id": "c", "version": "1.0.0"}])
    make_plugin("c", upstreams=[{"model_id": "a", "version": "1.0.0"}])
    make_plugin("d", upstreams=[{"model_id": "a", "version": "1.0.0"}])  # hangs off the cycle, not in it
    reports = _by_id(models_dir)
    for model_id in ("a", "b", "c"):
        assert _checks(reports[model_id]) == ["upstream_cycle"], reports[model_id].errors
    cycle = "upstreams form a cycle: a 1.0.0 -> b 1.0.0 -> c 1.0.0 -> a 1.0.0"
    assert reports["a"].errors[0].message == cycle
    assert reports["d"].valid


def test_a_chain_deeper_than_the_limit_is_invalid_at_its_end(make_plugin, models_dir):
    names = [f"m{i}" for i in range(MAX_UPSTREAM_DEPTH + 2)]
    make_plugin(names[0])
    for below, above in itertools.pairwise(names):
        make_plugin(above, upstreams=[{"model_id": below, "version": "1.0.0"}])
    reports = _by_id(models_dir)
    assert all(reports[n].valid for n in names[: MAX_UPSTREAM_DEPTH + 1])
    last = reports[names[-1]]
    assert _checks(last) == ["upstream_chain_too_long"]
    assert f"a chain of {MAX_UPSTREAM_DEPTH + 1} upstreams" in last.errors[0].message


@pytest.mark.parametrize(
    ("upstream_input", "dependent_input", "fragment"),
    [
        ({"type": "frame", "format": "png"}, {"type": "frame", "format": "jpeg"}, "takes png frames"),
        ({"type": "temporal", "format": "jpeg"}, {"type": "frame", "format": "jpeg"}, "is temporal"),
        ({"type": "temporal", "format": "jpeg"}, {"type": "batch", "format": "jpeg"}, "is temporal"),
    ],
)
def test_an_upstream_whose_input_cannot_feed_the_dependent_is_invalid(make_plugin, models_dir, upstream_input,
                                                                      dependent_input, fragment):
    make_plugin("up", input=upstream_input)
    make_plugin("down", input=dependent_input, upstreams=[{"model_id": "up", "version": "1.0.0"}])
    reports = _by_id(models_dir)
    assert reports["up"].valid
    assert _checks(reports["down"]) == ["upstream_incompatible"]
    assert fragment in reports["down"].errors[0].message


@pytest.mark.parametrize(
    ("upstream_type", "dependent_type"),
    [("frame", "frame"), ("frame", "batch"), ("frame", "temporal"), ("batch", "frame"),
     ("temporal", "temporal")],
)
def test_an_upstream_of_a_compatible_input_type_feeds_the_dependent(make_plugin, models_dir, upstream_type,
                                                                    dependent_type):
    make_plugin("up", input={"type": upstream_type, "format": "jpeg"})
    make_plugin("down", input={"type": dependent_type, "format": "jpeg"},
                upstreams=[{"model_id": "up", "version": "1.0.0"}])
    reports = _by_id(models_dir)
    assert reports["down"].valid, reports["down"].errors
    assert reports["down"].contract.upstreams[0].key == ("up", "1.0.0")
