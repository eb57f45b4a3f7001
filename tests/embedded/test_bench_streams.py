"""benchmarks/bench_streams.py runs end to end against a sidecar process (a short run with small
caps; the memory figures are not judged here, the caps and the counts are)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_streams.py"


@pytest.mark.integration
def test_bench_streams_fills_the_caps_and_the_sidecar_counts_every_refusal(tmp_path):
    out = tmp_path / "report.json"
    args = ["--streams", "60", "--connections", "2", "--batch", "20", "--max-streams", "30",
            "--max-streams-per-connection", "20", "--settle", "0.2", "--max-seconds", "120"]  # fmt: skip
    run = subprocess.run(
        [sys.executable, str(BENCH), *args, "--json", str(out)], capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    assert report["admitted"] == 30 and report["second_round_admitted"] == 30
    refused = sum(report["refused"].values()) + report["refused_reported_internal_by_client"]
    assert refused == 30 == sum(report["refused_counted_by_sidecar"].values())
    assert report["sidecar_streams_open"] == 30 and report["sidecar_stream_connections"] == 2
    assert report["sidecar_streams_open_at_end"] == 0
    assert report["open_streams_answering_after_refusals"] == "30/30"
    assert report["rss_per_open_stream_kb"] > 0
