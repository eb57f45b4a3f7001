"""benchmarks/bench_sidecar.py runs end to end (a short smoke run; the figures are not judged here)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_sidecar.py"


@pytest.mark.integration
def test_bench_sidecar_pairs_direct_sidecar_and_floor_at_one_in_flight(tmp_path):
    out = tmp_path / "report.json"
    args = ["--duration", "1", "--warmup", "0.3", "--rounds", "1", "--models", "bare", "--concurrency", "1"]
    run = subprocess.run(
        [sys.executable, str(BENCH), *args, "--json", str(out)], capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    assert set(report["runs"]) == {
        f"bare/{mode}/c1/{path}" for mode in ("unary", "stream") for path in ("direct", "sidecar", "floor")
    }
    for mode in ("unary", "stream"):
        rows = {path: report["runs"][f"bare/{mode}/c1/{path}"][0] for path in ("direct", "sidecar", "floor")}
        counts = {row["requests"] for row in rows.values()}
        assert len(counts) == 1 and counts.pop() > 0  # the paths took turns: equal counts
        assert all(math.isfinite(rows[path]["paired_added_ms"]) for path in ("sidecar", "floor"))
        assert rows["sidecar"]["sidecar_cpu_ms_per_request"] > 0
    assert {row["config"] for row in report["summary"]} == {"bare/unary/c1", "bare/stream/c1"}
