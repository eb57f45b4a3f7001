"""What the sidecar's Triton side costs per request, without any server in front of it.

One process, one embedded tritonserver, the trivial plugin of ``bench_sidecar.py``, one request at
a time, the paths taking turns request by request:

* ``floor``: what ``floor_forwarder.py`` does (its ``triton_request``: FRAME only) written on one
  shared ``ModelStreamInfer`` stream, the reply matched by id;
* ``adapter``: the sidecar's ``TritonAdapter.infer`` (a lane and the shared deadlines) with the
  message the sidecar builds (``build_request``: shape, ids as parameters);
* ``adapter, bare message``: the adapter with the floor's message, which separates the two.

Reported per request: wall time and this process's CPU (``getrusage``), median over rounds.

    .venv/bin/python benchmarks/bench_triton_write.py [--requests 1500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
from tritonclient.grpc import service_pb2_grpc as tpb_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_sidecar  # noqa: E402
from floor_forwarder import triton_request  # noqa: E402

from ruthgen.embedded import EmbeddedTriton  # noqa: E402
from sidecar._proto import airuntime_pb2 as pb  # noqa: E402
from sidecar.request.messages import build_request  # noqa: E402
from sidecar.request.routes import READY, Route  # noqa: E402
from sidecar.triton_client import TritonAdapter  # noqa: E402

_LIMITS = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _round(url: str, jpeg: bytes, requests: int) -> dict[str, tuple[float, float]]:
    """{path: (wall ms, CPU ms) per request} for one round."""
    name = f"bench_sc_trivial__{bench_sidecar.VERSION}"
    route = Route("bench_sc_trivial", bench_sidecar.VERSION, READY, triton_name=name, format="jpeg")
    asked = pb.InferenceRequest(model_id=route.model_id, version=route.version, frame=pb.Frame(data=jpeg))
    loop = asyncio.get_running_loop()
    channel = grpc.aio.insecure_channel(url, options=_LIMITS)
    shared = tpb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer()
    waiting: dict[str, asyncio.Future] = {}

    async def read_shared() -> None:
        while (reply := await shared.read()) is not grpc.aio.EOF:
            waiting.pop(reply.infer_response.id).set_result(reply)

    reader = loop.create_task(read_shared())
    adapter = TritonAdapter(url)
    await adapter.connect()

    async def floor(request_id: str) -> None:
        future = waiting[request_id] = loop.create_future()
        await shared.write(triton_request(asked, request_id))
        await future

    async def through_adapter(request_id: str) -> None:
        await adapter.infer(build_request(route, request_id, jpeg, 640, 480, request_id, "cam", 0), 5.0)

    async def adapter_bare(request_id: str) -> None:
        await adapter.infer(triton_request(asked, request_id), 5.0)

    paths = {"floor": floor, "adapter": through_adapter, "adapter, bare message": adapter_bare}
    totals = {path: [0.0, 0.0] for path in paths}
    for n in range(50 + requests):  # the first 50 turns warm up
        for path, send in paths.items():
            began, cpu = time.perf_counter(), _cpu_s()
            await send(f"{path[0]}{n}")
            if n >= 50:
                totals[path][0] += time.perf_counter() - began
                totals[path][1] += _cpu_s() - cpu
    await shared.done_writing()
    reader.cancel()
    await adapter.close()
    await channel.close()
    return {path: (wall * 1000 / requests, cpu * 1000 / requests) for path, (wall, cpu) in totals.items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1500, help="turns per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    jpeg = bench_sidecar.make_jpeg()
    workdir = Path(tempfile.mkdtemp(prefix="bench-triton-write-"))
    repo = bench_sidecar.build(workdir)
    print(f"frame: 640x480 JPEG, {len(jpeg)} bytes; machine: {platform.machine()}, {os.cpu_count()} cores")
    rounds = []
    with EmbeddedTriton(repo, load_models=[f"bench_sc_trivial__{bench_sidecar.VERSION}"],
                        log_path=workdir / "triton.log") as triton:  # fmt: skip
        for index in range(args.rounds):
            figures = asyncio.run(_round(triton.grpc_url, jpeg, args.requests))
            rounds.append(figures)
            for path, (wall, cpu) in figures.items():
                print(f"round {index + 1} {path:22s} wall {wall:.3f} ms  CPU {cpu:.3f} ms per request")
    print("median over rounds (CPU: this process, client side only)")
    for path in rounds[0]:
        wall = statistics.median(r[path][0] for r in rounds)
        cpu = statistics.median(r[path][1] for r in rounds)
        floor_cpu = statistics.median(r["floor"][1] for r in rounds)
        print(f"{path:22s} wall {wall:.3f} ms  CPU {cpu:.3f} ms  (+{cpu - floor_cpu:.3f} ms over floor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
