"""One camera frame, four models: separate models against a shared upstream, in one run.

Every camera-frame goes to person_detection, helmet_detection, fall_detection and crowd_count, in
four ways:

* ``a_islands``: four requests per frame to today's plugins, each with its own copy of the person
  detector (``benchmarks/fixtures/islands``: no upstreams declared);
* ``b_shared``: four requests per frame (the same ``camera_id`` and ``frame_id``) to the reference
  plugins of ``ai/models``, whose dependents declare person_detection as their upstream: the
  runtime runs the detector once per frame and hands its boxes to the others;
* ``c_one_call``: one request naming the four models (``InferenceRequest.models``) to ``ai/models``:
  the sidecar decodes the JPEG once and the four models read its pixels from the frame pool
  (``decode_once``, the default);
* ``d_one_call_encoded``: the same request to a sidecar run with ``--no-decode-once``: the JPEG goes
  to each model, which decodes it itself (what (c) saves by decoding once).

The repositories are served at once, each by its own embedded tritonserver and sidecar process (the
reference plugins twice: (c) and (d)), and the ways take turns in each round, so that all see the
same machine. Measured per way, over
the camera's frames (640x480 JPEG scenes of ``examples/scenes.py``, one camera, one frame at a time):

* runtime CPU per camera-frame: user + system CPU of every process of that stack (tritonserver,
  its Python stubs, the sidecar), not the client's;
* wall per camera-frame: from the first request's send to the last answer;
* bytes sent per camera-frame: the serialised requests;

then camera-frames/s at saturation with 8 cameras sending back to back (``a_islands`` and
``c_one_call``). Every answer is checked (no error). Ratios are against ``a_islands`` of the same
run. Results also go to ``benchmarks/results/bench_multimodel.json``.

    .venv/bin/python benchmarks/bench_multimodel.py [--frames 30] [--rounds 2] [--saturation 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))

from bench_batch import frames  # noqa: E402
from bench_models import machine  # noqa: E402

from ruthgen.embedded import EmbeddedTriton  # noqa: E402
from ruthgen.writer import build_repository  # noqa: E402
from sidecar.client import AIRuntimeClient, make_models_request, make_request, pb  # noqa: E402
from sidecar.process import SidecarProcess  # noqa: E402

MODELS = (("person_detection", "1.0.0"), ("helmet_detection", "0.1.0"), ("fall_detection", "1.0.0"),
          ("crowd_count", "1.0.0"))
ISLANDS = ROOT / "benchmarks" / "fixtures" / "islands"
SHARED = ROOT / "ai" / "models"
RESULTS = ROOT / "benchmarks" / "results" / "bench_multimodel.json"
CAMERAS = 8

#: One camera-frame sent one way: returns the bytes it sent.
Send = Callable[[AIRuntimeClient, bytes, str, str], Awaitable[int]]


def _check(response: pb.InferenceResponse, what: str) -> None:
    if response.HasField("error"):
        raise RuntimeError(f"{what}: {pb.ErrorCode.Name(response.error.code)}: {response.error.message}")
    for answer in response.answers:
        if answer.HasField("error"):
            raise RuntimeError(f"{what} {answer.model_id}: {answer.error.message}")


async def separate(client: AIRuntimeClient, jpeg: bytes, camera: str, frame_id: str) -> int:
    """Four requests for the frame, in flight together (what a backend does without one call)."""
    requests = [make_request(m, v, jpeg, frame_id=frame_id, camera_id=camera) for m, v in MODELS]
    responses = await asyncio.gather(*(client.infer_request(r, timeout_s=30) for r in requests))
    for request, response in zip(requests, responses, strict=True):
        _check(response, request.model_id)
    return sum(r.ByteSize() for r in requests)


async def one_call(client: AIRuntimeClient, jpeg: bytes, camera: str, frame_id: str) -> int:
    request = make_models_request(MODELS, jpeg, frame_id=frame_id, camera_id=camera)
    response = await client.infer_request(request, timeout_s=30)
    _check(response, "one call")
    if len(response.answers) != len(MODELS):
        raise RuntimeError(f"one call: {len(response.answers)} answers")
    return request.ByteSize()


@dataclass
class Stack:
    """One repository served by its own tritonserver and sidecar."""

    name: str
    triton: EmbeddedTriton
    sidecar: SidecarProcess
    client: AIRuntimeClient | None = None

    def processes(self) -> list[psutil.Process]:
        found = []
        for pid in (self.triton.process.pid, self.sidecar.process.pid):  # type: ignore[union-attr]
            parent = psutil.Process(pid)
            found += [parent, *parent.children(recursive=True)]
        return found

    def cpu_s(self) -> float:
        total = 0.0
        for process in self.processes():
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total


async def measure(stack: Stack, send: Send, jpegs: list[bytes], camera: str) -> dict[str, Any]:
    assert stack.client is not None
    for n, jpeg in enumerate(jpegs[:3]):  # warm: caches, lanes, the camera's sequence
        await send(stack.client, jpeg, f"{camera}-warm", f"w{n}")
    cpu_before = stack.cpu_s()
    walls, sent = [], 0
    for n, jpeg in enumerate(jpegs):
        started = time.perf_counter()
        sent += await send(stack.client, jpeg, camera, f"{camera}-{n}")
        walls.append(time.perf_counter() - started)
    await asyncio.sleep(0.2)  # the last answers' accounting
    cpu = stack.cpu_s() - cpu_before
    count = len(jpegs)
    return {"frames": count, "cpu_ms": cpu * 1000 / count, "wall_ms": statistics.median(walls) * 1000,
            "bytes": sent / count}


async def saturate(
    stack: Stack, send: Send, jpegs: list[bytes], duration_s: float, tag: str
) -> dict[str, Any]:
    assert stack.client is not None
    stop = time.perf_counter() + duration_s
    done = [0]

    async def camera(index: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            await send(stack.client, jpegs[n % len(jpegs)], f"{tag}-cam{index}", f"{tag}-{index}-{n}")
            done[0] += 1
            n += 1

    cpu_before, started = stack.cpu_s(), time.perf_counter()
    await asyncio.gather(*(camera(i) for i in range(CAMERAS)))
    elapsed = time.perf_counter() - started
    return {"camera_frames": done[0], "seconds": elapsed, "fps": done[0] / elapsed,
            "cpu_ms": (stack.cpu_s() - cpu_before) * 1000 / max(done[0], 1)}


async def wait_ready(client: AIRuntimeClient, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        states = {(m.model_id, m.version): m for m in (await client.status()).models}
        ready = [key for key in MODELS if key in states and states[key].state == pb.READY
                 and not states[key].waiting_for]
        if len(ready) == len(MODELS):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"not READY: {sorted(set(MODELS) - set(ready))}")
        await asyncio.sleep(0.5)


async def run(
    stacks: dict[str, Stack], jpegs: list[bytes], rounds: int, saturation_s: float
) -> dict[str, Any]:
    for stack in stacks.values():
        stack.client = AIRuntimeClient(stack.sidecar.address)
        await wait_ready(stack.client)
    ways: list[tuple[str, Stack, Send]] = [
        ("a_islands", stacks["islands"], separate),
        ("b_shared", stacks["shared"], separate),
        ("c_one_call", stacks["shared"], one_call),
        ("d_one_call_encoded", stacks["encoded"], one_call),
    ]
    samples: dict[str, list[dict[str, Any]]] = {}
    try:
        for round_index in range(rounds):
            order = ways if round_index % 2 == 0 else list(reversed(ways))
            for name, stack, send in order:
                sample = await measure(stack, send, jpegs, f"{name}-r{round_index}")
                samples.setdefault(name, []).append(sample)
        saturation = {}
        for name, stack, send in (ways[0], ways[2]):
            saturation[name] = await saturate(stack, send, jpegs, saturation_s, f"{name}-sat")
    finally:
        for stack in stacks.values():
            if stack.client is not None:
                await stack.client.close()
    keys = ("cpu_ms", "wall_ms", "bytes")
    per_way = {
        name: {key: round(statistics.median(s[key] for s in runs), 2) for key in keys}
        | {"rounds": [round(s["cpu_ms"], 1) for s in runs]}
        for name, runs in samples.items()
    }
    return {"per_camera_frame": per_way, "saturation_8_cameras": saturation}


def build(source: Path, workdir: Path) -> Path:
    models = workdir / "models"
    for model_id, version in MODELS:
        shutil.copytree(source / model_id / version, models / model_id / version, symlinks=False)
    repository = workdir / "model_repository"
    result = build_repository(models, repository)
    bad = [r.to_dict() for r in result.reports if not r.valid]
    if bad:
        raise SystemExit(f"{source} did not build: {bad}")
    return repository


def report(results: dict[str, Any]) -> dict[str, float]:
    per_way, saturation = results["per_camera_frame"], results["saturation_8_cameras"]
    base = per_way["a_islands"]
    print(f"{'way':<18} {'CPU ms/frame':>13} {'x (a)':>6} {'wall ms':>8} {'bytes':>8}  CPU per round")
    for name, row in per_way.items():
        print(f"{name:<18} {row['cpu_ms']:>13} {row['cpu_ms'] / base['cpu_ms']:>6.2f} {row['wall_ms']:>8} "
              f"{row['bytes']:>8.0f}  {row['rounds']}")
    rates = "; ".join(f"{name} {row['fps']:.1f} camera-frames/s" for name, row in saturation.items())
    print(f"8 cameras at saturation: {rates}")
    ratios = {
        "c_cpu_over_a": round(per_way["c_one_call"]["cpu_ms"] / base["cpu_ms"], 2),
        "b_cpu_over_a": round(per_way["b_shared"]["cpu_ms"] / base["cpu_ms"], 2),
        "c_bytes_over_a": round(per_way["c_one_call"]["bytes"] / base["bytes"], 2),
        "c_cpu_over_d": round(per_way["c_one_call"]["cpu_ms"] / per_way["d_one_call_encoded"]["cpu_ms"], 2),
        "c_fps_over_a_8_cameras": round(saturation["c_one_call"]["fps"] / saturation["a_islands"]["fps"], 2),
    }
    print("ratios: " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=30, help="camera-frames per way and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--saturation", type=float, default=10.0, help="seconds of 8 cameras per way")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not (ISLANDS / "person_detection").is_dir():
        raise SystemExit(f"{ISLANDS} is missing: it holds the plugins with their own detectors")

    print(f"models: {', '.join(f'{m} {v}' for m, v in MODELS)}; frames: 640x480 JPEG; machine: {machine()}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-multimodel-"))
    stacks: dict[str, Stack] = {}
    try:
        for name, source, extra in (("islands", ISLANDS, []), ("shared", SHARED, []),
                                    ("encoded", SHARED, ["--no-decode-once"])):
            repository = build(source, workdir / name)
            log = workdir / f"{name}-triton.log"
            triton = EmbeddedTriton(repository, load_models=[], log_path=log).start()
            sidecar = SidecarProcess(
                triton.grpc_url, repository, port=0, log_path=workdir / f"{name}-sidecar.log",
                extra_args=["--log-level", "WARNING", "--http-port", "0", "--no-calibrate", *extra],
            ).start()  # fmt: skip
            stacks[name] = Stack(name, triton, sidecar)
        jpegs = frames(args.frames)
        results = asyncio.run(run(stacks, jpegs, args.rounds, args.saturation))
        ratios = report(results)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine(), "frames": args.frames, "rounds": args.rounds,
                                         **results, "ratios": ratios}, indent=2))
        print(f"results: {args.json}")
    finally:
        for stack in stacks.values():
            stack.sidecar.stop()
            stack.triton.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
