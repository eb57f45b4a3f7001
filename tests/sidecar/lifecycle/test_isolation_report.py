"""Each model's isolation, read from what its stub reported on Triton's metrics port."""

from __future__ import annotations

import logging

from sidecar.control.isolation import Isolation, read_isolation
from sidecar.control.states import ModelState
from sidecar.main import build_core
from sidecar.settings import load_settings

DETAIL = "Landlock ABI 7: files; TCP connect to ports none; no TCP bind"


def line(model_id: str, level: str, detail: str) -> str:
    labels = f'detail="{detail}",level="{level}",model_id="{model_id}",triton_name="{model_id}__1.0.0"'
    return f'ruth_model_isolation{{{labels},version="1.0.0"}}'


TEXT = f"""\
# HELP nv_inference_count Number of inferences performed
# TYPE nv_inference_count counter
nv_inference_count{{model="a__1.0.0",version="1"}} 12
# HELP ruth_model_isolation How the model's stub is confined
# TYPE ruth_model_isolation gauge
{line("a", "kernel", DETAIL)} 7
{line("b", "guard", "RUTH_ISOLATION=guard")} 0
"""


def test_read_isolation_gives_each_triton_name_its_level_abi_and_detail():
    assert read_isolation(TEXT) == {
        "a__1.0.0": Isolation("kernel", 7, DETAIL),
        "b__1.0.0": Isolation("guard", 0, "RUTH_ISOLATION=guard"),
    }
    assert read_isolation("this is { not prometheus text") == {}


async def test_the_serving_copy_gets_its_isolation_and_a_guard_only_one_is_warned_about(
    tmp_path, fake_triton, caplog
):
    settings = load_settings(
        grpc_port=0, http_port=None, model_repository=tmp_path, calibrate=False, watch_models=False,
        triton_metrics_url="",
    )  # fmt: skip
    runtime = build_core(settings, fake_triton)
    try:
        runtime.isolation.note(TEXT)  # Triton's metrics read at start, before any version is known
        records = {}
        for model_id in ("a", "b", "c"):
            record = runtime.manager.registry.add(model_id, "1.0.0")
            record.state, record.active_name = ModelState.READY, f"{model_id}__1.0.0"
            records[model_id] = record
        assert runtime.isolation.unknown() == 3  # what was read before they served counts for none
        with caplog.at_level(logging.WARNING, logger="sidecar.core"):
            runtime.isolation.note(TEXT)
        assert records["a"].isolation == Isolation("kernel", 7, DETAIL)
        assert records["b"].isolation == Isolation("guard", 0, "RUTH_ISOLATION=guard")
        assert records["c"].isolation is None and runtime.isolation.unknown() == 1  # not reported yet
        (warning,) = [r.getMessage() for r in caplog.records]
        assert warning == "b:1.0.0 runs without the kernel's confinement (guard only): RUTH_ISOLATION=guard"
        assert records["a"].to_dict()["isolation"] == {"level": "kernel", "landlock_abi": 7, "detail": DETAIL}
    finally:
        await runtime.stop()
