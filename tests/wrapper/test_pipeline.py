"""The request pipeline in-process: decode, preprocess, infer, postprocess, validation, errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from ruth_errors import LoadError, RuthError, parse_message
from wrapper_testlib import encode, request, solid

ECHO = {
    "inference.py": """
        def load(context):
            return {"calls": 0}

        def infer(state, frame):
            state["calls"] += 1
            r, g, b = (float(frame.image[..., i].mean()) for i in range(3))
            return {"w": frame.width, "h": frame.height, "rgb": [r, g, b], "format": frame.format,
                    "camera_id": frame.camera_id, "frame_id": frame.frame_id,
                    "timestamp_ms": frame.timestamp_ms, "contiguous": frame.image.flags.c_contiguous,
                    "dtype": str(frame.image.dtype), "calls": state["calls"]}
    """
}
ECHO_SCHEMA = {
    "w": {"type": "integer"},
    "h": {"type": "integer"},
    "rgb": {"type": "array", "items": {"type": "float"}},
    "format": {"type": "string"},
    "camera_id": {"type": "string", "nullable": True},
    "frame_id": {"type": "string", "nullable": True},
    "timestamp_ms": {"type": "integer", "nullable": True},
    "contiguous": {"type": "boolean"},
    "dtype": {"type": "string"},
    "calls": {"type": "integer"},
}


def ok(outcome: object) -> dict:
    assert isinstance(outcome, str), outcome
    return json.loads(outcome)


def failed(outcome: object, code: str, phase: str) -> str:
    assert isinstance(outcome, RuthError), outcome
    assert (outcome.code, outcome.phase) == (code, phase), str(outcome)
    parsed = parse_message(str(outcome))
    assert parsed is not None and parsed[0] == code
    return outcome.message


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_runtime_decodes_encoded_frame_to_rgb_when_format_is_encoded(runtime, fmt):
    rt = runtime(ECHO, input={"format": fmt}, output={"schema": ECHO_SCHEMA})
    frame = encode(solid(40, 30, (200, 20, 90)), fmt)
    result = ok(rt.execute([request(frame, camera_id="cam-7", frame_id="f1", timestamp_ms="1700")])[0])
    assert (result["w"], result["h"], result["format"]) == (40, 30, fmt)
    assert result["rgb"] == pytest.approx([200, 20, 90], abs=3)
    assert (result["camera_id"], result["frame_id"], result["timestamp_ms"]) == ("cam-7", "f1", 1700)
    assert result["contiguous"] and result["dtype"] == "uint8"


@pytest.mark.parametrize(("fmt", "pixel"), [("raw_rgb", (10, 120, 250)), ("raw_bgr", (250, 120, 10))])
def test_runtime_passes_rgb_frame_when_format_is_raw(runtime, fmt, pixel):
    rt = runtime(ECHO, input={"format": fmt}, output={"schema": ECHO_SCHEMA})
    result = ok(rt.execute([request(solid(16, 12, pixel)[None, ...])])[0])
    assert result["rgb"] == [10.0, 120.0, 250.0]
    assert (result["w"], result["h"], result["camera_id"], result["timestamp_ms"]) == (16, 12, None, None)


def test_runtime_calls_preprocess_and_postprocess_with_read_only_context(runtime):
    files = {
        "inference.py": """
            def load(context):
                context.logger.info("loading with threshold %s", context.config["threshold"])
                return context.config["threshold"]

            def infer(threshold, inputs):
                return {"brightness": inputs["brightness"], "threshold": threshold}
        """,
        "preprocessing.py": """
            def preprocess(frame, context):
                return {"brightness": float(frame.image.mean()) / 255.0}
        """,
        "postprocessing.py": """
            def postprocess(outputs, context):
                try:
                    context.config["threshold"] = 0
                    mutable = True
                except TypeError:
                    mutable = False
                bright = outputs["brightness"] > outputs["threshold"]
                return {"label": "bright" if bright else "dark", "score": outputs["brightness"],
                        "config_mutable": mutable, "dir": context.model_dir.name,
                        "tags": list(context.config["tags"])}
        """,
        "config.yaml": "threshold: 0.5\ntags: [a, b]\n",
    }
    schema = {**DEFAULT_SCHEMA_WITH_EXTRAS}
    rt = runtime(files, output={"schema": schema})
    white, black = encode(solid(8, 8, (255, 255, 255))), encode(solid(8, 8, (0, 0, 0)))
    first, second = (ok(o) for o in rt.execute([request(white), request(black)]))
    assert (first["label"], second["label"]) == ("bright", "dark")
    assert first["config_mutable"] is False and first["dir"] == "plugin" and first["tags"] == ["a", "b"]
    assert rt.context is not None and rt.context.logger.scope == "demo:1.0.0"


DEFAULT_SCHEMA_WITH_EXTRAS = {
    "label": {"type": "string"},
    "score": {"type": "float", "min": 0.0, "max": 1.0},
    "config_mutable": {"type": "boolean"},
    "dir": {"type": "string"},
    "tags": {"type": "array", "items": {"type": "string"}},
}

CONSTANT = {
    "inference.py": """
        def load(context):
            return None

        def infer(state, frame):
            return {"label": "x", "score": 0.5}
    """
}


@pytest.mark.parametrize(
    ("frame", "params", "expected"),
    [
        (None, {}, "no FRAME input"),
        (np.frombuffer(b"GIF89a........", dtype=np.uint8), {}, "not jpeg data"),
        (np.frombuffer(b"\xff\xd8\xff\xe0 truncated", dtype=np.uint8), {}, "could not be decoded"),
        (encode(solid(4, 4, (1, 2, 3))), {}, "smaller than the minimum 8x8"),
        (encode(solid(8, 8, (1, 2, 3))), {"timestamp_ms": "noon"}, "timestamp_ms must be an integer"),
        (np.zeros((2, 5), dtype=np.uint8), {}, "one jpeg byte string per request"),
        (encode(solid(8, 8, (1, 2, 3))).astype(np.int32), {}, "must be UINT8"),
    ],
)
def test_runtime_answers_invalid_input_when_frame_is_unusable(runtime, frame, params, expected):
    rt = runtime(CONSTANT)
    message = failed(rt.execute([request(frame, **params)])[0], "INVALID_INPUT", "decode")
    assert expected in message


def test_runtime_rejects_frames_larger_than_declared_maximum(runtime):
    rt = runtime(CONSTANT, input={"format": "raw_rgb", "max_width": 10, "max_height": 10})
    message = failed(rt.execute([request(solid(11, 9, (0, 0, 0)))])[0], "INVALID_INPUT", "decode")
    assert "larger than the maximum 10x10" in message


FAULTY = {
    "inference.py": """
        def load(context):
            return None

        def infer(state, inputs):
            if inputs == "infer":
                return 1 / 0
            return inputs
    """,
    "preprocessing.py": """
        def preprocess(frame, context):
            kind = {0: "ok", 1: "preprocess", 2: "infer", 3: "postprocess", 4: "schema",
                    5: "not_json", 6: "nan"}[int(frame.image[0, 0, 0]) // 40]
            if kind == "preprocess":
                raise ValueError("cannot prepare this frame")
            return kind
    """,
    "postprocessing.py": """
        import numpy as np

        def postprocess(kind, context):
            if kind == "postprocess":
                raise KeyError("boxes")
            if kind == "schema":
                return {"label": "x", "score": 7.5}
            if kind == "not_json":
                return {"label": "x", "score": object()}
            if kind == "nan":
                return {"label": "x", "score": float("nan")}
            return {"label": kind, "score": np.float32(0.25)}
    """,
}


@pytest.mark.parametrize(
    ("level", "code", "phase", "expected"),
    [
        (1, "PREPROCESS_ERROR", "preprocess", "ValueError: cannot prepare this frame (preprocessing.py:"),
        (2, "INFERENCE_ERROR", "infer", "ZeroDivisionError: division by zero (inference.py:7)"),
        (3, "POSTPROCESS_ERROR", "postprocess", "KeyError: 'boxes' (postprocessing.py:"),
        (4, "OUTPUT_SCHEMA_VIOLATION", "validate", "data.score must be smaller than or equal to 1"),
        (5, "OUTPUT_SCHEMA_VIOLATION", "validate", "object is not a JSON value"),
        (6, "OUTPUT_SCHEMA_VIOLATION", "validate", "not JSON"),
    ],
)
def test_runtime_fails_only_the_bad_request_when_a_phase_fails(runtime, level, code, phase, expected):
    rt = runtime(FAULTY, input={"format": "raw_rgb"})
    good, bad = solid(8, 8, (0, 0, 0)), solid(8, 8, (level * 40, 0, 0))
    outcomes = rt.execute([request(good), request(bad), request(good)])
    assert ok(outcomes[0]) == {"label": "ok", "score": 0.25}
    assert expected in failed(outcomes[1], code, phase)
    assert ok(outcomes[2]) == {"label": "ok", "score": 0.25}


BATCH = {
    "inference.py": """
        def load(context):
            return {"calls": []}

        def infer(state, batch):
            state["calls"].append(len(batch))
            return [{"value": x, "batch": len(batch), "calls": len(state["calls"])} for x in batch]
    """,
    "preprocessing.py": """
        def preprocess(frame, context):
            value = int(frame.image[0, 0, 0])
            if value == 99:
                raise RuntimeError("bad pixel")
            return value
    """,
}
BATCH_SCHEMA = {"value": {"type": "integer"}, "batch": {"type": "integer"}, "calls": {"type": "integer"}}


def test_batch_plugin_receives_the_whole_dynamic_batch_in_one_call(runtime):
    rt = runtime(
        BATCH,
        input={"type": "batch", "format": "raw_rgb"},
        output={"schema": BATCH_SCHEMA},
        performance={"recommended_batch_size": 8},
    )
    outcomes = rt.execute([request(solid(8, 8, (v, 0, 0))) for v in (1, 2, 99, 4)])
    results = [ok(o) for i, o in enumerate(outcomes) if i != 2]
    assert [r["value"] for r in results] == [1, 2, 4]
    assert {r["batch"] for r in results} == {3} and {r["calls"] for r in results} == {2}  # warmup + this
    assert "bad pixel" in failed(outcomes[2], "PREPROCESS_ERROR", "preprocess")


def test_batch_plugin_fails_every_item_when_it_returns_the_wrong_number_of_outputs(runtime):
    files = {
        **BATCH,
        "inference.py": """
        def load(context):
            return None

        def infer(state, batch):
            return [{"value": 0, "batch": 0, "calls": 0}] if len(batch) == 1 else []
    """,
    }
    rt = runtime(files, input={"type": "batch", "format": "raw_rgb"}, output={"schema": BATCH_SCHEMA})
    outcomes = rt.execute([request(solid(8, 8, (v, 0, 0))) for v in (1, 2)])
    for outcome in outcomes:
        assert "expected a list of 2 outputs, got a list of 0" in failed(outcome, "INFERENCE_ERROR", "infer")


TEMPORAL = {
    "inference.py": """
        def load(context):
            return {}

        def infer(cameras, frame):
            if frame.sequence_start:
                cameras[frame.camera_id] = []
            seen = cameras[frame.camera_id]
            seen.append(int(frame.image[0, 0, 0]))
            return {"camera": frame.camera_id, "seen": list(seen)}
    """
}
TEMPORAL_SCHEMA = {"camera": {"type": "string"}, "seen": {"type": "array", "items": {"type": "integer"}}}


def test_temporal_plugin_keeps_per_camera_state_from_sequence_start(runtime):
    rt = runtime(
        TEMPORAL, input={"type": "temporal", "format": "raw_rgb"}, output={"schema": TEMPORAL_SCHEMA}
    )

    def frame(camera, value, start=False):
        from ruth_runtime import FrameRequest

        return FrameRequest(solid(8, 8, (value, 0, 0)), {}, sequence_start=start, correlation_id=camera)

    outcomes = rt.execute([frame("a", 1, True), frame("b", 7, True), frame("a", 2), frame("b", 8)])
    outcomes += rt.execute([frame("a", 3), frame("a", 9, True)])
    seen = [(r["camera"], r["seen"]) for r in map(ok, outcomes)]
    assert seen == [("a", [1]), ("b", [7]), ("a", [1, 2]), ("b", [7, 8]), ("a", [1, 2, 3]), ("a", [9])]


@pytest.mark.parametrize(
    ("files", "phase", "expected"),
    [
        ({"inference.py": "def load(context):\n    return None\ndef infer(:\n"}, "import", "SyntaxError"),
        (
            {"inference.py": "def load(context):\n    return None\n"},
            "import",
            "must define a function infer()",
        ),
        ({"other.py": ""}, "import", "inference.py is missing"),
        (
            {
                "inference.py": "def load(context):\n    raise OSError('weights.bin not found')\n"
                "def infer(s, f):\n    return {}\n"
            },
            "load",
            "OSError: weights.bin not found (inference.py:2)",
        ),
        (
            {"inference.py": "def load(context):\n    return None\ndef infer(s, f):\n    return [][1]\n"},
            "warmup.infer",
            "IndexError: list index out of range (inference.py:4)",
        ),
        (
            {
                "inference.py": "def load(context):\n    return None\n"
                "def infer(s, f):\n    return {'label': 1, 'score': 0.5}\n"
            },
            "warmup.validate",
            "data.label must be string",
        ),
    ],
)
def test_load_fails_with_the_phase_and_the_plugin_error(runtime, files, phase, expected):
    with pytest.raises(LoadError) as info:
        runtime(files)
    assert info.value.phase == phase
    assert expected in info.value.message
    assert str(info.value).startswith(f"[RUTH:LOAD_FAILED] {phase}: ")


def test_warmup_uses_the_declared_format_and_minimum_size(runtime):
    files = {
        "inference.py": """
            SEEN = []

            def load(context):
                return SEEN

            def infer(seen, frame):
                seen.append((frame.format, frame.width, frame.height, frame.camera_id, frame.sequence_start))
                return {"label": "x", "score": 0.0}
        """
    }
    rt = runtime(files, input={"type": "temporal", "format": "png", "min_width": 33, "min_height": 21})
    assert rt._state == [("png", 33, 21, "warmup", True)]


def test_plugin_modules_do_not_pollute_sys_modules(runtime):
    helper = "NAME = {!r}\n"
    inference = """
        import helpers
        from . import helpers as relative

        def load(context):
            return helpers.NAME

        def infer(name, frame):
            return {"label": name + "/" + relative.NAME, "score": 0.0}
    """
    first = runtime({"inference.py": inference, "helpers.py": helper.format("one")})
    assert "inference" not in sys.modules and "ruth_plugin_demo_1_0_0.inference" in sys.modules
    assert ok(first.execute([request(encode(solid(8, 8, (0, 0, 0))))])[0])["label"] == "one/one"
    first.close()
    assert "helpers" not in sys.modules and "ruth_plugin_demo_1_0_0" not in sys.modules
    second = runtime({"inference.py": inference, "helpers.py": helper.format("two")})
    assert ok(second.execute([request(encode(solid(8, 8, (0, 0, 0))))])[0])["label"] == "two/two"
