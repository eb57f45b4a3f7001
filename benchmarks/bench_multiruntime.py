"""What spreading cameras over runtimes costs, and how long a runtime's cameras wait when it dies.

Runtimes are `ruthgen up` processes (embedded tritonserver + sidecar each) on 127.0.0.2, .3, ...,
one port, as the pods behind a headless Service, serving the fleet fixtures of
tests/testdata/plugins (``fl_frame``: a frame model, ``fl_temporal``: a temporal one; both answer in
well under a millisecond, so the client's own cost shows).

* **Throughput** (one runtime): 16 frames kept in flight on one InferStream by today's
  single-endpoint client (``AIRuntimeClient.stream``, fed by a generator that waits for room) against
  ``sidecar.fleet.Fleet.stream(max_in_flight=16)`` over the same runtime; the two alternate for
  ``--rounds`` rounds of ``--duration`` s each, in this one process. Reported: frames/s per round,
  the medians, fleet/single (of the medians, and the median of each round's ratio), and this
  process's CPU per frame (the client's own cost: on this machine it competes with the runtime).
* **Failover** (three runtimes, ``--cameras`` cameras streaming to both models through one Fleet):
  ``--kills`` times, SIGKILL to every process of one runtime (they take turns), then it is started
  again. Per kill: from its last answer to the first answer from another runtime for one of its
  cameras (``first``), and to the moment all of its cameras had answered from elsewhere (``all``);
  plus whether every frame got exactly one answer and none was an error. Reported: p50 and max.

    .venv/bin/python benchmarks/bench_multiruntime.py [--duration 5] [--rounds 3] [--kills 10]
        [--cameras 24] [--json benchmarks/results/bench_multiruntime.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar.client import AIRuntimeClient, make_request, pb  # noqa: E402
from sidecar.fleet import Fleet  # noqa: E402
from tests.loopback import HOSTS, free_port_on  # noqa: E402

PLUGINS = ROOT / "tests" / "testdata" / "plugins"
RUTHGEN = str(Path(sys.executable).parent / "ruthgen")
FRAME = ("fl_frame", "1.0.0")
TEMPORAL = ("fl_temporal", "1.0.0")


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 30)).save(out, "JPEG")
    return out.getvalue()


class LocalRuntime:
    """One `ruthgen up` on its own loopback address, named by RUTH_RUNTIME_ID, serving ``models``
    (plugins of tests/testdata/plugins); tests/integration/test_fleet_runtimes.py runs them too."""

    def __init__(self, name: str, host: str, port: int, root: Path,
                 models: tuple[str, ...] = ("fl_frame", "fl_temporal")) -> None:
        self.name, self.host, self.port, self.root = name, host, port, root
        for model_id in models:
            shutil.copytree(PLUGINS / model_id, root / "models" / model_id, dirs_exist_ok=True)
        self.process: subprocess.Popen | None = None
        self.log = root / "up.log"

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        command = [RUTHGEN, "up", "-m", str(self.root / "models"), "--out", str(self.root / "repository"),
                   "--host", self.host, "--sidecar-port", str(self.port), "--sidecar-http-port", "0",
                   "--no-watch"]
        self.log.write_bytes(b"")
        self.process = subprocess.Popen(
            command, cwd=self.root, env={**os.environ, "RUTH_RUNTIME_ID": self.name},
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    def wait_serving(self, timeout_s: float = 240.0) -> None:
        deadline = time.monotonic() + timeout_s
        while "sidecar (AIRuntime gRPC) on" not in self.log.read_text(errors="replace"):
            if self.process is None or self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """All its processes die at once, as with the machine: each is stopped (SIGSTOP, so that none
        reacts to another's end, e.g. Triton to its parent's), then killed (SIGKILL); the shared
        memory they left is removed."""
        assert self.process is not None
        top = psutil.Process(self.process.pid)
        processes = [top, *top.children(recursive=True)]
        shared = set()
        for process in processes:
            with contextlib.suppress(psutil.Error):
                maps = process.memory_maps(grouped=True)
                shared |= {m.path for m in maps if m.path.startswith("/dev/shm/")}
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.suspend()
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(processes, timeout=30)
        self.process.wait()
        self.process = None
        for path in shared:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def stop(self, timeout_s: float = 90.0) -> int | None:
        """SIGTERM to `ruthgen up`, as Ctrl-C or a pod's stop: its exit code."""
        code = None
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            code = self.process.wait(timeout_s)
            self.process = None
        return code

    def sidecar_log(self) -> str:
        return (self.root / ".ruth" / "sidecar.log").read_text(errors="replace")


# ---- throughput ----------------------------------------------------------------------------------


async def requests(data: bytes, duration_s: float, room: asyncio.Semaphore | None = None):
    """Frames of 24 cameras for ``duration_s``; each waits for ``room`` when one is given."""
    stop = time.monotonic() + duration_s
    n = 0
    while time.monotonic() < stop:
        if room is not None:
            await room.acquire()
        n += 1
        yield make_request(*FRAME, data, frame_id=f"f{n}", camera_id=f"cam-{n % 24}")


async def single_stream(target: str, data: bytes, in_flight: int, duration_s: float) -> int:
    """Today's client: ``AIRuntimeClient.stream`` over one InferStream, ``in_flight`` frames kept
    unanswered; successful answers counted."""
    async with AIRuntimeClient(target) as client:
        room = asyncio.Semaphore(in_flight)
        answered = 0
        async for response in client.stream(requests(data, duration_s, room)):
            answered += not response.HasField("error")
            room.release()
        return answered


async def fleet_stream(fleet: Fleet, data: bytes, in_flight: int, duration_s: float) -> int:
    """``Fleet.stream`` with ``max_in_flight``; successful answers counted."""
    answered = 0
    async for answer in fleet.stream(requests(data, duration_s), max_in_flight=in_flight):
        answered += answer.ok
    return answered


async def throughput(runtime: LocalRuntime, args: argparse.Namespace) -> dict[str, Any]:
    data = jpeg()
    rates: dict[str, list[float]] = {"single": [], "fleet": []}
    cpu: dict[str, list[float]] = {"single": [], "fleet": []}  # this process's CPU µs per frame
    async with Fleet([runtime.target]) as fleet:
        await fleet.wait_ready([FRAME], 60)
        await single_stream(runtime.target, data, args.in_flight, 1.0)  # warm both paths up
        await fleet_stream(fleet, data, args.in_flight, 1.0)
        for turn in range(args.rounds):
            order = ("single", "fleet") if turn % 2 == 0 else ("fleet", "single")
            for path in order:
                start, cpu_start = time.monotonic(), time.process_time()
                if path == "single":
                    count = await single_stream(runtime.target, data, args.in_flight, args.duration)
                else:
                    count = await fleet_stream(fleet, data, args.in_flight, args.duration)
                rates[path].append(count / (time.monotonic() - start))
                cpu[path].append((time.process_time() - cpu_start) / max(1, count) * 1e6)
                print(f"  round {turn + 1} {path:6s} {rates[path][-1]:8.1f} frames/s, client CPU "
                      f"{cpu[path][-1]:6.1f} µs/frame", flush=True)
    single, fleet_rate = statistics.median(rates["single"]), statistics.median(rates["fleet"])
    paired = [f / s for f, s in zip(rates["fleet"], rates["single"], strict=True)]
    return {"in_flight": args.in_flight, "frames_per_s": rates, "client_cpu_us_per_frame": cpu,
            "median_single": round(single, 1), "median_fleet": round(fleet_rate, 1),
            "fleet_over_single": round(fleet_rate / single, 3),
            "fleet_over_single_paired_median": round(statistics.median(paired), 3),
            "client_cpu_us_median": {k: round(statistics.median(v), 1) for k, v in cpu.items()}}


# ---- failover ------------------------------------------------------------------------------------


async def failover(runtimes: list[LocalRuntime], args: argparse.Namespace) -> dict[str, Any]:
    data = jpeg()
    cameras = [f"cam-{n:02d}" for n in range(args.cameras)]
    answers: dict[tuple[str, str], list[tuple[int, Any, float]]] = defaultdict(list)
    running = True
    kills: list[dict[str, Any]] = []

    async def camera(fleet: Fleet, name: str, model: tuple[str, str]) -> None:
        n = 0
        while running:
            answer = await fleet.infer(make_request(*model, data, frame_id=f"{name}/{n}", camera_id=name))
            answers[(name, model[0])].append((n, answer, time.monotonic()))
            n += 1
            await asyncio.sleep(0.01)

    async with Fleet([r.target for r in runtimes], health_interval_s=0.5) as fleet:
        await fleet.wait_ready([FRAME, TEMPORAL], 60)
        tasks = [asyncio.create_task(camera(fleet, c, m)) for c in cameras for m in (FRAME, TEMPORAL)]
        await asyncio.sleep(2.0)
        for k in range(args.kills):
            victim = runtimes[k % len(runtimes)]
            mark = {key: len(got) for key, got in answers.items()}
            await asyncio.to_thread(victim.kill)
            killed_at = time.monotonic()
            await asyncio.sleep(2.0)
            first_new: list[float] = []
            for key, got in answers.items():
                new = [t for _, a, t in got[mark.get(key, 0):] if a.runtime != victim.name]
                was_victims = any(a.runtime == victim.name for _, a, _ in got[: mark.get(key, 0)][-1:])
                if was_victims and new:
                    first_new.append(min(new))
            before = max((t for got in answers.values() for _, a, t in got if a.runtime == victim.name),
                         default=killed_at)
            kills.append({"runtime": victim.name, "cameras_moved": len(first_new),
                          "first_s": round(min(first_new) - before, 4) if first_new else None,
                          "all_s": round(max(first_new) - before, 4) if first_new else None})
            print(f"  kill {k + 1}: {kills[-1]}", flush=True)
            victim.start()
            await asyncio.to_thread(victim.wait_serving)
            while victim.name not in {r.runtime_id for r in fleet.runtimes() if r.up}:
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
        running = False
        await asyncio.gather(*tasks)
    frames = sum(len(got) for got in answers.values())
    failed = [(n, a, t) for got in answers.values() for n, a, t in got if not a.ok]
    errors = len(failed)
    in_order = all([n for n, _, _ in got] == list(range(len(got))) for got in answers.values())
    firsts = [k["first_s"] for k in kills if k["first_s"] is not None]
    alls = [k["all_s"] for k in kills if k["all_s"] is not None]
    return {
        "kills": kills, "frames": frames, "errors": errors, "each_frame_answered_once": in_order,
        "first_errors": [
            {"frame_id": a.response.frame_id, "model_id": a.response.model_id, "runtime": a.runtime,
             "resent": a.resent, "moved": a.moved, "code": pb.ErrorCode.Name(a.response.error.code),
             "message": a.response.error.message} for _, a, _ in failed[:5]
        ],
        "resent": sum(1 for got in answers.values() for _, a, _ in got if a.resent),
        "first_p50_s": round(statistics.median(firsts), 4) if firsts else None,
        "first_max_s": max(firsts, default=None),
        "all_p50_s": round(statistics.median(alls), 4) if alls else None,
        "all_max_s": max(alls, default=None),
    }


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-multiruntime-"))
    hosts = HOSTS[:3]
    port = free_port_on(hosts)
    runtimes = [LocalRuntime(f"runtime-{x}", hosts[i], port, root / x) for i, x in enumerate("abc")]
    report: dict[str, Any] = {"machine": machine()}
    try:
        for runtime in runtimes:
            runtime.start()
        for runtime in runtimes:
            runtime.wait_serving()
        print(f"throughput, one runtime, {args.in_flight} in flight:", flush=True)
        report["throughput"] = await throughput(runtimes[0], args)
        print(f"failover, three runtimes, {args.cameras} cameras x 2 models, {args.kills} kills:", flush=True)
        report["failover"] = await failover(runtimes, args)
    finally:
        for runtime in runtimes:
            with contextlib.suppress(Exception):
                runtime.stop()
        shutil.rmtree(root, ignore_errors=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--cameras", type=int, default=24)
    default_json = ROOT / "benchmarks" / "results" / "bench_multiruntime.json"
    parser.add_argument("--json", type=Path, default=default_json)
    args = parser.parse_args()
    report = asyncio.run(run(args))
    t, f = report["throughput"], report["failover"]
    print(f"\nthroughput: single {t['median_single']} frames/s, fleet {t['median_fleet']} frames/s, "
          f"fleet/single {t['fleet_over_single']} (median of the rounds' ratios "
          f"{t['fleet_over_single_paired_median']}); client CPU µs/frame {t['client_cpu_us_median']}")
    print(f"failover over {len(f['kills'])} kills: first answer elsewhere p50 {f['first_p50_s']} s, "
          f"max {f['first_max_s']} s; all cameras p50 {f['all_p50_s']} s, max {f['all_max_s']} s; "
          f"{f['frames']} frames, {f['errors']} errors, each answered once: {f['each_frame_answered_once']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if f["errors"] == 0 and f["each_frame_answered_once"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
