"""benchmarks/bench_wrapper.py runs end to end (a short smoke run; the figures are not judged here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_wrapper.py"


@pytest.mark.integration
def test_bench_wrapper_reports_every_configuration_without_errors(tmp_path):
    out = tmp_path / "report.json"
    # Windows long enough for the batch plugin (~50 ms a batch) to answer on a loaded 2-core machine.
    args = ["--duration", "2", "--warmup", "0.5", "--rounds", "1", "--concurrency", "1", "2"]
    args += ["--json", str(out)]
    run = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    assert 90_000 <= report["jpeg_bytes"] <= 110_000
    assert set(report["results"]) == {
        "bench_trivial__1.0.0@1", "bench_bare@1", "bench_trivial__1.0.0@2", "bench_bare@2",
        "bench_batch__1.0.0@2", "bench_nobatch__1.0.0@2",
    }
    for figures in report["results"].values():
        assert figures["requests"] > 0 and figures["errors"] == 0
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert report["average_batch"]["bench_nobatch__1.0.0"] == 1.0
    assert "batching_throughput_gain@2" in report["ratios"]
    assert "target: the wrapper adds <= 10% at p50" in run.stdout
