"""The generated wrapper on the real tritonserver: results, error codes, warmup, batching, sequences,
isolation and per-plugin environments, through ``tritonclient.grpc``.

One repository is built from the ``wrap_*`` fixture plugins (tests/testdata/plugins) with the real
writer and per-plugin environments, and served by one embedded tritonserver for the module.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from ruthgen import envs
from ruthgen.embedded.errors import TritonModelError
from ruthgen.writer import build_repository

pytestmark = pytest.mark.integration

PLUGINS = Path(__file__).resolve().parents[1] / "testdata" / "plugins"
SERVED = [
    "wrap_echo__1.0.0",
    "wrap_echo__2.0.0",
    "wrap_faulty__1.0.0",
    "wrap_batch__1.0.0",
    "wrap_temporal__1.0.0",
    "wrap_six_old__1.0.0",
    "wrap_six_new__1.0.0",
]
ECHO = "wrap_echo__1.0.0"
RUTH_RE = re.compile(r"\[RUTH:([A-Z_]+)\]\s*(.*)", re.S)


class Served:
    """The built repository, its manifest records and the running server."""

    def __init__(self, repository: Path, manifest: dict[str, Any], triton: Any, load_errors: dict[str, str]):
        self.repository = repository
        self.records = {m["model_id"] + "@" + m["version"]: m for m in manifest["models"]}
        self.by_name = {m["triton_name"]: m for m in manifest["models"] if m.get("triton_name")}
        self.triton = triton
        self.load_errors = load_errors
        self.client = grpcclient.InferenceServerClient(triton.grpc_url)

    def batched(self, name: str) -> bool:
        return self.by_name[name]["triton"]["max_batch_size"] > 0

    def inputs(self, name: str, frame: np.ndarray) -> list[grpcclient.InferInput]:
        data = frame[None, ...] if self.batched(name) else frame
        tensor = grpcclient.InferInput("FRAME", list(data.shape), "UINT8")
        tensor.set_data_from_numpy(np.ascontiguousarray(data))
        return [tensor]

    def infer(self, name: str, frame: np.ndarray, **kwargs: Any) -> dict[str, Any]:
        result = self.client.infer(name, self.inputs(name, frame), client_timeout=30, **kwargs)
        return json.loads(result.as_numpy("RESULT").reshape(-1)[0])

    def error(self, name: str, frame: np.ndarray, **kwargs: Any) -> tuple[str, str]:
        with pytest.raises(InferenceServerException) as info:
            self.infer(name, frame, **kwargs)
        match = RUTH_RE.search(info.value.message())
        assert match, info.value.message()
        return match.group(1), match.group(2)

    def states(self) -> dict[str, tuple[str, str]]:
        return {m["name"]: (m["state"], m["reason"]) for m in self.triton.repository_index() if m["version"]}


def jpeg(rgb: np.ndarray, fmt: str = "JPEG") -> np.ndarray:
    out = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(out, format=fmt, quality=95)
    return np.frombuffer(out.getvalue(), dtype=np.uint8)


def solid(width: int, height: int, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.full((height, width, 3), rgb, dtype=np.uint8)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, module_triton_factory) -> Served:
    root = tmp_path_factory.mktemp("wrapper")
    models = root / "models"
    for folder in sorted(PLUGINS.glob("wrap_*")):
        shutil.copytree(folder, models / folder.name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(envs.CACHE_ENV, str(root / "envs"))
        result = build_repository(models, root / "repository")
    triton = module_triton_factory(root / "repository", startup_timeout_s=60)
    load_errors = {}
    for name in [*SERVED, "wrap_warmup_fail__1.0.0"]:
        try:
            triton.load(name, timeout_s=120)
        except TritonModelError as exc:
            load_errors[name] = str(exc)
    return Served(root / "repository", result.manifest, triton, load_errors)


def assert_echo_serves(served: Served) -> None:
    result = served.infer(ECHO, jpeg(solid(12, 10, (30, 60, 90))))
    assert (result["version"], result["width"], result["height"]) == ("1.0.0", 12, 10)


def test_every_valid_plugin_loads_and_only_the_warmup_failure_does_not(served):
    assert set(served.load_errors) == {"wrap_warmup_fail__1.0.0"}, served.load_errors
    states = served.states()
    assert all(states[name] == ("READY", "") for name in SERVED), states


def test_plugin_result_comes_back_as_validated_json(served):
    params = {"camera_id": "gate-2", "frame_id": "f-17", "timestamp_ms": 1700000000123}
    result = served.infer(ECHO, jpeg(solid(64, 48, (200, 100, 50))), parameters=params)
    assert (result["width"], result["height"], result["version"]) == (64, 48, "1.0.0")
    assert result["mean_rgb"] == pytest.approx([200, 100, 50], abs=3)
    assert (result["camera_id"], result["frame_id"], result["timestamp_ms"]) == (
        "gate-2",
        "f-17",
        1700000000123,
    )
    assert result["writes_scratch"] is True and result["threshold"] == 0.25
    assert "[wrap_echo:1.0.0] loaded with threshold 0.25" in served.triton.log_path.read_text(
        errors="replace"
    )


def test_two_versions_of_one_model_serve_side_by_side(served):
    frame = jpeg(solid(16, 16, (10, 10, 10)))
    one, two = served.infer("wrap_echo__1.0.0", frame), served.infer("wrap_echo__2.0.0", frame)
    assert (one["version"], one["threshold"]) == ("1.0.0", 0.25)
    assert (two["version"], two["threshold"]) == ("2.0.0", 0.75)


@pytest.mark.parametrize(
    ("red", "code", "expected"),
    [
        (10, "PREPROCESS_ERROR", "preprocess: ValueError: cannot prepare this frame (preprocessing.py:"),
        (20, "INFERENCE_ERROR", "infer: RuntimeError: the network exploded (inference.py:11)"),
        (30, "POSTPROCESS_ERROR", "postprocess: KeyError: 'boxes' (postprocessing.py:3)"),
        (40, "OUTPUT_SCHEMA_VIOLATION", "validate: data.level must be smaller than or equal to 1"),
        (50, "TIMEOUT", "infer: exceeded 500 ms"),
    ],
)
def test_each_error_code_reaches_the_client_while_the_others_keep_serving(served, red, code, expected):
    got_code, message = served.error("wrap_faulty__1.0.0", solid(8, 8, (red, 0, 0)))
    assert got_code == code and message.startswith(expected)
    assert served.infer("wrap_faulty__1.0.0", solid(8, 8, (0, 0, 0))) == {"ok": True, "level": 0.5}
    assert_echo_serves(served)


def test_invalid_input_is_answered_by_the_wrapper(served):
    assert served.error("wrap_faulty__1.0.0", solid(4, 4, (0, 0, 0))) == (
        "INVALID_INPUT",
        "decode: frame is 4x4, smaller than the minimum 8x8",
    )
    png = jpeg(solid(16, 16, (0, 0, 0)), "PNG")
    code, message = served.error(ECHO, png)
    assert code == "INVALID_INPUT" and "FRAME is not jpeg data" in message
    assert_echo_serves(served)


def test_warmup_failure_leaves_the_model_unavailable_with_its_reason(served):
    reason = "[RUTH:LOAD_FAILED] warmup.infer: RuntimeError: weights are corrupt (16x16 png warmup frame)"
    assert reason in served.load_errors["wrap_warmup_fail__1.0.0"]
    state, index_reason = served.states()["wrap_warmup_fail__1.0.0"]
    assert state == "UNAVAILABLE" and reason in index_reason
    assert served.client.is_server_ready()
    assert_echo_serves(served)


def test_batch_plugin_receives_several_requests_in_one_call(served):
    name = "wrap_batch__1.0.0"
    values = [1, 2, 3, 4, 5, 6]
    frames = [solid(4, 4, (v, 0, 0)) for v in values] + [solid(2, 2, (9, 0, 0))]  # the last is too small
    results: list[Any] = [None] * len(frames)
    lock, finished = threading.Lock(), threading.Event()

    def callback(i: int):
        def on_result(result: Any, error: Any) -> None:
            results[i] = error if error is not None else json.loads(result.as_numpy("RESULT").reshape(-1)[0])
            with lock:
                if all(r is not None for r in results):
                    finished.set()

        return on_result

    for i, frame in enumerate(frames):
        served.client.async_infer(name, served.inputs(name, frame), callback(i), client_timeout=30)
    assert finished.wait(timeout=30), results
    outputs, invalid = results[:-1], results[-1]
    assert [r["value"] for r in outputs] == values
    assert max(r["batch_size"] for r in outputs) > 1
    by_call: dict[int, list[int]] = {}
    for r in outputs:
        by_call.setdefault(r["call"], []).append(r["value"])
    assert all(r["batch_size"] == len(by_call[r["call"]]) for r in outputs)
    assert isinstance(invalid, InferenceServerException)
    assert "[RUTH:INVALID_INPUT] decode: frame is 2x2" in invalid.message()


def test_temporal_plugin_sees_one_cameras_frames_in_order(served):
    name = "wrap_temporal__1.0.0"
    seen = []
    for i, value in enumerate([11, 12, 13, 14]):
        other = served.infer(name, solid(4, 4, (90 + i, 0, 0)), sequence_id=902, sequence_start=i == 0)
        result = served.infer(
            name,
            solid(4, 4, (value, 0, 0)),
            sequence_id=901,
            sequence_start=i == 0,
            sequence_end=i == 3,
            parameters={"camera_id": "lobby"},
        )
        seen.append(result)
        assert other == {"camera_id": "902", "seen": [90 + k for k in range(i + 1)]}
    assert [r["camera_id"] for r in seen] == ["lobby"] * 4
    assert [r["seen"] for r in seen] == [[11], [11, 12], [11, 12, 13], [11, 12, 13, 14]]
    restarted = served.infer(
        name, solid(4, 4, (50, 0, 0)), sequence_id=902, sequence_start=True, sequence_end=True
    )
    assert restarted == {"camera_id": "902", "seen": [50]}


def test_write_outside_the_plugin_and_scratch_folders_is_blocked(served):
    escaped = served.repository / "wrap_faulty__1.0.0" / "escaped.txt"
    code, message = served.error("wrap_faulty__1.0.0", solid(8, 8, (60, 0, 0)))
    assert code == "INFERENCE_ERROR"
    refusal = "infer: permission denied: writing outside the plugin's folders is not permitted"
    assert message == f"{refusal}: {escaped}"
    assert not escaped.exists()
    code, message = served.error("wrap_faulty__1.0.0", solid(8, 8, (70, 0, 0)))
    assert code == "INFERENCE_ERROR" and "needs permissions.network: true" in message


def test_plugins_with_conflicting_dependency_versions_both_serve(served):
    frame = jpeg(solid(8, 8, (0, 0, 0)))
    old, new = served.infer("wrap_six_old__1.0.0", frame), served.infer("wrap_six_new__1.0.0", frame)
    assert (old["six"], new["six"]) == ("1.16.0", "1.17.0")
    assert old["numpy"].startswith("1.") and new["numpy"].startswith("1.")
    assert old["prefix"] != new["prefix"]
    for name, result in (("wrap_six_old__1.0.0", old), ("wrap_six_new__1.0.0", new)):
        env_link = served.repository / name / "env"
        assert Path(result["prefix"]).resolve() == env_link.resolve()


def test_plugin_asking_for_numpy_2_is_refused_with_its_reason(served):
    record = served.records["wrap_numpy2@1.0.0"]
    assert record["state"] == "INVALID" and "path" not in record
    (error,) = [e for e in record["errors"] if e["check"] == "dependency_conflict"]
    assert "requirements.txt:1 asks for 'numpy>=2.0'" in error["message"] and "numpy<2" in error["message"]
    assert not (served.repository / "wrap_numpy2__1.0.0").exists()
