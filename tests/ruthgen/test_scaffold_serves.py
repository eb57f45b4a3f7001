"""``ruthgen new`` gives a plugin that validates, builds and serves as is, for every input type and
format: the generated repository is served by the real embedded tritonserver."""

from __future__ import annotations

import io
import itertools
import json

import fastjsonschema
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image

from ruthgen.contract import INPUT_FORMATS, INPUT_TYPES
from ruthgen.manifest import check_repository
from ruthgen.scaffold import scaffold_plugin
from ruthgen.writer import build_repository

pytestmark = pytest.mark.integration

COMBINATIONS = list(itertools.product(INPUT_TYPES, INPUT_FORMATS))
COLOUR = (200, 120, 40)  # RGB; channel order matters: BGR read as RGB would give 0.41
EXPECTED_BRIGHTNESS = (0.299 * 200 + 0.587 * 120 + 0.114 * 40) / 255


def _frame(input_format: str) -> np.ndarray:
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[...] = COLOUR
    if input_format == "raw_rgb":
        return rgb
    if input_format == "raw_bgr":
        return np.ascontiguousarray(rgb[:, :, ::-1])
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG" if input_format == "jpeg" else "PNG", quality=95)
    return np.frombuffer(buffer.getvalue(), np.uint8)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, module_triton_factory):
    root = tmp_path_factory.mktemp("scaffold")
    models, repo = root / "models", root / "repo"
    for input_type, input_format in COMBINATIONS:
        scaffold_plugin(
            models, f"s_{input_type}_{input_format}", input_type=input_type, input_format=input_format
        )
    result = build_repository(models, repo)
    assert all(r.valid for r in result.reports), [r.to_dict() for r in result.reports if not r.valid]
    assert check_repository(repo) == []
    triton = module_triton_factory(repo, load_models="*")
    records = {m["triton_name"]: m for m in result.manifest["models"]}
    return triton, records


@pytest.mark.parametrize(("input_type", "input_format"), COMBINATIONS)
def test_scaffolded_plugin_serves_its_result_when_built_for_cpu(
    served, input_type: str, input_format: str
) -> None:
    triton, records = served
    name = f"s_{input_type}_{input_format}__1.0.0"
    record = records[name]
    states = {m["name"]: m for m in triton.repository_index()}
    assert states[name]["state"] == "READY", states[name]["reason"]
    frame = _frame(input_format)
    batched = record["triton"]["max_batch_size"] > 0
    data = frame[None, ...] if batched else frame
    tensor = grpcclient.InferInput("FRAME", list(data.shape), "UINT8")
    tensor.set_data_from_numpy(data)
    kwargs = (
        {"sequence_id": "cam-1", "sequence_start": True, "sequence_end": True}
        if input_type == "temporal"
        else {}
    )
    response = triton.client().infer(name, [tensor], client_timeout=30, **kwargs)
    raw = response.as_numpy("RESULT").reshape(-1)[0]
    result = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    fastjsonschema.compile(record["output_json_schema"])(result)
    assert result["label"] == "normal"
    assert result["brightness"] == pytest.approx(EXPECTED_BRIGHTNESS, abs=0.02)
