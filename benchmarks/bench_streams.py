"""Thousands of open InferStream streams against the sidecar: what each costs, and that the cap answers.

One embedded tritonserver serves one model (``bare``: a hand-written Python-backend model that
does not decode, or ``trivial``: a generated plugin); the sidecar runs in its own process with its
default stream caps unless ``--max-streams`` / ``--max-streams-per-connection`` say otherwise. The
client opens ``--streams`` (5,000) streams over ``--connections`` channels (each its own HTTP/2
connection), ``--batch`` at a time; each stream sends one small JPEG, reads its answer and stays
open, as the backend's streams would between frames. A stream beyond a cap is refused at once with
RESOURCE_EXHAUSTED (code OVERLOADED).

Reported: the sidecar's RSS before (after a warm-up of a few streams opened and closed), with
every admitted stream open, and after they are closed; RSS per open stream; how many streams were
admitted and refused (by which cap), as the client saw it and as the sidecar's ``/metrics`` counted;
a unary call's latency while they are open; that a sample of the open streams still answers after
the refusals; the RSS after a second round of the same streams (memory reused, not leaked); and the
whole run's duration. Every loop is bounded in count, and every wait by ``--timeout``; the run
gives up after ``--max-seconds``.

grpcio's asyncio client may report a refusal that overtakes its first write as INTERNAL "Internal
error from Core" instead of the server's RESOURCE_EXHAUSTED (grpc/grpc#36066): those are counted
apart, and the sidecar's own refusal counters say what it answered.

    .venv/bin/python benchmarks/bench_streams.py [--streams 5000] [--connections 10] [--batch 200]
        [--model bare|trivial] [--max-streams N] [--max-streams-per-connection N] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import grpc  # noqa: E402
from bench_sidecar import MODELS, VERSION, build  # noqa: E402

from ruthgen.embedded import EmbeddedTriton  # noqa: E402
from sidecar.client import AIRuntimeClient, make_request  # noqa: E402
from sidecar.process import SidecarProcess  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "bench_streams.json"
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def small_jpeg() -> bytes:
    pixels = np.random.default_rng(5).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


class Streams:
    """The client's side: open streams, their refusals, and what they answered."""

    def __init__(self, clients: list[AIRuntimeClient], model: str, frame: bytes, timeout_s: float) -> None:
        self.clients = clients
        self.model = model
        self.frame = frame
        self.timeout_s = timeout_s
        self.open: list[grpc.aio.StreamStreamCall] = []
        self.refused: dict[str, int] = {}
        self.refused_as_internal = 0  # grpc/grpc#36066: the client lost the server's status
        self.failed: list[str] = []

    async def open_one(self, index: int) -> None:
        call = self.clients[index % len(self.clients)].open_stream()
        try:
            await call.write(make_request(self.model, VERSION, self.frame, frame_id=f"s{index}"))
            answer = await asyncio.wait_for(call.read(), self.timeout_s)
        except grpc.aio.AioRpcError as e:
            code = dict(e.trailing_metadata() or ()).get("ruth-error-code", "")
            if e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and code == "OVERLOADED":
                key = "connection" if "max_streams_per_connection" in (e.details() or "") else "process"
                self.refused[key] = self.refused.get(key, 0) + 1
            elif e.code() is grpc.StatusCode.INTERNAL and e.details() == "Internal error from Core":
                self.refused_as_internal += 1
            else:
                self.failed.append(f"{e.code().name}: {e.details()}")
            return
        except (asyncio.TimeoutError, TimeoutError):
            call.cancel()
            self.failed.append("no answer in time")
            return
        if answer.HasField("error"):
            self.failed.append(f"answer error {answer.error.code}: {answer.error.message}")
            call.cancel()
            return
        self.open.append(call)

    async def open_many(self, first: int, count: int, batch: int, deadline: float) -> None:
        for start in range(first, first + count, batch):
            if time.monotonic() > deadline:
                raise TimeoutError("the run took longer than --max-seconds")
            await asyncio.gather(*(self.open_one(i) for i in range(start, min(start + batch, first + count))))

    async def still_serving(self, sample: int) -> int:
        """Send one more frame on ``sample`` open streams; how many answered."""
        calls = self.open[:: max(1, len(self.open) // sample)][:sample]

        async def again(n: int, call: grpc.aio.StreamStreamCall) -> bool:
            await call.write(make_request(self.model, VERSION, self.frame, frame_id=f"again{n}"))
            answer = await asyncio.wait_for(call.read(), self.timeout_s)
            return answer.frame_id == f"again{n}" and not answer.HasField("error")

        return sum(await asyncio.gather(*(again(n, call) for n, call in enumerate(calls))))

    async def close_all(self) -> None:
        for call in self.open:
            call.cancel()
        self.open.clear()


async def unary_latency_ms(client: AIRuntimeClient, model: str, frame: bytes, count: int = 20) -> float:
    latencies = []
    for n in range(count):
        started = time.perf_counter()
        response = await client.infer(model, VERSION, frame, frame_id=f"u{n}", timeout_s=10)
        latencies.append((time.perf_counter() - started) * 1000)
        if response.HasField("error"):
            raise RuntimeError(f"a unary call failed: {response.error.message}")
    return statistics.median(latencies)


def http_port(log: Path) -> int:
    """The sidecar's HTTP port (bound to port 0), from its log line."""
    found = re.search(r"HTTPS? \(probes[^)]*\) on \S+:(\d+)", log.read_text(errors="replace"))
    if found is None:
        raise RuntimeError(f"no HTTP port in {log}")
    return int(found.group(1))


async def stream_metrics(port: int) -> dict[str, float]:
    """The sidecar's stream gauges and refusal counters from ``/metrics``."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        text = (await http.get("/metrics", timeout=10)).text
    names = r"ruth_streams_open|ruth_stream_connections|ruth_streams_refused_total\{[^}]*\}"
    wanted = re.compile(rf"^({names}) (\S+)$")
    return {m.group(1): float(m.group(2)) for m in map(wanted.match, text.splitlines()) if m}


async def all_closed(port: int, deadline: float) -> None:
    """Until the sidecar counts no open stream: the places of the calls just cancelled are free again
    (the next round is admitted in full), however long the server takes to hear of it."""
    while (await stream_metrics(port)).get("ruth_streams_open", 0.0) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the sidecar still counted open streams at --max-seconds")
        await asyncio.sleep(0.05)


async def settle(pid: int, seconds: float) -> float:
    """The RSS after a short wait (for buffers the server's threads free after the calls end)."""
    await asyncio.sleep(seconds)
    return rss_mb(pid)


async def run(args: argparse.Namespace, address: str, pid: int, metrics_port: int) -> dict[str, Any]:
    deadline = time.monotonic() + args.max_seconds
    frame = small_jpeg()
    model = MODELS[args.model]
    clients = [AIRuntimeClient(address, options=OWN_CONNECTION) for _ in range(args.connections)]
    try:
        for client in clients:
            await client.wait_ready(args.timeout)
        warm = Streams(clients, model, frame, args.timeout)  # lazily made things count in the baseline
        await warm.open_many(0, min(100, args.streams), args.batch, deadline)
        await warm.close_all()
        await all_closed(metrics_port, deadline)
        baseline_unary_ms = await unary_latency_ms(clients[0], model, frame)
        before = await settle(pid, args.settle)
        counted_before = await stream_metrics(metrics_port)  # the warm-up may have met a cap too
        streams = Streams(clients, model, frame, args.timeout)
        started = time.monotonic()
        await streams.open_many(0, args.streams, args.batch, deadline)
        open_s = time.monotonic() - started
        admitted = len(streams.open)
        with_open = await settle(pid, args.settle)
        counted = await stream_metrics(metrics_port)
        loaded_unary_ms = await unary_latency_ms(clients[0], model, frame)
        sample = min(100, admitted)
        answered = await streams.still_serving(sample)
        await streams.close_all()
        await all_closed(metrics_port, deadline)
        after = await settle(pid, args.settle * 1.5)
        again = Streams(clients, model, frame, args.timeout)  # the same again: reused or leaked?
        await again.open_many(0, args.streams, args.batch, deadline)
        second_round = await settle(pid, args.settle)
        second_admitted = len(again.open)
        await again.close_all()
        await all_closed(metrics_port, deadline)
        closed = await settle(pid, args.settle)
        left_open = await stream_metrics(metrics_port)
    finally:
        for client in clients:
            await client.close()
    return {
        "streams_attempted": args.streams,
        "connections": args.connections,
        "admitted": admitted,
        "refused": streams.refused,
        "refused_reported_internal_by_client": streams.refused_as_internal,
        "refused_counted_by_sidecar": {
            k: v - counted_before.get(k, 0.0) for k, v in counted.items() if "refused" in k
        },
        "sidecar_streams_open": counted.get("ruth_streams_open"),
        "sidecar_stream_connections": counted.get("ruth_stream_connections"),
        "failed": len(streams.failed) + len(again.failed),
        "failures_sample": streams.failed[:5],
        "open_seconds": round(open_s, 2),
        "rss_before_mb": round(before, 1),
        "rss_with_streams_open_mb": round(with_open, 1),
        "rss_after_close_mb": round(after, 1),
        "rss_second_round_open_mb": round(second_round, 1),
        "second_round_admitted": second_admitted,
        "rss_after_second_close_mb": round(closed, 1),
        "sidecar_streams_open_at_end": left_open.get("ruth_streams_open"),
        "rss_per_open_stream_kb": round((with_open - before) * 1024 / admitted, 1) if admitted else None,
        "unary_p50_ms_idle": round(baseline_unary_ms, 2),
        "unary_p50_ms_with_streams_open": round(loaded_unary_ms, 2),
        "open_streams_answering_after_refusals": f"{answered}/{sample}",
    }


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--batch", type=int, default=200, help="streams opened at once")
    parser.add_argument("--model", choices=sorted(MODELS), default="bare")
    parser.add_argument("--max-streams", type=int, help="the sidecar's max_streams (default: its own)")
    parser.add_argument("--max-streams-per-connection", type=int)
    parser.add_argument("--timeout", type=float, default=30.0, help="the longest wait for one answer")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="give up after this long")
    parser.add_argument("--settle", type=float, default=2.0, help="wait before each RSS reading")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not 1 <= args.streams <= 20_000 or not 1 <= args.connections <= 100:
        parser.error("--streams must be 1..20000 and --connections 1..100")

    extra = ["--log-level", "INFO", "--http-port", "0", "--no-calibrate"]
    if args.max_streams is not None:
        extra += ["--max-streams", str(args.max_streams)]
    if args.max_streams_per_connection is not None:
        extra += ["--max-streams-per-connection", str(args.max_streams_per_connection)]
    workdir = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{args.streams} streams over {args.connections} connections, model {args.model}", flush=True)
    started = time.monotonic()
    try:
        repo = build(workdir)
        name = f"{MODELS[args.model]}__{VERSION}"
        with EmbeddedTriton(repo, load_models=[name], log_path=workdir / "triton.log") as triton:
            sidecar = SidecarProcess(triton.grpc_url, repo, port=0, log_path=workdir / "sidecar.log",
                                     extra_args=extra).start()  # fmt: skip
            try:
                assert sidecar.process is not None
                port = http_port(workdir / "sidecar.log")
                result = asyncio.run(run(args, sidecar.address, sidecar.process.pid, port))
            finally:
                sidecar.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["sidecar_args"] = extra[4:]
    for key, value in result.items():
        print(f"{key:40s} {value}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    refused = sum(result["refused"].values()) + result["refused_reported_internal_by_client"]
    consistent = refused == sum(result["refused_counted_by_sidecar"].values())
    if not consistent:
        print("the sidecar counted other refusals than the client saw")
    return 0 if not result["failed"] and consistent else 1


if __name__ == "__main__":
    raise SystemExit(main())
