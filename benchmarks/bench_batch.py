"""Batches through the sidecar against the same frames sent one by one, in one run.

The reference batch plugin (``ai/models/crowd_count``, with its upstream person_detection: the
runtime runs the detector on each frame, then crowd_count once over the whole batch) is built into
a repository, served by an embedded tritonserver, and reached through the sidecar (its own
process). For each batch size B (1, 4 and 8 by default), the same B frames (640x480 JPEG scenes
with a person, ``examples/scenes.py``; each sent with a new ``frame_id``, so that no upstream result
is reused) go

* ``batch``: as one ``Infer`` request carrying the B frames (``InferenceRequest.batch``);
* ``parallel``: as B single-frame ``Infer`` requests in flight together (what a backend without
  batches would do; Triton's dynamic batcher may still merge them);

and, once per round, ``sequential``: one single-frame request after the other. Configurations
alternate within each round so that each sees the same machine; every answer is checked (one
result per frame, no error). Reported: frames/s, p50/p90 of one call (a batch, or one frame), and
the ratio of ``batch`` frames/s to ``parallel`` and to ``sequential``. Results also go to
``benchmarks/results/bench_batch.json``.

    .venv/bin/python benchmarks/bench_batch.py [--sizes 1 4 8] [--duration 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))

import scenes  # noqa: E402
from bench_models import machine  # noqa: E402

from ruthgen.embedded import EmbeddedTriton  # noqa: E402
from ruthgen.writer import build_repository  # noqa: E402
from sidecar.client import AIRuntimeClient, batch_frame, pb  # noqa: E402
from sidecar.process import SidecarProcess  # noqa: E402

MODEL, VERSION = "crowd_count", "1.0.0"
UPSTREAM = ("person_detection", "1.0.0")
RESULTS = ROOT / "benchmarks" / "results" / "bench_batch.json"

Call = Callable[[], Awaitable[int]]  # sends once, returns the frames answered
SENT = itertools.count()  # frame ids: a new one for every frame sent


def frames(count: int) -> list[bytes]:
    encoded = []
    for rgb, _ in scenes.upright_sequence("camera", frames=count):
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        encoded.append(data.tobytes())
    return encoded


def build(workdir: Path) -> Path:
    models = workdir / "models"
    for model_id, version in ((MODEL, VERSION), UPSTREAM):
        shutil.copytree(ROOT / "ai" / "models" / model_id / version, models / model_id / version)
    result = build_repository(models, workdir / "model_repository")
    if not all(report.valid for report in result.reports):
        raise SystemExit(f"{MODEL} did not build: {[r.to_dict() for r in result.reports]}")
    return workdir / "model_repository"


def calls(client: AIRuntimeClient, jpegs: list[bytes], size: int) -> dict[str, Call]:
    chosen = jpegs[:size]

    async def one(index: int) -> int:
        response = await client.infer(
            MODEL, VERSION, chosen[index], frame_id=f"f{next(SENT)}", camera_id=f"cam-{index}"
        )
        if response.HasField("error"):
            raise RuntimeError(f"frame {index}: {response.error}")
        return 1

    async def as_batch() -> int:
        batch = [batch_frame(data, frame_id=f"f{next(SENT)}", camera_id=f"cam-{i}")
                 for i, data in enumerate(chosen)]
        response = await client.infer_batch(MODEL, VERSION, batch)
        failed = [r.error for r in response.batch if r.HasField("error")]
        if response.HasField("error") or failed or len(response.batch) != size:
            raise RuntimeError(f"batch of {size}: {response.error or failed or len(response.batch)}")
        return size

    async def parallel() -> int:
        return sum(await asyncio.gather(*(one(i) for i in range(size))))

    async def sequential() -> int:
        return sum([await one(i) for i in range(size)])

    return {"batch": as_batch, "parallel": parallel, "sequential": sequential}


async def measure(call: Call, duration_s: float, warmup_s: float) -> dict[str, Any]:
    end_warmup = time.perf_counter() + warmup_s
    while time.perf_counter() < end_warmup:
        await call()
    latencies: list[float] = []
    answered = 0
    start = time.perf_counter()
    while (now := time.perf_counter()) - start < duration_s:
        answered += await call()
        latencies.append(time.perf_counter() - now)
    elapsed = time.perf_counter() - start
    return {"frames": answered, "seconds": elapsed, "latencies_ms": [x * 1000 for x in latencies]}


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = sorted(x for s in samples for x in s["latencies_ms"])
    frames_total = sum(s["frames"] for s in samples)
    seconds = sum(s["seconds"] for s in samples)
    return {
        "frames": frames_total,
        "fps": round(frames_total / seconds, 1),
        "call_p50_ms": round(statistics.median(latencies), 2),
        "call_p90_ms": round(latencies[int(0.9 * (len(latencies) - 1))], 2),
        "calls": len(latencies),
    }


async def run(
    address: str, sizes: list[int], duration_s: float, warmup_s: float, rounds: int
) -> dict[str, Any]:
    jpegs = frames(max(sizes))
    samples: dict[str, list[dict[str, Any]]] = {}
    async with AIRuntimeClient(address) as client:
        await wait_ready(client)
        for round_index in range(rounds):
            plan = [("sequential", calls(client, jpegs, 1)["sequential"])]
            for size in sizes:
                by_kind = calls(client, jpegs, size)
                plan += [(f"batch/{size}", by_kind["batch"]), (f"parallel/{size}", by_kind["parallel"])]
            if round_index % 2:
                plan.reverse()  # spread drift in the machine's load over every configuration
            for name, call in plan:
                samples.setdefault(name, []).append(await measure(call, duration_s, warmup_s))
    return {name: summary(runs) for name, runs in samples.items()}


async def wait_ready(client: AIRuntimeClient, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        status = {m.model_id: m for m in (await client.status()).models}
        model = status.get(MODEL)
        if model is not None and model.state == pb.READY and not model.waiting_for:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{MODEL} is not READY: {model}")
        await asyncio.sleep(0.2)


def report(results: dict[str, Any], sizes: list[int]) -> list[dict[str, Any]]:
    base = results["sequential"]["fps"]
    print(f"one by one, sequential: {base} frames/s, p50 {results['sequential']['call_p50_ms']} ms per frame")
    print(f"{'B':>3} {'batch fps':>10} {'parallel fps':>13} {'batch/parallel':>15} {'batch/sequential':>17} "
          f"{'batch call p50/p90 ms':>22} {'parallel call p50/p90 ms':>25}")
    rows = []
    for size in sizes:
        batch, parallel = results[f"batch/{size}"], results[f"parallel/{size}"]
        row = {
            "batch_size": size, "batch": batch, "parallel": parallel,
            "batch_over_parallel": round(batch["fps"] / parallel["fps"], 2),
            "batch_over_sequential": round(batch["fps"] / base, 2),
        }
        rows.append(row)
        print(f"{size:>3} {batch['fps']:>10} {parallel['fps']:>13} {row['batch_over_parallel']:>15} "
              f"{row['batch_over_sequential']:>17} {batch['call_p50_ms']:>11}/{batch['call_p90_ms']:<10} "
              f"{parallel['call_p50_ms']:>12}/{parallel['call_p90_ms']:<12}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per configuration and round")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()

    print(f"model: {MODEL} {VERSION}; frames: 640x480 JPEG; machine: {machine()}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        repo = build(workdir)
        with EmbeddedTriton(repo, load_models=[], log_path=workdir / "triton.log") as triton:
            sidecar = SidecarProcess(
                triton.grpc_url, repo, port=0, log_path=workdir / "sidecar.log",
                extra_args=["--log-level", "WARNING", "--http-port", "0", "--no-calibrate"],
            ).start()  # fmt: skip
            try:
                results = asyncio.run(
                    run(sidecar.address, args.sizes, args.duration, args.warmup, args.rounds)
                )
            finally:
                sidecar.stop()
        rows = report(results, args.sizes)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(
            {"machine": machine(), "model": f"{MODEL} {VERSION}", "duration_s": args.duration,
             "rounds": args.rounds, "sequential": results["sequential"], "sizes": rows}, indent=2))
        print(f"results: {args.json}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
