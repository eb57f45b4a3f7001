"""What the sidecar costs in front of Triton, measured in one run on one embedded tritonserver.

The same ~100 KB JPEG requests go

* ``sidecar``: through the sidecar (its own process): unary ``Infer``, and ``InferStream``;
* ``direct``: straight to Triton with ``tritonclient.grpc.aio``: unary ``infer``, and
  ``stream_infer`` for the stream case;
* ``inproc``: to the plugin called in-process (decode + infer, no server at all);

at 1 and 16 requests in flight (unary: 16 concurrent calls over 4 client processes; stream: 4
camera streams x 4 in flight, one process each), for two models. At 1 in flight one client
alternates the paths request by request (direct, sidecar, and ``floor``: a forwarder that does
nothing but forward, ``benchmarks/floor_forwarder.py``), so that every path sees the same machine
at the same moment; the added latency is also reported as the median of the paired differences.
Direct goes first in every turn and sidecar and floor swap places every other turn (``--fixed-order``
keeps direct, sidecar, floor), since the path right after direct measured slower for the client's
sake alone.
The models:

* ``trivial``: a generated plugin doing next to nothing (the wrapper still decodes the JPEG);
* ``bare``: a hand-written Python-backend model that does not decode (a few µs of work), where the
  hop dominates everything;
* ``real`` (with ``--plugin``): a real plugin folder, e.g. person_detection.

Reported: p50/p99 latency, frames/s, the sidecar's CPU ms per request (from /proc of the sidecar
process), and the ratios sidecar/direct. Load clients run in their own processes; configurations
alternate within each round to spread machine noise. Results also go to
``benchmarks/results/bench_sidecar.json``.

    .venv/bin/python benchmarks/bench_sidecar.py [--duration 5] [--warmup 1] [--rounds 2]
        [--models trivial bare real] [--plugin ai/models/person_detection/1.0.0]
        [--concurrency 1 16] [--micro]
    .venv/bin/python benchmarks/bench_sidecar.py --raw [--raw-sizes 640x480 1920x1080] [--in-flight 4]

``--raw`` measures raw frames instead: by value and by reference (shared memory), through the
sidecar and straight to Triton (by value and with Triton's shared memory), see
``benchmarks/raw_frames.py``; results go to ``benchmarks/results/bench_sidecar_raw.json``.

``--micro`` also prints the per-frame costs of the hot path's pieces (header parse, json -> Struct).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import raw_frames  # noqa: E402
from sidecar_clients import client_main  # noqa: E402

from ruthgen.embedded import EmbeddedTriton  # noqa: E402
from ruthgen.manifest import dumps, load_manifest  # noqa: E402
from ruthgen.writer import build_repository  # noqa: E402
from sidecar.process import SidecarProcess  # noqa: E402

VERSION = "1.0.0"
MODELS = {"trivial": "bench_sc_trivial", "bare": "bench_sc_bare"}
VERSIONS = {"trivial": VERSION, "bare": VERSION}
RESULTS = ROOT / "benchmarks" / "results" / "bench_sidecar.json"

TRIVIAL_YAML = """\
model_id: bench_sc_trivial
version: "1.0.0"
display_name: Sidecar benchmark, trivial plugin
input: {type: frame, format: jpeg}
output:
  schema:
    label: {type: string}
    score: {type: float}
"""
TRIVIAL_INFERENCE = """\
def load(context):
    return None


def infer(state, frame):
    return {"label": "ok", "score": 0.5}
"""
BARE_CONFIG = """\
backend: "python"
max_batch_size: 0
input [{ name: "FRAME" data_type: TYPE_UINT8 dims: [-1] }]
output [{ name: "RESULT" data_type: TYPE_STRING dims: [1] }]
instance_group [{ kind: KIND_CPU count: 1 }]
"""
BARE_MODEL = """\
import numpy as np
import triton_python_backend_utils as pb_utils

RESULT = np.array([b'{"label": "ok", "score": 0.5}'], dtype=object)


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("RESULT", RESULT)]) for _ in requests]
"""


# ---- setup -------------------------------------------------------------------------------------
def make_jpeg(target_bytes: int = 100_000) -> bytes:
    """A 640x480 photo-like JPEG of about ``target_bytes``."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:480, 0:640]
    base = np.stack([x / 640 * 255, y / 480 * 255, (x + y) / 1120 * 255], axis=-1)
    image = np.clip(base + rng.normal(0, 18, base.shape), 0, 255).astype(np.uint8)
    best = b""
    for quality in range(95, 10, -5):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        best = buffer.getvalue()
        if len(best) <= target_bytes * 1.05:
            break
    return best


def build(workdir: Path, real_plugin: Path | None = None) -> Path:
    models = workdir / "models"
    if real_plugin is not None:  # a real plugin folder <model_id>/<version>, copied as it is
        model_id, version = real_plugin.resolve().parent.name, real_plugin.resolve().name
        shutil.copytree(real_plugin, models / model_id / version)
        MODELS["real"] = model_id
        VERSIONS["real"] = version
    plugin = models / "bench_sc_trivial" / VERSION
    plugin.mkdir(parents=True)
    (plugin / "model.yaml").write_text(TRIVIAL_YAML)
    (plugin / "inference.py").write_text(TRIVIAL_INFERENCE)
    (plugin / "weights").mkdir()
    repo = workdir / "repo"
    build_repository(models, repo)
    # the bare model is hand-written (no wrapper); the sidecar learns of it from a manifest record
    bare = repo / f"bench_sc_bare__{VERSION}"
    (bare / "1").mkdir(parents=True)
    (bare / "config.pbtxt").write_text(BARE_CONFIG)
    (bare / "1" / "model.py").write_text(BARE_MODEL)
    manifest = load_manifest(repo)
    assert manifest is not None
    trivial = next(m for m in manifest["models"] if m["model_id"] == "bench_sc_trivial")
    name = f"bench_sc_bare__{VERSION}"
    contract = {**trivial["contract"], "model_id": "bench_sc_bare"}
    manifest["models"].append(
        {**trivial, "model_id": "bench_sc_bare", "triton_name": name, "path": name, "contract": contract}
    )
    (repo / "ruth-manifest.json").write_text(dumps(manifest))
    return repo


# ---- in-process plugin -------------------------------------------------------------------------
def inprocess(jpeg: bytes, seconds: float = 2.0) -> dict[str, float]:
    """The plugin called in-process: infer alone, and decode + infer (as the wrapper does)."""
    namespace: dict[str, Any] = {}
    exec(TRIVIAL_INFERENCE, namespace)
    state = namespace["load"](None)
    infer = namespace["infer"]

    def decode(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))

    out = {}
    for label, call in (
        ("infer", lambda: infer(state, None)),
        ("decode+infer", lambda: infer(state, decode(jpeg))),
    ):
        samples = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            began = time.perf_counter()
            call()
            samples.append(time.perf_counter() - began)
        out[label] = statistics.median(samples) * 1000
    return out


# ---- orchestration -----------------------------------------------------------------------------
def run_config(
    spec: dict[str, Any], processes: int, duration: float, warmup: float, sidecar: SidecarProcess
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    ready: mp.Queue = ctx.Queue()
    go = ctx.Event()
    window = ctx.Array("d", 2)
    workers = [
        ctx.Process(target=client_main, args=(spec, ready, go, window, queue)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:  # every client has started and imported its libraries
        ready.get(timeout=120)
    start_at = time.perf_counter() + warmup  # perf_counter is CLOCK_MONOTONIC: shared by the processes
    end_at = start_at + duration
    window[0], window[1] = start_at, end_at
    go.set()
    while time.perf_counter() < start_at:
        time.sleep(0.001)
    cpu_before = sidecar.cpu_seconds()
    time.sleep(max(0.0, end_at - time.perf_counter()))
    cpu_after = sidecar.cpu_seconds()
    answers = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
    cpu_s = cpu_after - cpu_before
    if spec["path"] == "paired":  # one client, the paths taking turns: a row per path
        (paired,) = answers
        rows = {
            path: summarize(values, sum(values), cpu_s if path == "sidecar" else float("nan"))
            for path, values in paired.items()
        }
        for path in rows:
            if path != "direct":
                differences = [b - a for a, b in zip(paired["direct"], paired[path], strict=True)]
                added = statistics.median(differences) * 1000 if differences else float("nan")
                rows[path]["paired_added_ms"] = added
        return rows
    return summarize([x for answer in answers for x in answer], duration, cpu_s)


def summarize(latencies: list[float], seconds: float, sidecar_cpu_s: float) -> dict[str, Any]:
    """p50/p99, frames/s over ``seconds`` (at 1 in flight: the time spent on that path), CPU/request."""
    latencies = sorted(latencies)
    count = len(latencies)
    return {
        "requests": count,
        "fps": count / seconds if seconds else float("nan"),
        "p50_ms": latencies[count // 2] * 1000 if count else float("nan"),
        "p99_ms": latencies[min(count - 1, int(count * 0.99))] * 1000 if count else float("nan"),
        "sidecar_cpu_ms_per_request": sidecar_cpu_s * 1000 / count if count else float("nan"),
    }


def shape(concurrency: int, mode: str) -> tuple[int, int]:
    """(client processes, in flight per process) for a total concurrency."""
    if concurrency == 1:
        return 1, 1
    processes = 4 if concurrency >= 4 else 1
    return processes, concurrency // processes


def micro(jpeg: bytes) -> None:
    import timeit

    from google.protobuf import struct_pb2

    from sidecar.request.images import jpeg_size

    result = json.dumps(
        {
            "detections": [{"label": "person", "confidence": 0.93, "bbox": [10, 20, 30, 40]}],
            "count": 1,
            "event": "none",
        }
    ).encode()

    def pil_header() -> tuple[int, int]:
        with Image.open(io.BytesIO(jpeg)) as image:
            return image.size

    def struct_update() -> struct_pb2.Struct:
        message = struct_pb2.Struct()
        message.update(json.loads(result))
        return message

    def struct_parse() -> struct_pb2.Struct:
        from google.protobuf import json_format

        return json_format.Parse(result, struct_pb2.Struct())

    for label, fn in (
        ("header: sidecar.request.images.jpeg_size", lambda: jpeg_size(jpeg)),
        ("header: Pillow lazy Image.open", pil_header),
        ("result: Struct.update(json.loads)", struct_update),
        ("result: json_format.Parse", struct_parse),
    ):
        n = 20000  # CPU time, so that other processes on the machine do not inflate it
        print(f"  {label:42s} {timeit.timeit(fn, number=n, timer=time.process_time) / n * 1e6:7.2f} µs CPU")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=None, choices=[*sorted(MODELS), "real"])
    parser.add_argument(
        "--plugin",
        type=Path,
        help="a real plugin version folder (e.g. ai/models/person_detection/1.0.0): 'real'",
    )
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--micro", action="store_true")
    parser.add_argument(
        "--no-floor", dest="floor", action="store_false",
        help="do not run benchmarks/floor_forwarder.py beside the sidecar at 1 in flight",
    )  # fmt: skip
    parser.add_argument(
        "--fixed-order", action="store_true",
        help="at 1 in flight, every turn in one order (direct, sidecar, floor) instead of alternating "
        "the forwarders' order turn by turn",
    )  # fmt: skip
    parser.add_argument("--raw", action="store_true", help="raw frames by value and by reference instead")
    sizes = list(raw_frames.SIZES)
    parser.add_argument("--raw-sizes", nargs="+", default=sizes, choices=sizes)
    parser.add_argument("--in-flight", type=int, default=4, help="--raw: requests in flight for throughput")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.raw:
        return raw_main(args)
    args.json = args.json or RESULTS

    jpeg = make_jpeg()
    workdir = Path(tempfile.mkdtemp(prefix="bench-sidecar-"))
    jpeg_path = workdir / "frame.jpg"
    jpeg_path.write_bytes(jpeg)
    print(
        f"frame: 640x480 JPEG, {len(jpeg)} bytes; machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores"
    )
    if args.micro:
        micro(jpeg)
    results: dict[str, list[dict[str, Any]]] = {}
    if args.models is None:
        args.models = ["trivial", "bare", *(["real"] if args.plugin else [])]
    if "real" in args.models and args.plugin is None:
        parser.error("--models real needs --plugin")
    repo = build(workdir, args.plugin)
    names = [f"{MODELS[m]}__{VERSIONS[m]}" for m in args.models]
    try:
        with EmbeddedTriton(repo, load_models=names, log_path=workdir / "triton.log") as triton:
            sidecar = SidecarProcess(
                triton.grpc_url,
                repo,
                port=0,
                log_path=workdir / "sidecar.log",
                extra_args=["--log-level", "WARNING", "--http-port", "0", "--no-calibrate"],
            ).start()
            floor = None
            floor_address: dict[str, str] = {}
            if args.floor:
                floor = subprocess.Popen(
                    [sys.executable, str(ROOT / "benchmarks" / "floor_forwarder.py"), triton.grpc_url],
                    stdout=subprocess.PIPE,
                )
                floor_address = {"floor": f"127.0.0.1:{int(floor.stdout.readline())}"}  # type: ignore[union-attr]
            try:
                for round_index in range(args.rounds):
                    for model in args.models:
                        for concurrency in args.concurrency:
                            for mode in ("unary", "stream"):
                                processes, in_flight = shape(concurrency, mode)
                                spec = {
                                    "mode": mode,
                                    "model": MODELS[model],
                                    "version": VERSIONS[model],
                                    "in_flight": in_flight,
                                    "jpeg": str(jpeg_path),
                                    "address": sidecar.address,
                                    "addresses": {"sidecar": sidecar.address, **floor_address},
                                    "triton": triton.grpc_url,
                                    "alternate": not args.fixed_order,
                                }
                                base = f"{model}/{mode}/c{concurrency}"
                                if concurrency == 1:
                                    paired = {**spec, "path": "paired"}
                                    rows = run_config(paired, 1, args.duration, args.warmup, sidecar)
                                else:
                                    rows = {
                                        path: run_config({**spec, "path": path}, processes, args.duration,
                                                         args.warmup, sidecar)
                                        for path in ("direct", "sidecar")
                                    }  # fmt: skip
                                for path, row in rows.items():
                                    results.setdefault(f"{base}/{path}", []).append(row)
                                    added = row.get("paired_added_ms")
                                    print(
                                        f"round {round_index + 1} {base + '/' + path:28s} "
                                        f"p50 {row['p50_ms']:6.2f} ms  "
                                        f"p99 {row['p99_ms']:6.2f} ms  {row['fps']:7.0f} fps  "
                                        f"sidecar {row['sidecar_cpu_ms_per_request']:.3f} ms CPU/req"
                                        + (f"  paired {added:+.3f} ms" if added is not None else ""),
                                        flush=True,
                                    )
            finally:
                sidecar.stop()
                if floor is not None:
                    floor.terminate()
                    floor.wait(10)
        inproc = inprocess(jpeg)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(results, inproc, args)
    return 0


def raw_main(args) -> int:
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    workdir = Path(tempfile.mkdtemp(prefix="bench-sidecar-raw-"))
    try:
        results = raw_frames.run(
            workdir, args.raw_sizes, args.rounds, args.duration, args.warmup, args.in_flight
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    raw_frames.report(results, args.in_flight)
    path = args.json or RESULTS.with_name("bench_sidecar_raw.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"raw": results, "duration_s": args.duration, "rounds": args.rounds,
                                "in_flight": args.in_flight}, indent=2))
    print(f"wrote {path}")
    return 0


def report(results: dict[str, list[dict[str, Any]]], inproc: dict[str, float], args) -> None:
    print(
        "\nmedian over rounds; ratios are sidecar vs direct within the same mode; at c1 the paths take"
        "\nturns request by request: 'paired' is the median of (sidecar - direct) per turn, 'floor +'"
        "\nthe same for benchmarks/floor_forwarder.py"
    )
    print(
        f"{'model/mode/concurrency':24s} {'direct p50':>10s} {'sidecar p50':>11s} {'+p50':>7s} "
        f"{'paired':>7s} {'floor +':>7s} {'direct fps':>10s} {'sidecar fps':>11s} {'ratio':>6s} "
        f"{'sc CPU/req':>10s}"
    )
    summary = []
    for model in args.models:
        for concurrency in args.concurrency:
            for mode in ("unary", "stream"):
                base = f"{model}/{mode}/c{concurrency}"
                direct, side = results[f"{base}/direct"], results[f"{base}/sidecar"]

                def med(rows, key):
                    return statistics.median(r[key] for r in rows)

                row = {
                    "config": base,
                    "direct_p50_ms": med(direct, "p50_ms"),
                    "sidecar_p50_ms": med(side, "p50_ms"),
                    "direct_p99_ms": med(direct, "p99_ms"),
                    "sidecar_p99_ms": med(side, "p99_ms"),
                    "direct_fps": med(direct, "fps"),
                    "sidecar_fps": med(side, "fps"),
                    "sidecar_cpu_ms_per_request": med(side, "sidecar_cpu_ms_per_request"),
                }
                row["added_p50_ms"] = row["sidecar_p50_ms"] - row["direct_p50_ms"]
                row["throughput_ratio"] = row["sidecar_fps"] / row["direct_fps"]
                nan = float("nan")
                row["paired_added_ms"] = med(side, "paired_added_ms") if "paired_added_ms" in side[0] else nan
                floor = results.get(f"{base}/floor")
                row["floor_paired_added_ms"] = med(floor, "paired_added_ms") if floor else nan
                summary.append(row)
                print(
                    f"{base:24s} {row['direct_p50_ms']:8.2f}ms {row['sidecar_p50_ms']:9.2f}ms "
                    f"{row['added_p50_ms']:+6.2f} {row['paired_added_ms']:+7.2f} "
                    f"{row['floor_paired_added_ms']:+7.2f} "
                    f"{row['direct_fps']:10.0f} {row['sidecar_fps']:11.0f} "
                    f"{row['throughput_ratio']:6.2f} {row['sidecar_cpu_ms_per_request']:8.3f}ms"
                )
    infer_us, full_ms = inproc["infer"] * 1000, inproc["decode+infer"]
    print(f"in-process plugin: infer {infer_us:.1f} µs, decode+infer {full_ms:.2f} ms")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "runs": results,
                "summary": summary,
                "inprocess_ms": inproc,
                "duration_s": args.duration,
                "rounds": args.rounds,
            },
            indent=2,
        )
    )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    raise SystemExit(main())
