"""Fixtures of the deployment tests: the compose files, merged as Compose merges them, and the schema."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from deploy_loaders import DOCKER, SCHEMAS, load_yaml, merge_compose


@pytest.fixture(scope="session")
def compose_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="session")
def compose_gpu() -> dict[str, Any]:
    return load_yaml(DOCKER / "docker-compose.yml")


@pytest.fixture(scope="session")
def compose_cpu(compose_gpu: dict[str, Any]) -> dict[str, Any]:
    return merge_compose(compose_gpu, load_yaml(DOCKER / "docker-compose.cpu.yml"))


@pytest.fixture(scope="session")
def compose_jetson() -> dict[str, Any]:
    return load_yaml(DOCKER / "docker-compose.jetson.yml")


@pytest.fixture(scope="session", params=["gpu", "cpu", "jetson"])
def compose(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each deployment's effective compose model."""
    return request.getfixturevalue(f"compose_{request.param}")
