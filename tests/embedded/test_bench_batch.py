"""benchmarks/bench_batch.py runs end to end (a short smoke run; the figures are not judged here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_batch.py"


@pytest.mark.integration
def test_bench_batch_compares_batches_with_the_same_frames_one_by_one(tmp_path):
    out = tmp_path / "report.json"
    args = ["--sizes", "1", "3", "--duration", "0.5", "--warmup", "0.2", "--rounds", "1", "--json", str(out)]
    run = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    assert report["sequential"]["frames"] > 0
    assert [row["batch_size"] for row in report["sizes"]] == [1, 3]
    for row in report["sizes"]:
        for kind in ("batch", "parallel"):
            assert row[kind]["frames"] == row[kind]["calls"] * row["batch_size"]  # every frame answered
            assert row[kind]["fps"] > 0
        assert row["batch_over_parallel"] == round(row["batch"]["fps"] / row["parallel"]["fps"], 2)
