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


@pytest.mark.integration
def test_bench_sidecar_raw_compares_frames_by_value_and_by_reference_on_every_path(tmp_path):
    out = tmp_path / "raw.json"
    args = ["--raw", "--raw-sizes", "640x480", "--duration", "0.5", "--warmup", "0.2", "--rounds", "1",
            "--in-flight", "2", "--json", str(out)]
    run = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = json.loads(out.read_text())["raw"]["640x480"]
    assert set(rows) == {"direct", "direct-shm", "sidecar", "sidecar-shm", "stream-shm"}
    assert rows["direct-shm"]["added_vs_direct_shm_ms"] == 0 and rows["direct-shm"]["fps_vs_direct_shm"] == 1
    for row in rows.values():
        assert row["fps_in_flight"] > 0 and math.isfinite(row["p50_ms"])
