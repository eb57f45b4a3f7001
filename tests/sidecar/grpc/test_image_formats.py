"""One list of image formats: the contract's (ruth_protocol), which the backend-facing enum names too."""

from __future__ import annotations

from ruthgen.contract import InputFormat, InputSpec
from ruthgen.interface import INPUT_FORMATS
from sidecar.client import FORMATS
from sidecar.grpc.converters import FORMAT_NAMES, FORMAT_VALUES


def test_the_backend_facing_enum_names_the_contracts_formats_in_order():
    assert FORMAT_NAMES[0] == "" and FORMAT_NAMES[1:] == INPUT_FORMATS


def test_the_client_and_the_transport_give_each_format_one_value():
    assert {name: FORMATS[name] for name in INPUT_FORMATS} == FORMAT_VALUES
    assert FORMATS["jpg"] == FORMAT_VALUES["jpeg"]


def test_the_contract_takes_every_format_and_only_those():
    assert InputFormat.__args__ == INPUT_FORMATS
    fields = {"type": "frame", "min_width": 1, "min_height": 1, "max_width": 2, "max_height": 2}
    for name in INPUT_FORMATS:
        assert InputSpec.model_validate({**fields, "format": name}).format == name


def test_a_format_outside_the_list_is_refused_naming_the_list():
    fields = {"type": "frame", "min_width": 1, "min_height": 1, "max_width": 2, "max_height": 2}
    try:
        InputSpec.model_validate({**fields, "format": "gif"})
    except ValueError as exc:
        assert all(name in str(exc) for name in INPUT_FORMATS), exc
    else:
        raise AssertionError("gif was taken")
