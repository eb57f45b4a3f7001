"""The generated model.py in front of the runtime, with the stand-in pb_utils (see fake_pb_utils)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fake_pb_utils import InferenceRequest, Logger, TritonError
from ruth_errors import LoadError
from wrapper_testlib import encode, solid

PLUGIN = {
    "inference.py": """
        def load(context):
            context.logger.warning("loaded for %s", context.device)
            return None

        def infer(state, frame):
            if frame.image[0, 0, 0] > 200:
                raise RuntimeError("too bright")
            parts = (frame.camera_id, frame.frame_id, frame.timestamp_ms, frame.sequence_start)
            return {"label": "/".join(map(str, parts)), "score": 0.5}
    """
}


def result_of(response) -> dict:
    """RESULT of a successful answer, checking MODEL_MS beside it: one time per RESULT element."""
    assert not response.has_error(), response.error().message()
    tensor, model_ms = response.output_tensors
    assert (tensor.name(), model_ms.name()) == ("RESULT", "MODEL_MS")
    took = model_ms.as_numpy()
    assert took.shape == tensor.as_numpy().shape and took.dtype == np.float64
    assert (took >= 0).all() and len(set(took.reshape(-1))) == 1
    return tensor.as_numpy()


@pytest.mark.parametrize(("batch_size", "shape"), [(1, (1,)), (4, (1, 1))])
def test_model_answers_one_result_per_request_shaped_by_max_batch_size(triton_model, batch_size, shape):
    model = triton_model(PLUGIN, performance={"recommended_batch_size": batch_size})
    frame = encode(solid(8, 8, (10, 10, 10)))
    requests = [
        InferenceRequest(
            {"FRAME": frame[None, :] if batch_size > 1 else frame},
            {"camera_id": "cam1", "frame_id": str(i), "timestamp_ms": 100 + i},
        )
        for i in range(2)
    ]
    responses = model.execute(requests)
    assert len(responses) == 2
    for i, response in enumerate(responses):
        array = result_of(response)
        assert array.shape == shape and array.dtype == np.object_
        assert json.loads(array.reshape(-1)[0].decode()) == {
            "label": f"cam1/{i}/{100 + i}/False",
            "score": 0.5,
        }


def test_model_answers_errors_per_request_with_codes_and_status(triton_model):
    model = triton_model(PLUGIN)
    bright, dark = encode(solid(8, 8, (255, 255, 255))), encode(solid(8, 8, (0, 0, 0)))
    responses = model.execute(
        [InferenceRequest({"FRAME": bright}), InferenceRequest({}), InferenceRequest({"FRAME": dark})]
    )
    assert responses[0].error().message().startswith("[RUTH:INFERENCE_ERROR] infer: RuntimeError: too bright")
    assert responses[0].error().code() == TritonError.INTERNAL
    assert responses[1].error().message() == "[RUTH:INVALID_INPUT] decode: the request has no FRAME input"
    assert responses[1].error().code() == TritonError.INVALID_ARG
    assert json.loads(result_of(responses[2])[0])["label"] == "None/None/None/False"


def test_model_passes_sequence_start_and_sequence_id_to_temporal_plugins(triton_model):
    model = triton_model(PLUGIN, input={"type": "temporal", "format": "raw_rgb"})
    pixels = solid(8, 8, (1, 1, 1))[None, ...]
    responses = model.execute(
        [
            InferenceRequest({"FRAME": pixels, "START": np.array([[1]], np.int32)}, correlation_id=42),
            InferenceRequest({"FRAME": pixels, "START": np.array([[0]], np.int32)}, correlation_id="gate-3"),
            InferenceRequest(
                {"FRAME": pixels, "START": np.array([[0]], np.int32), "CORRID": np.array([[7]], np.uint64)}
            ),
        ]
    )
    labels = [json.loads(result_of(r).reshape(-1)[0])["label"] for r in responses]
    assert labels == ["42/None/None/True", "gate-3/None/None/False", "7/None/None/False"]


def test_model_initialize_fails_with_the_load_reason(triton_model):
    with pytest.raises(LoadError, match=r"^\[RUTH:LOAD_FAILED\] load: ZeroDivisionError"):
        triton_model({"inference.py": "def load(c):\n    return 1 / 0\ndef infer(s, f):\n    return {}\n"})


def test_model_sends_runtime_and_plugin_logs_to_triton(triton_model):
    Logger.records.clear()
    triton_model(PLUGIN)
    assert ("warn", "[demo:1.0.0] loaded for cpu") in Logger.records
    assert any(level == "info" and "demo:1.0.0 ready in" in text for level, text in Logger.records)


BATCH_PLUGIN = {
    "inference.py": """
        def load(context):
            return None

        def infer(state, batch):
            return [{"label": f"{f.camera_id}/{f.frame_id}/{f.timestamp_ms}", "score": len(batch) / 10}
                    for f in batch]
    """,
    "preprocessing.py": """
        def preprocess(frame, context):
            if frame.image[0, 0, 0] > 200:
                raise ValueError("too bright")
            return frame
    """,
}


def _batch_request(frames: list[np.ndarray], lengths: bool, **parameters) -> InferenceRequest:
    width = max(len(f) for f in frames)
    tensor = np.stack([np.pad(f, (0, width - len(f))) for f in frames]) if lengths else np.stack(frames)
    meta = [{"frame_id": f"f{i}", "camera_id": f"cam{i % 2}", "timestamp_ms": i} for i in range(len(frames))]
    params = {"batch": json.dumps(meta), **parameters}
    if lengths:
        params["frame_lengths"] = ",".join(str(len(f)) for f in frames)
    return InferenceRequest({"FRAME": tensor}, params)


def test_model_answers_a_batch_request_with_one_element_per_frame_in_order(triton_model):
    model = triton_model(BATCH_PLUGIN, input={"type": "batch", "format": "jpeg"},
                         performance={"recommended_batch_size": 8})
    frames = [encode(solid(8 + i, 8, (i * 10, 0, 0))) for i in range(3)]  # three lengths: padded
    frames.insert(1, encode(solid(8, 8, (250, 250, 250))))  # fails alone, in preprocess
    (response,) = model.execute([_batch_request(frames, lengths=True)])
    elements = [e.decode() for e in result_of(response).reshape(-1)]
    assert len(elements) == 4 and result_of(response).shape == (4, 1)
    assert elements[1].startswith("[RUTH:PREPROCESS_ERROR] preprocess: ValueError: too bright")
    good = [json.loads(elements[i]) for i in (0, 2, 3)]
    assert [g["label"] for g in good] == ["cam0/f0/0", "cam0/f2/2", "cam1/f3/3"]
    assert {g["score"] for g in good} == {0.3}  # infer saw the three good frames as one batch


def test_model_refuses_a_batch_whose_ids_do_not_match_its_frames(triton_model):
    model = triton_model(BATCH_PLUGIN, input={"type": "batch", "format": "raw_rgb"},
                         performance={"recommended_batch_size": 8})
    pixels = np.stack([solid(8, 8, (1, 1, 1))] * 2)
    good = _batch_request(list(pixels), lengths=False)
    bad = InferenceRequest({"FRAME": pixels}, {"batch": json.dumps([{"frame_id": "only-one"}])})
    answers = model.execute([bad, good])
    assert answers[0].error().code() == TritonError.INVALID_ARG
    assert "a batch of 1 frames does not match FRAME (2, 8, 8, 3)" in answers[0].error().message()
    assert [json.loads(e)["label"] for e in result_of(answers[1]).reshape(-1)] == ["cam0/f0/0", "cam1/f1/1"]


def test_model_ms_is_each_requests_own_time_not_its_wait_behind_the_others(triton_model):
    """Requests in one execute each report what their own frame took, not the time since the execute
    began: the last one, which does nothing slow, would otherwise count the first one's sleep."""
    slow_first = {
        "inference.py": """
            import time

            def load(context):
                return None

            def infer(state, frame):
                if frame.image[0, 0, 0] > 100:
                    time.sleep(0.4)
                return {"label": "x", "score": 0.5}
        """
    }
    model = triton_model(slow_first)
    slow, quick = encode(solid(8, 8, (200, 200, 200))), encode(solid(8, 8, (10, 10, 10)))
    responses = model.execute([InferenceRequest({"FRAME": f}) for f in (slow, quick, quick)])
    took = [float(r.output_tensors[1].as_numpy()[0]) for r in responses]
    assert took[0] >= 400.0, took
    assert took[2] < took[0], took


def test_a_dependent_reads_its_upstreams_results_in_pre_infer_and_post(triton_model):
    """Each frame's upstream results reach preprocess and infer through the frame, and a three-argument
    postprocess gets the frame too. The warmup frame has none (``frame.upstreams`` is empty)."""
    dependent = {
        "preprocessing.py": """
            def preprocess(frame, context):
                return (frame, frame.upstreams.get("person", {}).get("people", 0))
        """,
        "inference.py": """
            def load(context):
                return None

            def infer(state, inputs):
                frame, people = inputs
                return {"label": f"{people}/{len(frame.upstreams)}", "score": 0.5}
        """,
        "postprocessing.py": """
            def postprocess(outputs, context, frame):
                return {**outputs, "score": frame.upstreams.get("person", {}).get("people", 0) / 10}
        """,
    }
    model = triton_model(dependent)
    frame = encode(solid(8, 8, (10, 10, 10)))
    (answer, plain) = model.execute([
        InferenceRequest({"FRAME": frame}, {"upstreams": json.dumps({"person": {"people": 3}})}),
        InferenceRequest({"FRAME": frame}, {"upstreams": "[1, 2]"}),
    ])
    assert json.loads(result_of(answer)[0]) == {"label": "3/1", "score": 0.3}
    expected = "[RUTH:INVALID_INPUT] decode: the upstreams parameter is not a mapping: list"
    assert plain.error().message() == expected
