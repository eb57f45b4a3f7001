"""context.metrics: counters, gauges and histograms scoped to the plugin version."""

from __future__ import annotations

import pytest
from fake_pb_utils import MetricFamily
from ruth_metrics import PluginMetrics
from wrapper_testlib import encode, solid


def test_metrics_are_scoped_to_the_plugin_and_kept_in_memory_without_triton():
    metrics = PluginMetrics("m", "1.0.0")
    frames = metrics.counter("frames", "frames seen", labels=("camera",))
    frames.inc(camera="a")
    frames.inc(2, camera="a")
    latency = metrics.histogram("step_seconds", buckets=(0.1, 1.0))
    latency.observe(0.5)
    metrics.gauge("queue").set(7)
    assert frames.value(camera="a") == 3.0 and latency.value() == 0.5 and metrics.gauge("queue").value() == 7
    assert metrics.names() == ["ruth_plugin_frames", "ruth_plugin_queue", "ruth_plugin_step_seconds"]
    assert metrics.counter("frames", labels=("camera",)) is frames  # asked again: the same metric


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda m: m.counter("Bad-Name"), "must match"),
        (lambda m: m.counter("c", labels=("model_id",)), "not be one of"),
        (lambda m: m.histogram("h", buckets=(1.0, 0.5)), "increasing"),
        (lambda m: m.counter("c").inc(-1), "only goes up"),
        (lambda m: m.counter("c").set(1), "for gauges"),
        (lambda m: m.counter("c", labels=("camera",)).inc(), "labels must be exactly"),
    ],
)
def test_metrics_refuse_what_prometheus_would_not_take(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make(PluginMetrics("m", "1.0.0"))


PLUGIN = {
    "inference.py": """
        def load(context):
            return {
                "frames": context.metrics.counter("frames", "frames seen", labels=("camera",)),
                "seconds": context.metrics.histogram("infer_seconds", buckets=(0.01, 0.1, 1.0)),
                "where": (context.device, context.device_id, context.torch_device),
            }

        def infer(state, frame):
            state["frames"].inc(camera=frame.camera_id or "none")
            state["seconds"].observe(0.02)
            return {"where": "/".join(map(str, state["where"]))}
    """
}


def test_generated_model_gives_the_plugin_tritons_metrics_api_and_its_gpu(triton_model):
    from fake_pb_utils import InferenceRequest

    MetricFamily.created.clear()
    model = triton_model(PLUGIN, output={"schema": {"where": {"type": "string"}}})
    model.execute([InferenceRequest({"FRAME": encode(solid(8, 8, (1, 2, 3)))}, {"camera_id": "cam1"})])
    families = {f.name: f for f in MetricFamily.created}
    assert set(families) == {"ruth_model_isolation", "ruth_plugin_frames", "ruth_plugin_infer_seconds"}
    (isolation,) = families["ruth_model_isolation"].metrics  # the stub's own: not the plugin's
    labels = {"model_id": "demo", "version": "1.0.0", "triton_name": "demo__1.0.0", "level": "guard"}
    assert isolation.labels == {**labels, "detail": "not a Triton stub process"}
    assert isolation.value() == 0.0  # this test process is not a stub: never confined
    assert families["ruth_plugin_frames"].kind == MetricFamily.COUNTER
    series = {tuple(sorted(m.labels.items())): m for m in families["ruth_plugin_frames"].metrics}
    assert series[(("camera", "cam1"), ("model_id", "demo"), ("version", "1.0.0"))].value() == 1.0
    (histogram,) = families["ruth_plugin_infer_seconds"].metrics
    assert histogram.buckets == [0.01, 0.1, 1.0] and histogram.observed == [0.02, 0.02]  # warmup + request


def test_generated_model_tells_a_gpu_instance_its_device_id(entry, monkeypatch):
    import sys

    import fake_pb_utils
    from wrapper_testlib import load_generated_model

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils)
    model = load_generated_model(entry(PLUGIN, output={"schema": {"where": {"type": "string"}}}))
    model.initialize({"model_instance_kind": "GPU", "model_instance_device_id": "1"})
    try:
        context = model._runtime.context
        assert (context.device, context.device_id, context.torch_device) == ("gpu", 1, "cuda:1")
    finally:
        model.finalize()
