"""Per-request cost of the generated wrapper, and the gain of dynamic batching, on the real server.

In one run on one embedded tritonserver:

* ``wrapper``: a trivial plugin (mean of the decoded frame) served through the generated wrapper,
  against ``bare``: a hand-written Python-backend model doing the same work (same decoder, same
  JSON result), both fed the same ~100 KB JPEG, at concurrency 1 and 16: p50/p99 latency and
  throughput. Target: the wrapper adds <= 10 % at p50.
* ``batch``: a batch plugin (a linear layer over the frames, one call per batch) with dynamic
  batching, against ``nobatch``: the same plugin without, at concurrency 16: the throughput gain.

Clients run in separate processes (one synchronous gRPC client each), so that one client's GIL
does not cap the figures. Configurations alternate within each round to spread machine noise.

    .venv/bin/python benchmarks/bench_wrapper.py [--kind cpu|gpu] [--duration 6] [--warmup 2]
        [--rounds 3] [--concurrency 1 16] [--json PATH]

``--kind gpu`` builds for the gpu target (instance_group KIND_GPU) for a run on a GPU machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from ruthgen.embedded import EmbeddedTriton
from ruthgen.manifest import valid_records
from ruthgen.writer import build_repository

TRIVIAL, BARE = "bench_trivial__1.0.0", "bench_bare"
BATCH, NOBATCH = "bench_batch__1.0.0", "bench_nobatch__1.0.0"

TRIVIAL_INFERENCE = '''\
def load(context):
    return None


def infer(state, frame):
    return {"mean": round(float(frame.image[::8, ::8].mean()), 4)}
'''

# A linear layer over a 64x64 sample of each frame, with OUTPUTS x 48 KiB of float32 weights
# (1024: 48 MiB, between MobileNetV2 and ResNet-50): the weights are read once per call, so a
# batch of N costs much less than N calls, as a network's forward pass on a CPU does.
BATCH_INFERENCE = '''\
import numpy as np

FEATURES, OUTPUTS = 64 * 64 * 3, 1024


def load(context):
    rng = np.random.default_rng(7)
    return rng.standard_normal((FEATURES, OUTPUTS), dtype=np.float32) / np.sqrt(FEATURES)


def sample(image):
    ys = np.linspace(0, image.shape[0] - 1, 64).astype(int)
    xs = np.linspace(0, image.shape[1] - 1, 64).astype(int)
    return image[np.ix_(ys, xs)].reshape(-1)


def infer(state, frames):
    x = np.stack([sample(f.image) for f in frames]).astype(np.float32) / 255.0
    scores = np.tanh(x @ state).mean(axis=1)
    return [{"score": round(float(s), 4)} for s in scores]
'''

BARE_CONFIG = """\
backend: "python"
max_batch_size: 0
input [ { name: "FRAME" data_type: TYPE_UINT8 dims: [ -1 ] } ]
output [ { name: "RESULT" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { kind: KIND_%s count: 1 } ]
"""

# The same work as the wrapper around TRIVIAL_INFERENCE, without the wrapper: decode (OpenCV when
# importable, else Pillow, to RGB), the mean, a JSON result.
BARE_MODEL = '''\
import io
import json

import numpy as np
import triton_python_backend_utils as pb_utils

try:
    import cv2
except Exception:
    cv2 = None
    from PIL import Image


def decode(data):
    if cv2 is not None:
        return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    with Image.open(io.BytesIO(data.tobytes())) as img:
        return np.array(img.convert("RGB"), dtype=np.uint8, order="C")


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            image = decode(pb_utils.get_input_tensor_by_name(request, "FRAME").as_numpy())
            result = {"mean": round(float(image[::8, ::8].mean()), 4)}
            text = json.dumps(result, separators=(",", ":"))
            out = pb_utils.Tensor("RESULT", np.array([text.encode()], dtype=np.object_))
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
'''


# --- input and repository ------------------------------------------------------------------------

def make_jpeg(target_bytes: int = 100_000, size: tuple[int, int] = (800, 600)) -> bytes:
    """A deterministic JPEG (gradient + noise) whose size is the closest to ``target_bytes``."""
    width, height = size
    rng = np.random.default_rng(2024)
    ys, xs = np.mgrid[0:height, 0:width]
    gradient = np.stack([xs * 255 / width, ys * 255 / height, (xs + ys) * 127 / (width + height)], axis=-1)
    pixels = np.clip(gradient + rng.normal(0, 24, (height, width, 3)), 0, 255).astype(np.uint8)
    best = b""
    for quality in range(5, 96):
        out = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(out, format="JPEG", quality=quality)
        if not best or abs(len(out.getvalue()) - target_bytes) < abs(len(best) - target_bytes):
            best = out.getvalue()
    return best


def _contract(model_id: str, input_type: str, schema: dict[str, Any], batch: int, delay_ms: float) -> dict:
    return {
        "schema_version": "1",
        "model_id": model_id,
        "version": "1.0.0",
        "display_name": model_id,
        "input": {"type": input_type, "format": "jpeg", "min_width": 8, "min_height": 8},
        "output": {"schema": schema},
        "hardware": {"supports_cpu": True, "supports_gpu": True, "supports_jetson": True},
        "performance": {"recommended_batch_size": batch, "max_queue_delay_ms": delay_ms},
        "entry_points": {"inference": "inference.py", "preprocess": None, "postprocess": None},
    }


def write_plugins(models: Path, max_batch: int, delay_ms: float) -> None:
    score = {"score": {"type": "float", "min": -1.0, "max": 1.0}}
    mean = {"mean": {"type": "float"}}
    plugins = {
        "bench_trivial": (_contract("bench_trivial", "frame", mean, 1, 0), TRIVIAL_INFERENCE),
        "bench_batch": (_contract("bench_batch", "batch", score, max_batch, delay_ms), BATCH_INFERENCE),
        "bench_nobatch": (_contract("bench_nobatch", "batch", score, 1, 0), BATCH_INFERENCE),
    }
    for model_id, (contract, source) in plugins.items():
        folder = models / model_id / "1.0.0"
        folder.mkdir(parents=True)
        (folder / "model.yaml").write_text(yaml.safe_dump(contract, sort_keys=False))
        (folder / "inference.py").write_text(source)


def build(workdir: Path, kind: str, max_batch: int, delay_ms: float) -> tuple[Path, dict[str, int]]:
    """The repository (generated entries + the bare model); returns it and max_batch_size by model."""
    models, repo = workdir / "models", workdir / "repo"
    write_plugins(models, max_batch, delay_ms)
    result = build_repository(models, repo, target=kind)
    records = valid_records(result.manifest)
    invalid = [r.to_dict() for r in result.reports if not r.valid]
    if invalid:
        raise SystemExit(f"benchmark plugins are invalid: {json.dumps(invalid, indent=2)}")
    bare = repo / BARE
    (bare / "1").mkdir(parents=True)
    (bare / "config.pbtxt").write_text(BARE_CONFIG % kind.upper())
    (bare / "1" / "model.py").write_text(BARE_MODEL)
    batch_sizes = {name: int(rec["triton"]["max_batch_size"]) for name, rec in records.items()}
    batch_sizes[BARE] = 0
    return repo, batch_sizes


# --- clients (separate processes) ----------------------------------------------------------------

def _request(payload: bytes, batched: bool) -> list[Any]:
    import tritonclient.grpc as grpcclient

    data = np.frombuffer(payload, dtype=np.uint8)
    data = data.reshape(1, -1) if batched else data
    frame = grpcclient.InferInput("FRAME", list(data.shape), "UINT8")
    frame.set_data_from_numpy(data)
    return [frame]


def client_worker(url: str, payload: bytes, jobs: mp.Queue, results: mp.Queue) -> None:
    """Runs jobs ``(model, batched, start_at, warmup_s, duration_s)`` until it gets None."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    outputs = [grpcclient.InferRequestedOutput("RESULT")]
    results.put("ready")
    while (job := jobs.get()) is not None:
        model, batched, start_at, warmup_s, duration_s = job
        inputs = _request(payload, batched)
        time.sleep(max(0.0, start_at - time.monotonic()))
        measure_from, end = start_at + warmup_s, start_at + warmup_s + duration_s
        latencies, errors = [], 0
        while (began := time.monotonic()) < end:
            t0 = time.perf_counter()
            try:
                client.infer(model, inputs, outputs=outputs, client_timeout=30)
            except Exception:
                errors += 1
                continue
            elapsed = time.perf_counter() - t0
            if began >= measure_from and began + elapsed <= end:
                latencies.append(elapsed)
        results.put((latencies, errors))
    client.close()


class ClientPool:
    def __init__(self, url: str, payload: bytes, size: int) -> None:
        ctx = mp.get_context("spawn")
        self.jobs, self.results = ctx.Queue(), ctx.Queue()
        self.workers = [
            ctx.Process(target=client_worker, args=(url, payload, self.jobs, self.results), daemon=True)
            for _ in range(size)
        ]
        for worker in self.workers:
            worker.start()
        for _ in self.workers:
            assert self.results.get(timeout=120) == "ready"

    def run(self, model: str, batched: bool, concurrency: int, warmup_s: float, duration_s: float) -> dict:
        start_at = time.monotonic() + 0.3
        for _ in range(concurrency):
            self.jobs.put((model, batched, start_at, warmup_s, duration_s))
        latencies: list[float] = []
        errors = 0
        for _ in range(concurrency):
            lat, err = self.results.get(timeout=warmup_s + duration_s + 120)
            latencies += lat
            errors += err
        return {"latencies": latencies, "errors": errors, "seconds": duration_s}

    def close(self) -> None:
        for _ in self.workers:
            self.jobs.put(None)
        for worker in self.workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()


# --- figures -------------------------------------------------------------------------------------

def summarize(runs: list[dict]) -> dict[str, float]:
    latencies = sorted(x for run in runs for x in run["latencies"])
    seconds = sum(run["seconds"] for run in runs)
    if not latencies:
        errors = sum(run["errors"] for run in runs)
        return dict(requests=0, errors=errors, rps=0.0, p50_ms=0.0, p99_ms=0.0, server_compute_ms=0.0,
                    rounds_rps_p50_ms=[])
    computed = sum(run["compute"][0] for run in runs)
    rounds = [
        (len(run["latencies"]) / run["seconds"], 1000 * statistics.median(run["latencies"]))
        for run in runs if run["latencies"]
    ]
    return {
        "rounds_rps_p50_ms": [(round(rps, 1), round(p50, 2)) for rps, p50 in rounds],
        "server_compute_ms": sum(run["compute"][1] for run in runs) / computed / 1e6 if computed else 0.0,
        "requests": len(latencies),
        "errors": sum(run["errors"] for run in runs),
        "rps": len(latencies) / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def machine_info(triton: EmbeddedTriton, kind: str) -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    info = {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "triton": triton.client().get_server_metadata(as_json=True).get("version"),
        "kind": kind,
    }
    if kind == "gpu":
        import subprocess

        query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
        info["gpu"] = subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip()
    return info


def compute_stats(triton: EmbeddedTriton, model: str) -> tuple[int, int]:
    """(requests, nanoseconds) the server spent in the model's execute (``compute_infer``) so far."""
    stats = triton.client().get_inference_statistics(model, as_json=True)["model_stats"][0]
    compute = stats.get("inference_stats", {}).get("compute_infer", {})
    return int(compute.get("count", 0)), int(compute.get("ns", 0))


def average_batch(triton: EmbeddedTriton, model: str) -> float:
    stats = triton.client().get_inference_statistics(model, as_json=True)["model_stats"][0]
    executions = int(stats.get("execution_count", 0))
    return int(stats.get("inference_count", 0)) / executions if executions else 0.0


def check_all_ready(triton: EmbeddedTriton, models: dict[str, int]) -> None:
    states = {m["name"]: (m["state"], m["reason"]) for m in triton.repository_index()}
    broken = {name: states.get(name) for name in models if states.get(name, ("",))[0] != "READY"}
    if broken:
        raise SystemExit(f"benchmark models did not load: {broken}\n{triton.log_tail()}")


def check_same_answer(triton: EmbeddedTriton, payload: bytes) -> None:
    client = triton.client()
    answers = {
        model: json.loads(client.infer(model, _request(payload, False)).as_numpy("RESULT").reshape(-1)[0])
        for model in (TRIVIAL, BARE)
    }
    if answers[TRIVIAL] != answers[BARE]:
        raise SystemExit(f"the wrapper and the bare model disagree: {answers}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    payload = make_jpeg(args.jpeg_bytes)
    with tempfile.TemporaryDirectory(prefix="bench-wrapper-") as tmp:
        repo, batch_sizes = build(Path(tmp), args.kind, args.max_batch, args.max_queue_delay_ms)
        log = Path(tmp) / "triton.log"
        with EmbeddedTriton(repo, load_models=sorted(batch_sizes), log_path=log) as triton:
            check_all_ready(triton, batch_sizes)
            check_same_answer(triton, payload)
            machine = machine_info(triton, args.kind)
            pool = ClientPool(triton.grpc_url, payload, max(args.concurrency))
            try:
                raw = measure(triton, pool, batch_sizes, args)
            finally:
                pool.close()
            batches = {model: average_batch(triton, model) for model in (BATCH, NOBATCH)}
    results = {key: summarize(runs) for key, runs in raw.items()}
    return {
        "machine": machine, "jpeg_bytes": len(payload), "results": results, "average_batch": batches,
        "ratios": ratios(results, args.concurrency),
    }


def measure(
    triton: EmbeddedTriton, pool: ClientPool, batch_sizes: dict[str, int], args: argparse.Namespace
) -> dict[str, list[dict]]:
    """Every configuration once per round, the order of each pair alternating between rounds."""
    raw: dict[str, list[dict]] = {}
    top = max(args.concurrency)
    for round_index in range(args.rounds):
        flip = round_index % 2 == 1
        plan = [(m, c) for c in args.concurrency for m in ((BARE, TRIVIAL) if flip else (TRIVIAL, BARE))]
        plan += [(m, top) for m in ((NOBATCH, BATCH) if flip else (BATCH, NOBATCH))]
        for model, concurrency in plan:
            before = compute_stats(triton, model)
            result = pool.run(model, batch_sizes[model] > 0, concurrency, args.warmup, args.duration)
            after = compute_stats(triton, model)
            result["compute"] = (after[0] - before[0], after[1] - before[1])
            raw.setdefault(f"{model}@{concurrency}", []).append(result)
    return raw


def ratios(results: dict[str, dict], concurrency: list[int]) -> dict[str, float]:
    out = {}
    for c in concurrency:
        wrapper, bare = results[f"{TRIVIAL}@{c}"], results[f"{BARE}@{c}"]
        out[f"wrapper_p50_overhead_pct@{c}"] = 100 * (wrapper["p50_ms"] / bare["p50_ms"] - 1)
        out[f"wrapper_p99_overhead_pct@{c}"] = 100 * (wrapper["p99_ms"] / bare["p99_ms"] - 1)
        out[f"wrapper_throughput_ratio@{c}"] = wrapper["rps"] / bare["rps"]
        extra_ms = wrapper["server_compute_ms"] - bare["server_compute_ms"]
        out[f"wrapper_execute_overhead_ms@{c}"] = extra_ms
    top = max(concurrency)
    batch, nobatch = results[f"{BATCH}@{top}"], results[f"{NOBATCH}@{top}"]
    out[f"batching_throughput_gain@{top}"] = batch["rps"] / nobatch["rps"] if nobatch["rps"] else 0.0
    return out


def print_report(report: dict[str, Any], target_pct: float) -> None:
    m = report["machine"]
    print(f"machine: {m['cpus']} CPUs ({m['cpu']}), load {m['load_average']}, Python {m['python']}, "
          f"{m['platform']}, tritonserver {m['triton']}, instances KIND_{m['kind'].upper()}"
          + (f", GPU {m['gpu']}" if m.get("gpu") else ""))
    print(f"input: JPEG of {report['jpeg_bytes']} bytes")
    print(
        f"{'model@concurrency':<28} {'requests':>8} {'errors':>6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'execute ms':>10}"
    )
    for key, r in report["results"].items():
        print(
            f"{key:<28} {r['requests']:>8} {r['errors']:>6} {r['rps']:>9.1f} "
            f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['server_compute_ms']:>10.2f}"
        )
    print("per round (req/s, p50 ms), to judge the noise:")
    for key, r in report["results"].items():
        print(f"  {key:<26} {r['rounds_rps_p50_ms']}")
    print("execute ms: the server's mean compute_infer per request (inside the stub, no client or gRPC)")
    print(f"average batch (server statistics): {report['average_batch']}")
    for key, value in report["ratios"].items():
        print(f"{key}: {value:.2f}")
    worst = max(v for k, v in report["ratios"].items() if k.startswith("wrapper_p50_overhead_pct"))
    verdict = "met" if worst <= target_pct else "NOT met"
    print(f"target: the wrapper adds <= {target_pct:g}% at p50: {verdict} (worst {worst:+.1f}%)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("cpu", "gpu"), default="cpu", help="instance_group kind")
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per configuration")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--max-batch", type=int, default=16, help="the batch plugin's max_batch_size")
    parser.add_argument("--max-queue-delay-ms", type=float, default=2.0)
    parser.add_argument("--jpeg-bytes", type=int, default=100_000)
    parser.add_argument("--target-pct", type=float, default=10.0)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    report = run(args)
    print_report(report, args.target_pct)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
