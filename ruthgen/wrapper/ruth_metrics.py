"""The plugin's metrics handle, ``context.metrics``: counters, gauges and histograms of its own.

Each metric is a Prometheus family ``ruth_plugin_<name>`` whose every series carries the labels
``model_id`` and ``version`` of the plugin (plus the plugin's own labels), so that one plugin can
never write into another's series. Inside Triton the families are created through the Python
backend's custom-metrics API (``pb_utils.MetricFamily``, kinds COUNTER, GAUGE, HISTOGRAM in Triton
2.51) and are served on Triton's metrics port (``:8002/metrics``) beside Triton's own. Without that
API (tests, a Triton without metrics) the handle keeps the values in memory, readable with
:meth:`PluginMetrics.value`. Nothing here imports Triton: the generated model.py passes the API in.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PREFIX = "ruth_plugin_"
SCOPE_LABELS = ("model_id", "version")
DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_LABEL_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
COUNTER, GAUGE, HISTOGRAM = "COUNTER", "GAUGE", "HISTOGRAM"


class _Series:
    """One labelled series kept in memory (no custom-metrics API)."""

    def __init__(self, buckets: Sequence[float] | None) -> None:
        self.total = 0.0
        self.count = 0
        self.buckets = list(buckets or ())
        self.bucket_counts = [0] * len(self.buckets)

    def increment(self, value: float) -> None:
        self.total += value

    def set(self, value: float) -> None:
        self.total = value

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.bucket_counts[i] += 1

    def value(self) -> float:
        return self.total


class _MemoryFamily:
    def __init__(self) -> None:
        self.series: dict[tuple[tuple[str, str], ...], _Series] = {}

    def Metric(self, labels: Mapping[str, str], buckets: Sequence[float] | None = None) -> _Series:
        key = tuple(sorted(labels.items()))
        return self.series.setdefault(key, _Series(buckets))


class Metric:
    """One metric of the plugin; its series are created on first use of a label set."""

    def __init__(self, family: Any, kind: str, scope: Mapping[str, str], labels: tuple[str, ...],
                 buckets: tuple[float, ...] | None) -> None:
        self._family = family
        self.kind = kind
        self._scope = dict(scope)
        self._labels = labels
        self._buckets = buckets
        self._series: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Counter: add ``amount`` (>= 0)."""
        if self.kind != COUNTER:
            raise TypeError(f"inc() is for counters; this metric is a {self.kind.lower()}")
        if amount < 0:
            raise ValueError("a counter only goes up")
        self._get(labels).increment(float(amount))

    def set(self, value: float, **labels: str) -> None:
        """Gauge: set the value."""
        if self.kind != GAUGE:
            raise TypeError(f"set() is for gauges; this metric is a {self.kind.lower()}")
        self._get(labels).set(float(value))

    def observe(self, value: float, **labels: str) -> None:
        """Histogram: count one observation into its bucket."""
        if self.kind != HISTOGRAM:
            raise TypeError(f"observe() is for histograms; this metric is a {self.kind.lower()}")
        self._get(labels).observe(float(value))

    def value(self, **labels: str) -> float:
        """The series' value (counter, gauge) or sum of observations (histogram)."""
        return float(self._get(labels).value())

    def _get(self, labels: Mapping[str, str]) -> Any:
        if set(labels) != set(self._labels):
            raise ValueError(f"labels must be exactly {sorted(self._labels)}, got {sorted(labels)}")
        key = tuple(str(labels[name]) for name in self._labels)
        series = self._series.get(key)
        if series is None:
            with self._lock:
                series = self._series.get(key)
                if series is None:
                    names = {**self._scope, **dict(zip(self._labels, key, strict=True))}
                    if self._buckets is None:
                        series = self._family.Metric(labels=names)
                    else:
                        series = self._family.Metric(labels=names, buckets=list(self._buckets))
                    self._series[key] = series
        return series

    def close(self) -> None:
        self._series.clear()


class PluginMetrics:
    """``context.metrics``: make metrics scoped to this plugin version (``ruth_plugin_<name>``).

    ``api`` is ``pb_utils.MetricFamily`` inside Triton, None to keep values in memory.
    """

    def __init__(self, model_id: str, version: str, api: Any = None) -> None:
        self._scope = {"model_id": model_id, "version": version}
        self._api = api
        self._families: dict[str, tuple[Any, Metric]] = {}
        self._lock = threading.Lock()

    def counter(self, name: str, description: str = "", labels: Iterable[str] = ()) -> Metric:
        return self._make(COUNTER, name, description, labels, None)

    def gauge(self, name: str, description: str = "", labels: Iterable[str] = ()) -> Metric:
        return self._make(GAUGE, name, description, labels, None)

    def histogram(
        self, name: str, description: str = "", labels: Iterable[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Metric:
        bounds = tuple(float(b) for b in buckets)
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError("buckets must be a non-empty increasing sequence")
        return self._make(HISTOGRAM, name, description, labels, bounds)

    def _make(self, kind: str, name: str, description: str, labels: Iterable[str],
              buckets: tuple[float, ...] | None) -> Metric:
        if not _NAME_RE.match(name):
            raise ValueError(f"metric name {name!r} must match {_NAME_RE.pattern}")
        label_names = tuple(labels)
        for label in label_names:
            if not _LABEL_RE.match(label) or label in SCOPE_LABELS:
                raise ValueError(f"label {label!r} must match {_LABEL_RE.pattern} and not be one of "
                                 f"{', '.join(SCOPE_LABELS)}")
        full = PREFIX + name
        with self._lock:
            known = self._families.get(full)
            if known is not None:
                metric = known[1]
                if metric.kind != kind:
                    raise ValueError(f"{name!r} is already a {metric.kind.lower()}")
                return metric
            family = self._family(kind, full, description or name)
            metric = Metric(family, kind, self._scope, label_names, buckets)
            self._families[full] = (family, metric)
        return metric

    def _family(self, kind: str, name: str, description: str) -> Any:
        if self._api is None:
            return _MemoryFamily()
        return self._api(name=name, description=description, kind=getattr(self._api, kind))

    def names(self) -> list[str]:
        return sorted(self._families)

    def close(self) -> None:
        """Drop every metric before its family (the order the backend needs)."""
        with self._lock:
            families, self._families = list(self._families.values()), {}
        for _, metric in families:
            metric.close()
        families.clear()
