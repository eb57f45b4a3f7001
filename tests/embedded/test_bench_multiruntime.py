"""benchmarks/bench_multiruntime.py runs end to end (three `ruthgen up`, a short run, two kills): the
throughput of both clients is measured and every frame of the failover part is answered once, without
an error. Its figures are not judged here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_multiruntime.py"


@pytest.mark.integration
def test_bench_multiruntime_measures_both_clients_and_answers_every_frame_once_across_kills(tmp_path):
    out = tmp_path / "report.json"
    args = ["--duration", "1", "--rounds", "1", "--kills", "2", "--cameras", "6", "--json", str(out)]
    run = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    throughput, failover = report["throughput"], report["failover"]
    assert len(throughput["frames_per_s"]["single"]) == 1 and len(throughput["frames_per_s"]["fleet"]) == 1
    assert throughput["median_single"] > 0 and throughput["median_fleet"] > 0
    assert failover["errors"] == 0 and failover["each_frame_answered_once"] is True
    assert [k["runtime"] for k in failover["kills"]] == ["runtime-a", "runtime-b"]
    assert all(k["cameras_moved"] > 0 for k in failover["kills"])
