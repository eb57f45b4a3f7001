"""Per-phase time limits: a plugin stuck in Python code is interrupted and the request gets TIMEOUT."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
from ruth_deadline import Deadlines, PhaseTimeout
from ruth_errors import LoadError, RuthError
from ruth_runtime import phase_timeouts
from wrapper_testlib import request, solid

STUCK = {
    "inference.py": """
        import time

        def load(context):
            return None

        def infer(state, frame):
            mode = int(frame.image[0, 0, 0])
            if mode == 1:
                while True:
                    pass
            if mode == 2:
                time.sleep(30)
            if mode == 3:
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    try:
                        time.sleep(0.01)
                    except BaseException:
                        pass
            return {"label": "done", "score": 1.0}
    """
}
FAST = {"RUTH_TIMEOUT_INFERENCE_MS": "200"}


def frame(mode: int):
    return request(solid(8, 8, (mode, 0, 0)))


@pytest.mark.parametrize(("mode", "what"), [(1, "busy loop"), (2, "time.sleep")])
def test_runtime_answers_timeout_and_keeps_serving_when_infer_is_stuck(runtime, mode, what):
    rt = runtime(STUCK, environ=FAST, input={"format": "raw_rgb"})
    started = time.monotonic()
    stuck, after = rt.execute([frame(mode), frame(0)])
    elapsed = time.monotonic() - started
    assert isinstance(stuck, RuthError), what
    assert str(stuck) == "[RUTH:TIMEOUT] infer: exceeded 200 ms"
    assert json.loads(after) == {"label": "done", "score": 1.0}
    assert elapsed < 10.0  # interrupted at its 200 ms limit, not left to its 30 s (or endless) work


def test_runtime_answers_timeout_when_the_plugin_swallows_the_interruption(runtime):
    rt = runtime(STUCK, environ=FAST, input={"format": "raw_rgb"})
    (outcome,) = rt.execute([frame(3)])
    assert isinstance(outcome, RuthError) and outcome.code == "TIMEOUT"


def test_timeouts_come_from_defaults_then_model_yaml_then_environment():
    contract = {"timeouts": {"preprocess_ms": 300, "inference_ms": 7000, "postprocess_ms": 1000}}
    assert phase_timeouts({}, {}) == {"preprocess": 1.0, "infer": 5.0, "postprocess": 1.0}
    assert phase_timeouts(contract, {}) == {"preprocess": 0.3, "infer": 7.0, "postprocess": 1.0}
    env = {"RUTH_TIMEOUT_INFERENCE_MS": "250", "RUTH_TIMEOUT_POSTPROCESS_MS": "soon"}
    assert phase_timeouts(contract, env) == {"preprocess": 0.3, "infer": 0.25, "postprocess": 1.0}


def test_load_fails_when_warmup_exceeds_its_limit(runtime):
    files = {
        "inference.py": """
            def load(context):
                return None

            def infer(state, frame):
                while True:
                    pass
        """
    }
    with pytest.raises(LoadError) as info:
        runtime(files, environ={"RUTH_WARMUP_TIMEOUT_MS": "300", "RUTH_TIMEOUT_INFERENCE_MS": "100"})
    assert str(info.value) == "[RUTH:LOAD_FAILED] warmup.infer: exceeded 300 ms"


def test_load_fails_when_load_exceeds_its_limit(runtime):
    files = {
        "inference.py": "import time\ndef load(c):\n    time.sleep(30)\ndef infer(s, f):\n    return {}\n"
    }
    with pytest.raises(LoadError) as info:
        runtime(files, environ={"RUTH_LOAD_TIMEOUT_MS": "200"})
    assert str(info.value) == "[RUTH:LOAD_FAILED] load: exceeded 200 ms"


def test_deadline_interrupts_a_worker_thread_with_the_watchdog():
    deadlines = Deadlines()
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            with deadlines.limit(0.2):
                while True:
                    pass
        except PhaseTimeout:
            outcome["timeout"] = True
        # a finished phase leaves nothing pending behind it
        with deadlines.limit(1.0) as limit:
            time.sleep(0.01)
        time.sleep(1.2)
        outcome["clean"] = not limit.fired

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(timeout=30)
    deadlines.close()
    assert outcome == {"timeout": True, "clean": True}


def test_deadline_restores_an_outer_alarm_timer():
    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        with Deadlines().limit(5.0):
            time.sleep(0.05)
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < remaining < 0.96  # what was left of it, the phase's time taken off
        deadline = time.monotonic() + 30
        while not fired and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fired == [1]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
