from __future__ import annotations

import pytest

from ruthgen.naming import is_model_id, is_semver, parse_triton_name, semver_key, triton_name

SHELL_UNSAFE = set(";|&$`<>()[]{}\\\"'*?~#! \t\n")


@pytest.mark.parametrize(
    ("model_id", "version", "name"),
    [
        ("fall_detection", "1.0.0", "fall_detection__1.0.0"),
        ("a", "0.0.1", "a__0.0.1"),
        ("x9_y", "10.20.30-rc.1", "x9_y__10.20.30-rc.1"),
        ("double__under", "1.0.0-alpha-2", "double__under__1.0.0-alpha-2"),
    ],
)
def test_triton_name_round_trips_when_parts_are_valid(model_id: str, version: str, name: str) -> None:
    assert triton_name(model_id, version) == name
    assert parse_triton_name(name) == (model_id, version)
    assert not SHELL_UNSAFE & set(name)


@pytest.mark.parametrize("model_id", ["", "Fall", "9lives", "a-b", "a.b", "../x", "a b", "é", "a" * 65])
def test_triton_name_raises_when_model_id_is_invalid(model_id: str) -> None:
    assert not is_model_id(model_id)
    with pytest.raises(ValueError):
        triton_name(model_id, "1.0.0")


@pytest.mark.parametrize(
    "version", ["1.0", "v1.0.0", "01.0.0", "1.0.0+build.1", "1.0.0-RC1", "1.0.0-", "1.0.0-a_b"]
)
def test_triton_name_raises_when_version_is_not_semver(version: str) -> None:
    assert not is_semver(version)
    with pytest.raises(ValueError):
        triton_name("demo", version)


@pytest.mark.parametrize("name", ["demo", "demo__", "__1.0.0", "Demo__1.0.0", "demo__1.0"])
def test_parse_triton_name_raises_when_name_is_not_generated(name: str) -> None:
    with pytest.raises(ValueError):
        parse_triton_name(name)


def test_semver_key_orders_by_precedence_when_prereleases_are_present() -> None:
    versions = [
        "1.0.0",
        "1.0.0-rc.1",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "0.9.9",
        "1.10.0",
        "1.2.0",
    ]
    assert sorted(versions, key=semver_key) == [
        "0.9.9",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.2.0",
        "1.10.0",
    ]
