"""What the kernel's confinement costs the reference plugins: load time and per-request latency.

Each round, two embedded tritonservers start on the same generated repository of the reference
plugins, one with ``RUTH_ISOLATION=guard`` (the audit-hook guard alone) and one with
``RUTH_ISOLATION=kernel`` (each stub confines itself with Landlock before the plugin is imported;
which one starts first swaps every round, and both stop at its end). The servers load
every model in turns (timed ``load_model``; the order swaps every round), then each model answers
``--requests`` sequential requests per server through ``tritonclient.grpc``, request by request
in turns, so that both modes see the same moment's load on a noisy machine. Reported per model:
the median load time and the median request latency of each mode, and kernel/guard ratios. Then
the one kind of call whose cost Landlock changes: an open+close of a file in a plugin's folder,
20,000 times in a confined and an unconfined child process, in turns.

    .venv/bin/python benchmarks/bench_isolation.py [--rounds 5] [--requests 40]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ruthgen" / "wrapper"))

import ruth_confine  # noqa: E402

from ruthgen.embedded import EmbeddedTriton  # noqa: E402
from ruthgen.writer import build_repository  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "bench_isolation.json"
#: reference plugins a request can reach without the sidecar: frames, and a temporal one (a sequence)
MODELS = {
    "person_detection__1.0.0": "frame",
    "scene_brightness__1.0.0": "frame",
    "fire_detection__2.1.0": "temporal",
}
MODES = ("guard", "kernel")
SAID = {"guard": "isolation: guard (RUTH_ISOLATION=guard)", "kernel": "isolation: kernel ("}  # in the log


def machine() -> str:
    abi, why = ruth_confine.landlock_abi()
    landlock = f"Landlock ABI {abi}" if abi else f"no Landlock ({why})"
    system = f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}"
    return f"{system}, {landlock}, Python {platform.python_version()}"


def jpeg() -> np.ndarray:
    from skimage import data

    out = io.BytesIO()
    Image.fromarray(data.astronaut()).save(out, format="JPEG", quality=90)
    return np.frombuffer(out.getvalue(), dtype=np.uint8)


def batched(repository: Path, name: str) -> bool:
    config = (repository / name / "config.pbtxt").read_text()
    found = re.search(r"^max_batch_size:\s*(\d+)", config, re.M)
    return bool(found and int(found.group(1)) > 0)


def request(client: Any, name: str, frame: np.ndarray, index: int, sequence: int) -> float:
    tensor = grpcclient.InferInput("FRAME", list(frame.shape), "UINT8")
    tensor.set_data_from_numpy(frame)
    extra: dict[str, Any] = {}
    if MODELS[name] == "temporal":
        extra = {"sequence_id": sequence, "sequence_start": index == 0}
    started = time.perf_counter()
    result = client.infer(
        name, [tensor], parameters={"camera_id": "bench", "frame_id": str(index)}, client_timeout=60, **extra
    )
    took = (time.perf_counter() - started) * 1000.0
    json.loads(result.as_numpy("RESULT").reshape(-1)[0])
    return took


Samples = dict[str, dict[str, list[float]]]  # mode -> model -> milliseconds


def start_servers(work: Path, round_index: int) -> dict[str, EmbeddedTriton]:
    """Two servers, one per mode; which of the two starts first swaps every round."""
    servers: dict[str, EmbeddedTriton] = {}
    os.environ["RUTH_SCRATCH_DIR"] = str(work / "scratch")
    try:
        for mode in MODES if round_index % 2 == 0 else MODES[::-1]:
            os.environ["RUTH_ISOLATION"] = mode
            log = work / f"triton-{mode}-{round_index}.log"
            servers[mode] = EmbeddedTriton(work / "repository", load_models=[], log_path=log).start()
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def measure(work: Path, rounds: int, requests: int) -> tuple[Samples, Samples]:
    frame = jpeg()
    loads: Samples = {m: {n: [] for n in MODELS} for m in MODES}
    latency: Samples = {m: {n: [] for n in MODELS} for m in MODES}
    for round_index in range(rounds):
        servers = start_servers(work, round_index)
        clients = {mode: grpcclient.InferenceServerClient(servers[mode].grpc_url) for mode in MODES}
        try:
            for mode in MODES if round_index % 2 == 0 else MODES[::-1]:
                for name in MODELS:
                    started = time.perf_counter()
                    servers[mode].load(name, timeout_s=300)
                    loads[mode][name].append((time.perf_counter() - started) * 1000.0)
            for name in MODELS:
                data = frame[None, :] if batched(work / "repository", name) else frame
                for index in range(requests):  # the two modes in turns, request by request
                    for mode in MODES if index % 2 == 0 else MODES[::-1]:
                        sample = request(clients[mode], name, data, index, 1000 + round_index)
                        latency[mode][name].append(sample)
            for mode, said in SAID.items():
                assert said in servers[mode].log_path.read_text(errors="replace"), f"{mode}: no {said!r}"
        finally:
            for mode in MODES:
                clients[mode].close()
                servers[mode].stop()
        print(f"round {round_index + 1}/{rounds} done", flush=True)
    return loads, latency


_OPENS = """
import os, sys, time
sys.path.insert(0, {wrapper!r})
import ruth_confine
if {confined!r}:
    rules = ruth_confine.stub_rules({folder!r}, {folder!r}, {scratch!r}, False)
    assert ruth_confine.confine(rules).level == "kernel"
path = os.path.join({folder!r}, "weights.bin")
started = time.perf_counter()
for _ in range({count}):
    os.close(os.open(path, os.O_RDONLY))
print((time.perf_counter() - started) / {count} * 1e6)
"""


def open_cost(work: Path, rounds: int, count: int = 20000) -> dict[str, float]:
    """Microseconds per open+close of a file in the plugin's folder: the one kind of call whose cost
    Landlock changes (a request that opens no file pays nothing), confined and not, in child
    processes taking turns."""
    folder, scratch = work / "opens", work / "opens-scratch"
    folder.mkdir(exist_ok=True)
    scratch.mkdir(exist_ok=True)
    (folder / "weights.bin").write_bytes(b"0" * 4096)
    found: dict[str, list[float]] = {"guard": [], "kernel": []}
    for index in range(rounds * 2):
        for mode in MODES if index % 2 == 0 else MODES[::-1]:
            code = _OPENS.format(
                wrapper=str(ROOT / "ruthgen" / "wrapper"), confined=mode == "kernel", folder=str(folder),
                scratch=str(scratch), count=count,
            )
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            found[mode].append(float(done.stdout.strip()))
    return {mode: statistics.median(values) for mode, values in found.items()}


def summary(loads: Samples, latency: Samples) -> list[dict[str, Any]]:
    rows = []
    for name in MODELS:
        row: dict[str, Any] = {"model": name}
        for mode in MODES:
            row[f"load_ms_{mode}"] = statistics.median(loads[mode][name])
            row[f"p50_ms_{mode}"] = statistics.median(latency[mode][name])
        row["load_ratio"] = row["load_ms_kernel"] / row["load_ms_guard"]
        row["latency_ratio"] = row["p50_ms_kernel"] / row["p50_ms_guard"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args(argv)
    if ruth_confine.landlock_abi()[0] < 1:
        print("this machine's kernel cannot confine: nothing to compare", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-isolation-"))
    build_repository(ROOT / "ai" / "models", work / "repository")
    rows = summary(*measure(work, args.rounds, args.requests))
    opens = open_cost(work, args.rounds)
    report = {
        "machine": machine(), "rounds": args.rounds, "requests": args.requests, "models": rows,
        "open_close_us": opens,
    }
    print(f"machine: {report['machine']}; {args.rounds} rounds, {args.requests} requests per model in turn")
    header = ("model", "load guard", "load kernel", "ratio", "p50 guard", "p50 kernel", "ratio")
    print("{:28} {:>11} {:>12} {:>6} {:>10} {:>11} {:>6}".format(*header))
    for row in rows:
        loads_text = f"{row['load_ms_guard']:9.1f}ms {row['load_ms_kernel']:10.1f}ms {row['load_ratio']:6.3f}"
        p50_text = f"{row['p50_ms_guard']:8.2f}ms {row['p50_ms_kernel']:9.2f}ms {row['latency_ratio']:6.3f}"
        print(f"{row['model']:28} {loads_text} {p50_text}")
    ratio = opens["kernel"] / opens["guard"]
    print(f"open+close of a file in the plugin folder: {opens['guard']:.2f} us unconfined, "
          f"{opens['kernel']:.2f} us confined ({ratio:.3f}x)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
