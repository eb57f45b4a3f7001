from __future__ import annotations

import pytest

from sidecar.control.health import Health, HealthPolicy, ModelHealthTracker, aggregate, counts_against_model

H = Health


def _run(tracker: ModelHealthTracker, outcomes: str, latency: float = 10.0, start: float = 0.0) -> None:
    """``outcomes``: ``.`` success, ``x`` error, ``t`` timeout; one request per 10 ms."""
    for i, outcome in enumerate(outcomes):
        tracker.record(outcome == ".", latency, timeout=outcome == "t", now=start + i * 0.01)


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ("." * 200, H.HEALTHY),
        ("." * 199 + "x", H.HEALTHY),  # 0.5%
        ("." * 196 + "xx", H.DEGRADED),  # 1.01%
        ("." * 90 + "x" * 10, H.DEGRADED),  # 10% is not above 10%
        ("." * 89 + "x" * 11, H.UNHEALTHY),  # 11%
    ],
)
def test_tracker_health_follows_error_rate_thresholds(outcomes, expected):
    tracker = ModelHealthTracker(HealthPolicy())
    _run(tracker, outcomes)
    assert tracker.health is expected


def test_tracker_only_degrades_when_too_few_requests_for_a_rate():
    tracker = ModelHealthTracker(HealthPolicy(min_requests=10))
    _run(tracker, ".x")
    assert tracker.health is H.DEGRADED


def test_tracker_is_unhealthy_when_consecutive_timeouts_reach_the_limit():
    tracker = ModelHealthTracker(HealthPolicy(window_requests=1000, max_consecutive_timeouts=3))
    _run(tracker, "." * 500 + "tt")
    assert tracker.health is H.HEALTHY
    assert tracker.record(False, 5000.0, timeout=True, now=10.0) is True
    assert tracker.health is H.UNHEALTHY and "3 consecutive timeouts" in tracker.reason


def test_tracker_consecutive_timeouts_reset_when_a_request_succeeds():
    tracker = ModelHealthTracker(HealthPolicy(window_requests=1000))
    _run(tracker, "." * 500 + "tt.t")
    assert tracker.consecutive_timeouts == 1


def test_tracker_recovers_when_requests_succeed_again():
    tracker = ModelHealthTracker(HealthPolicy(window_requests=100))
    _run(tracker, "x" * 20)
    assert tracker.health is H.UNHEALTHY
    _run(tracker, "." * 100, start=1.0)
    assert tracker.health is H.HEALTHY


def test_tracker_recovers_when_errors_age_out_of_the_time_window():
    tracker = ModelHealthTracker(HealthPolicy(window_s=5.0))
    _run(tracker, "x" * 20)
    assert tracker.refresh(now=100.0) is True
    assert tracker.health is H.HEALTHY


def test_tracker_degrades_when_latency_is_well_above_the_hint():
    tracker = ModelHealthTracker(HealthPolicy(latency_factor=3.0), hint_ms=10.0)
    _run(tracker, "." * 20, latency=25.0)
    assert tracker.health is H.HEALTHY
    _run(tracker, "." * 200, latency=40.0, start=1.0)
    assert tracker.health is H.DEGRADED and "latency" in tracker.reason


def test_tracker_judges_the_models_own_time_not_the_wait_behind_other_frames():
    """A burst: each frame waits ~20x the hint behind the camera's earlier frames, but the model's own
    time per frame is within it: HEALTHY, with the wait in the snapshot."""
    tracker = ModelHealthTracker(HealthPolicy(latency_factor=3.0), hint_ms=25.0)
    for i in range(18):
        tracker.record(True, 20.0, now=i * 0.02, wait_ms=20.0 * i)
    assert tracker.health is H.HEALTHY
    snap = tracker.snapshot(now=0.4)
    assert snap.avg_ms == pytest.approx(20.0)
    assert snap.avg_wait_ms == pytest.approx(170.0) and snap.p99_wait_ms == pytest.approx(340.0)
    assert snap.to_dict()["avg_wait_ms"] == 170.0


def test_snapshot_reports_avg_p99_and_counters():
    tracker = ModelHealthTracker(HealthPolicy())
    for i in range(100):
        tracker.record(True, float(i + 1), now=i * 0.01)
    tracker.record(False, 1.0, now=1.0)
    snap = tracker.snapshot(now=1.0)
    assert snap.requests == 101 and snap.successes == 100 and snap.errors == 1
    assert snap.avg_ms == pytest.approx(50.5) and snap.p99_ms == 99.0
    assert snap.observed_fps == pytest.approx(101.0)


def test_counts_against_model_ignores_the_callers_mistakes():
    assert counts_against_model("INFERENCE_ERROR") and counts_against_model("TIMEOUT")
    assert not counts_against_model("INVALID_INPUT") and not counts_against_model("OVERLOADED")


@pytest.mark.parametrize(
    ("models", "status", "ready"),
    [
        ([H.HEALTHY] * 3, H.HEALTHY, True),  # §6.5 row 1
        ([H.HEALTHY, H.HEALTHY, H.UNHEALTHY], H.DEGRADED, True),  # row 2
        ([H.HEALTHY, H.UNHEALTHY, H.UNHEALTHY], H.DEGRADED, True),  # row 3
        ([H.UNHEALTHY] * 3, H.UNHEALTHY, False),  # row 4
        ([], H.UNHEALTHY, False),  # never ready with zero models
        ([H.DEGRADED, H.DEGRADED], H.DEGRADED, True),
        ([H.HEALTHY, H.DEGRADED], H.DEGRADED, True),
    ],
)
def test_aggregate_follows_the_6_5_table(models, status, ready):
    runtime = aggregate(models)
    assert runtime.status is status and runtime.ready is ready
    assert runtime.total == len(models)
    assert runtime.to_dict()["status"] == status.value.lower()
