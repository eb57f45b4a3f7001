"""Health judges the model's own time, not the time a request waited, against the real tritonserver.

A temporal model takes one camera's frames one at a time, so a burst of that camera's frames queues
in Triton: the last frame waits behind every earlier one. That wait is backpressure, shown apart in
``/models``, ``/metrics`` and each answer's ``wait_ms``; the model stays HEALTHY. A model whose own
time per frame is 3x its hint goes DEGRADED.
"""

from __future__ import annotations

import re

import pytest

from sidecar.client import make_request, result_dict
from tests.integration.test_lifecycle import FRAME, V, model, state_is, until
from tests.integration.test_told_truthfully import stack

pytestmark = pytest.mark.integration

BURST = 18
HINT_MS = 60.0  # hl_burst's inference_time_hint_ms; it sleeps 30 ms per frame


def _histogram(metrics: str, name: str, model_id: str, part: str) -> float:
    """``part`` (count or sum) of one model's histogram ``name`` in the Prometheus text."""
    found = re.search(rf'^{name}_{part}{{model_id="{model_id}",version="{V}"}} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else 0.0


async def test_a_burst_of_one_cameras_frames_leaves_a_temporal_model_healthy_with_its_wait_shown(
    triton_factory, tmp_path
):
    async with stack(triton_factory, tmp_path, ["hl_burst", "hl_slow"]) as (_, http, client):
        await until(lambda: state_is(http, "hl_burst", "READY"))
        await until(lambda: state_is(http, "hl_slow", "READY"))

        async def burst():
            for n in range(BURST):
                yield make_request("hl_burst", V, FRAME, frame_id=str(n), camera_id="cam-burst")

        answers = {r.frame_id: r async for r in client.stream(burst())}
        assert sorted(answers, key=int) == [str(n) for n in range(BURST)]
        counts = [result_dict(answers[str(n)])["count"] for n in range(BURST)]
        assert counts == list(range(1, BURST + 1))  # one camera's frames in order
        own = [answers[str(n)].inference_ms for n in range(BURST)]
        waited = [answers[str(n)].wait_ms for n in range(BURST)]
        assert all(ms >= 30.0 for ms in own), own  # each frame's own time: its 30 ms sleep and more
        # the frames sent at once were served one at a time: the last waited behind the others
        assert waited[-1] > (BURST - 2) * 30.0, waited

        def settled(found):
            performance = found["performance"] if found else None
            return found if performance and performance["requests"] >= BURST else None

        burst_model = await until(lambda: _models_then(http, "hl_burst", settled), timeout=10.0)
        assert burst_model["health"] == "HEALTHY", burst_model["performance"]
        performance = burst_model["performance"]
        assert performance["avg_inference_ms"] < 3 * HINT_MS  # within 3x the hint: not slow
        assert performance["avg_wait_ms"] > 3 * HINT_MS  # the whole time would have been judged slow
        assert performance["p99_wait_ms"] >= waited[-1] - 1.0
        ready = (await http.get("/readyz")).json()
        assert ready["status"] == "healthy", ready

        metrics = (await http.get("/metrics")).text
        assert _histogram(metrics, "ruth_model_compute_seconds", "hl_burst", "count") == BURST
        assert _histogram(metrics, "ruth_request_wait_seconds", "hl_burst", "count") == BURST
        waited_s = _histogram(metrics, "ruth_request_wait_seconds", "hl_burst", "sum")
        assert waited_s > BURST * 3 * HINT_MS / 1000
        assert 'ruth_model_health{health="HEALTHY",model_id="hl_burst",version="1.0.0"} 1.0' in metrics

        registered = (await http.get("/capabilities")).json()
        (entry,) = [m for m in registered["models"] if m["model_id"] == "hl_burst"]
        assert entry["health"] == "HEALTHY"
        assert entry["performance"]["avg_wait_time_ms"] > entry["performance"]["avg_inference_time_ms"]

        for n in range(5):  # one at a time: nothing waits, the model itself is slow
            response = await client.infer("hl_slow", V, FRAME, frame_id=f"s{n}")
            assert result_dict(response) == {"alive": True}
            assert response.inference_ms >= 60.0
        slow = await until(lambda: _models_then(http, "hl_slow", _degraded), timeout=10.0)
        assert "above 3x the hint" in slow["performance"]["reason"], slow["performance"]
        assert slow["performance"]["avg_inference_ms"] > 3 * 20.0
        metrics = (await http.get("/metrics")).text
        assert 'ruth_model_health{health="DEGRADED",model_id="hl_slow",version="1.0.0"} 1.0' in metrics


async def _models_then(http, model_id, check):
    return check(await model(http, model_id))


def _degraded(found):
    return found if found and found["health"] == "DEGRADED" else None
