"""The failed-request log line: its fields, and its rate limit per model version."""

from __future__ import annotations

import logging

from sidecar.errors import ErrorCode, PluginError, RequestTimeout
from sidecar.request.failures import FailureLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_failure_log_writes_one_structured_line_per_failed_request(caplog):
    log = FailureLog(per_s=5.0, burst=3)
    error = PluginError("infer: ValueError: bad shape (inference.py:3)", ErrorCode.INFERENCE_ERROR, "infer")
    with caplog.at_level(logging.WARNING, logger="sidecar.requests"):
        assert log.record("m", "1.0.0", "f 1", "cam1", error, 12.345)
    (line,) = caplog.records
    assert line.getMessage() == (
        'request failed model_id=m version=1.0.0 frame_id="f 1" camera_id=cam1 code=INFERENCE_ERROR '
        'phase=infer latency_ms=12.3 message="infer: ValueError: bad shape (inference.py:3)"'
    )
    assert line.ruth["code"] == "INFERENCE_ERROR" and line.ruth["frame_id"] == "f 1"


def test_failure_log_limits_each_model_and_counts_what_it_left_out(caplog):
    clock = Clock()
    log = FailureLog(per_s=2.0, burst=2, clock=clock)
    timeout = RequestTimeout("the model did not answer before the deadline")
    with caplog.at_level(logging.WARNING, logger="sidecar.requests"):
        logged = [log.record("m", "1.0.0", str(i), "c", timeout, 800.0) for i in range(10)]
        assert log.record("other", "1.0.0", "x", "c", timeout, 1.0), "another model has its own budget"
        clock.now += 0.5  # one line's worth of tokens
        assert log.record("m", "1.0.0", "10", "c", timeout, 800.0)
        assert not log.record("m", "1.0.0", "11", "c", timeout, 800.0)
    assert logged == [True, True] + [False] * 8
    last_of_m = [r for r in caplog.records if r.ruth["model_id"] == "m"][-1]
    assert last_of_m.ruth["suppressed"] == 8 and last_of_m.ruth["phase"] == "deadline"


def test_failure_log_is_silent_when_turned_off(caplog):
    with caplog.at_level(logging.WARNING, logger="sidecar.requests"):
        assert not FailureLog(per_s=0).record("m", "1", "f", "c", RequestTimeout("late"), 1.0)
    assert caplog.records == []
