"""ruthgen.progress and what feeds it: pip's output lines, tritonserver's log while it loads models."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.console import Console
from ruthgen_testlib import RecordedProgress

from ruthgen.console import RichProgress, progress_for
from ruthgen.embedded.loadlog import LoadEvent, LoadProgress, LogFollower, load_event
from ruthgen.envs import pip_step
from ruthgen.progress import PlainProgress, Progress
from tests.terminal import ANSI


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_prints_a_line_per_change_with_the_time_since_the_subject_began():
    out, clock = io.StringIO(), Clock()
    progress = PlainProgress(out, clock)
    progress.step("demo 1.0.0", "resolving", "six==1.17.0")
    clock.now += 1.25
    progress.step("demo 1.0.0", "resolving", "six==1.17.0")  # no change: no line
    progress.step("demo 1.0.0", "downloading", "six 1.17.0 (11 kB)")
    progress.step("tritonserver", "starting")
    clock.now += 2
    progress.done("demo 1.0.0", "environment built")
    progress.done("tritonserver", "did not start", ok=False)
    assert out.getvalue().splitlines() == [
        "demo 1.0.0: resolving six==1.17.0 [0.0 s]",
        "demo 1.0.0: downloading six 1.17.0 (11 kB) [1.2 s]",
        "tritonserver: starting [0.0 s]",
        "demo 1.0.0: environment built (3.2 s)",
        "tritonserver: FAILED: did not start (2.0 s)",
    ]


def test_rich_progress_draws_a_row_per_subject_with_a_tick_or_a_cross_when_done():
    out = io.StringIO()
    with RichProgress(Console(file=out, force_terminal=True, width=100, color_system="standard")) as progress:
        progress.step("demo 1.0.0", "downloading", "numpy 1.26.4 (18.3 MB)")
        progress.step("tritonserver", "starting")
        time.sleep(0.15)
        progress.done("demo 1.0.0", "environment built")
        progress.done("tritonserver", "did not start", ok=False)
    raw = out.getvalue()
    assert "\x1b[" in raw
    last = ANSI.sub("", raw).replace("\r", "\n").splitlines()[-2:]
    assert last[0].startswith("✓ demo 1.0.0") and "environment built" in last[0]
    assert re.search(r" \d+:\d\d:\d\d$", last[0]), last[0]  # the time it took
    assert last[1].startswith("✗ tritonserver") and "did not start" in last[1]


def test_progress_for_picks_rows_on_a_terminal_lines_elsewhere_and_nothing_when_quiet(tmp_path):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(progress_for(Terminal()), RichProgress)
    assert isinstance(progress_for(io.StringIO()), PlainProgress)
    quiet = progress_for(Terminal(), quiet=True)
    assert type(quiet) is Progress


@pytest.mark.parametrize(
    ("line", "step"),
    [
        ("Collecting six==1.17.0", ("resolving", "six==1.17.0")),
        ("  Downloading six-1.17.0-py2.py3-none-any.whl.metadata (1.7 kB)", None),
        ("Downloading numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl (18.3 MB)",
         ("downloading", "numpy 1.26.4 (18.3 MB)")),
        ("Using cached pillow-11.0.0-cp311-cp311-manylinux_2_28_x86_64.whl (4.4 MB)",
         ("downloading", "pillow 11.0.0 (4.4 MB, pip's cache)")),
        ("Processing /cache/_wheels/pyyaml-6.0.2-cp311-cp311-manylinux.whl", ("installing", "pyyaml 6.0.2")),
        ("Installing collected packages: six, numpy", ("installing", "six, numpy")),
        ("  Building wheel for geventhttpclient (pyproject.toml): started", ("building", "geventhttpclient")),
        ("Saved ./_wheels/six-1.17.0-py2.py3-none-any.whl", None),
        ("Successfully installed six-1.17.0", None),
    ],
)
def test_pip_step_reads_the_step_and_the_package_from_a_line_of_pips_output(line, step):
    assert pip_step(line) == step


# Lines as tritonserver 2.51 and the generated wrapper write them (seen in a `ruthgen up` log).
LOG = [
    'I1129 15:16:27.420594 26626 model_lifecycle.cc:472] "loading: sc_echo__1.0.0:1"',
    'I1129 15:16:27.420638 26626 model_lifecycle.cc:472] "loading: sc_broken_load__1.0.0:1"',
    'I1129 15:16:27.690000 26626 model.py:34] "sc_echo:1.0.0 loaded in 70 ms; warming up"',
    'I1129 15:16:27.695491 26626 model.py:34] "sc_echo:1.0.0 ready in 76 ms (warmup 0.6 ms, decoder cv2)"',
    "I1129 15:16:27.697245 26626 model_lifecycle.cc:839] \"successfully loaded 'sc_echo__1.0.0'\"",
    "E1129 15:16:27.776758 26626 model_lifecycle.cc:642] \"failed to load 'sc_broken_load__1.0.0' version 1: "
    "Internal: LoadError: [RUTH:LOAD_FAILED] load: RuntimeError: weights file is corrupt (inference.py:2)"
    '\\n\\nAt:\\n  /repo/sc_broken_load__1.0.0/1/ruth_runtime.py(193): _load_step\\n"',
    "I1129 15:16:27.776774 26626 model_lifecycle.cc:777] \"failed to load 'sc_broken_load__1.0.0'\"",
    'I1129 15:16:27.800000 26626 grpc_server.cc:2558] "Started GRPCInferenceService at 127.0.0.1:8001"',
]


CORRUPT = "LoadError: [RUTH:LOAD_FAILED] load: RuntimeError: weights file is corrupt (inference.py:2)"


def test_load_event_reads_each_models_steps_from_tritons_log():
    assert [load_event(line) for line in LOG] == [
        LoadEvent("sc_echo 1.0.0", "loading"),
        LoadEvent("sc_broken_load 1.0.0", "loading"),
        LoadEvent("sc_echo 1.0.0", "warming up", "(loaded in 70 ms)"),
        LoadEvent("sc_echo 1.0.0", "ready", "warmup 0.6 ms"),
        LoadEvent("sc_echo 1.0.0", "loaded"),
        LoadEvent("sc_broken_load 1.0.0", "failed", CORRUPT),
        None,
        None,
    ]


def test_load_progress_tells_loading_warming_up_and_ready_or_failed():
    progress = RecordedProgress()
    watcher = LoadProgress(progress)
    for line in LOG:
        watcher.line(line)
    assert progress.events == [
        ("step", "sc_echo 1.0.0", "loading in Triton", ""),
        ("step", "sc_broken_load 1.0.0", "loading in Triton", ""),
        ("step", "sc_echo 1.0.0", "warming up", "(loaded in 70 ms)"),
        ("done", "sc_echo 1.0.0", "READY, warmup 0.6 ms", "True"),
        ("done", "sc_broken_load 1.0.0", f"load failed: {CORRUPT}", "False"),
    ]


def _until(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_log_follower_reads_lines_as_they_are_written_and_again_after_the_file_is_written_anew(tmp_path):
    log = tmp_path / "t.log"
    seen: list[str] = []
    follower = LogFollower(log, seen.append, interval_s=0.02).start()  # the file does not exist yet
    try:
        time.sleep(0.1)
        with open(log, "w") as out:
            out.write("first\nsec")
            out.flush()
            _until(lambda: seen == ["first"])  # "sec" read too, held until its line ends
            out.write("ond\n")
        _until(lambda: seen == ["first", "second"])
        log.write_text("again\n")  # truncated: a server started anew
    finally:
        follower.stop()  # reads what is left
    assert seen == ["first", "second", "again"]
