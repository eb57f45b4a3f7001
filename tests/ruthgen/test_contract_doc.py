"""docs/plugin-contract.md stays true: its example validates and it names every check."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from validation_cases import BROKEN_CASES

from ruthgen.contract import ModelContract, parse_contract

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugin-contract.md"


def test_contract_doc_example_validates_without_warnings() -> None:
    text = DOC.read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
    parsed = parse_contract(yaml.safe_load(block))
    assert parsed.errors == [] and parsed.warnings == []
    assert parsed.contract.input.type == "temporal"


def test_contract_doc_lists_every_field_and_check() -> None:
    text = DOC.read_text()
    for check, _ in BROKEN_CASES.values():
        assert f"`{check}`" in text, check
    for name, section in ModelContract.model_fields.items():
        key = section.alias or name
        assert f"`{key}" in text, key
