"""Prometheus metrics of the runtime (served at ``GET /metrics``).

* ``ruth_requests_total{model_id, version, code}``: answered requests, ``code`` is ``OK`` or the
  error code; ``ruth_request_duration_seconds{model_id, version}``: a histogram of the whole time
  to answer; for the answers that carried the model's own time,
  ``ruth_model_compute_seconds{model_id, version}`` (that time: what health judges) and
  ``ruth_request_wait_seconds{model_id, version}`` (the rest: queued behind earlier frames,
  transport); updated per request: a dictionary lookup and a few increments;
* ``ruth_model_state{model_id, version, state}`` (1 for the current state),
  ``ruth_model_health{model_id, version, health}`` (1 for the current health),
  ``ruth_runtime_health{health}``, ``ruth_model_fps_capacity``, ``ruth_model_recovery_attempts`` and
  ``ruth_registrations_total{result}``: read from the runtime's state at scrape time;
* ``ruth_inference_server_ready`` (1 while Triton answers ready, else 0), also at scrape time;
* ``ruth_streams_open`` (InferStream streams open) and ``ruth_streams_max`` (the cap,
  ``max_streams``), ``ruth_stream_connections`` (client connections holding one or more),
  ``ruth_streams_refused_total{limit}`` (refused at ``max_streams``: ``process``, or at
  ``max_streams_per_connection``: ``connection``) and ``ruth_streams_closed_idle_total`` (closed by
  ``stream_idle_timeout_s``), also at scrape time;
* ``ruth_frames_decoded_once_total`` (frames that one request sent to several models, decoded once
  by the sidecar) and ``ruth_decoded_frame_reads_total`` (the model requests that took those pixels
  instead of decoding the frame themselves).

Each :class:`RuntimeMetrics` has its own ``CollectorRegistry``, so several runtimes (tests) coexist.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sidecar.control.health import Health
from sidecar.control.states import ModelState

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RuntimeMetrics:
    def __init__(self, state: Callable[[], dict[str, Any]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "ruth_requests", "Answered inference requests", ("model_id", "version", "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "ruth_request_duration_seconds", "Time to answer an inference request",
            ("model_id", "version"), buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.compute = Histogram(
            "ruth_model_compute_seconds", "The model's own time for a request (decode, pre, infer, post)",
            ("model_id", "version"), buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.wait = Histogram(
            "ruth_request_wait_seconds",
            "Time a request spent besides the model's own: queued behind earlier frames, transport",
            ("model_id", "version"), buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._split: dict[tuple[str, str], tuple[Any, Any]] = {}
        if state is not None:
            self.registry.register(_StateCollector(state))

    def observe(
        self, model_id: str, version: str, code: str | None, latency_s: float, model_s: float | None = None
    ) -> None:
        """Count one answered request (``code`` None means success; ``model_s``: the model's own
        part of ``latency_s``, when the answer carried it)."""
        key = (model_id, version, code or "OK")
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(*key), self.latency.labels(model_id, version))
            self._children[key] = children
        children[0].inc()
        children[1].observe(latency_s)
        if model_s is not None:
            split = self._split.get(key[:2])
            if split is None:
                split = self._split[key[:2]] = (self.compute.labels(model_id, version),
                                                self.wait.labels(model_id, version))
            split[0].observe(model_s)
            split[1].observe(max(0.0, latency_s - model_s))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _StateCollector(Collector):
    """Gauges built from a snapshot of the runtime's state at scrape time.

    ``state()`` returns ``{"models": [{model_id, version, state, health, fps_capacity,
    recovery_attempts}], "runtime_health": Health, "registrations": {"sent": n, "failures": n},
    "streams": {"open": n, "connections": n, "refused": {limit: n}, "closed_idle": n}}``.
    """

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self._state = state

    def collect(self) -> Iterable[Any]:
        snapshot = self._state()
        labels = ["model_id", "version"]
        state = GaugeMetricFamily("ruth_model_state", "State (1 = current)", labels=[*labels, "state"])
        health = GaugeMetricFamily("ruth_model_health", "Health (1 = current)", labels=[*labels, "health"])
        fps = GaugeMetricFamily("ruth_model_fps_capacity", "Measured frames per second", labels=labels)
        attempts = GaugeMetricFamily(
            "ruth_model_recovery_attempts", "Automatic reloads since the model last answered", labels=labels
        )
        for model in snapshot.get("models", []):
            ids = [model["model_id"], model["version"]]
            for value in ModelState:
                state.add_metric([*ids, value.value], 1.0 if model["state"] == value.value else 0.0)
            for value in Health:
                health.add_metric([*ids, value.value], 1.0 if model["health"] == value.value else 0.0)
            if model.get("fps_capacity") is not None:
                fps.add_metric(ids, float(model["fps_capacity"]))
            attempts.add_metric(ids, float(model.get("recovery_attempts", 0)))
        runtime = GaugeMetricFamily("ruth_runtime_health", "Runtime health (1 = current)", labels=["health"])
        current = snapshot.get("runtime_health")
        for value in Health:
            runtime.add_metric([value.value], 1.0 if current == value else 0.0)
        registrations = CounterMetricFamily(
            "ruth_registrations", "Capability registrations with the backend", labels=["result"]
        )
        sent = snapshot.get("registrations") or {}
        registrations.add_metric(["success"], float(sent.get("sent", 0)))
        registrations.add_metric(["failure"], float(sent.get("failures", 0)))
        yield from (state, health, fps, attempts, runtime, registrations)
        yield GaugeMetricFamily(
            "ruth_inference_server_ready", "1 while Triton answers ready to the sidecar, else 0",
            value=1.0 if snapshot.get("inference_server_ready") else 0.0,
        )
        yield from _stream_metrics(snapshot.get("streams") or {})
        decoded = snapshot.get("decoded") or {}
        for name, description, key in _DECODED:
            yield CounterMetricFamily(name, description, value=decoded.get(key, 0))


_DECODED = (
    ("ruth_frames_decoded_once", "Frames sent to several models that the sidecar decoded once", "frames"),
    ("ruth_decoded_frame_reads", "Model requests that read a frame decoded once, not decoding it", "reads"),
)


def _stream_metrics(streams: dict[str, Any]) -> Iterable[Any]:
    yield GaugeMetricFamily("ruth_streams_open", "InferStream streams open", value=streams.get("open", 0))
    yield GaugeMetricFamily(
        "ruth_streams_max", "InferStream streams the process accepts (max_streams)",
        value=streams.get("max", 0),
    )
    yield GaugeMetricFamily(
        "ruth_stream_connections", "Client connections holding an open InferStream",
        value=streams.get("connections", 0),
    )
    refused = CounterMetricFamily(
        "ruth_streams_refused", "InferStream streams refused at a cap (process: max_streams, "
        "connection: max_streams_per_connection)", labels=["limit"],
    )
    for limit, count in sorted((streams.get("refused") or {}).items()):
        refused.add_metric([limit], float(count))
    yield refused
    yield CounterMetricFamily(
        "ruth_streams_closed_idle", "InferStream streams closed after stream_idle_timeout_s without requests",
        value=streams.get("closed_idle", 0),
    )
