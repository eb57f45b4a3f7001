"""Raw frames by value and by reference, through the sidecar and straight to Triton.

Run by ``bench_sidecar.py --raw``.

One embedded tritonserver serves a trivial ``raw_rgb`` plugin (the generated wrapper turns the
bytes into an H x W x 3 array and the plugin returns its size); one sidecar process runs in front of
it with frames by reference on. Four paths, unary, the same frame each time:

* ``direct``: Triton's ``ModelInfer`` with the pixels in ``raw_input_contents``;
* ``direct-shm``: Triton's ``ModelInfer`` naming a slot of a region the client registered with
  Triton (the client copies the frame into the slot first, as a backend would);
* ``sidecar``: the AIRuntime ``Infer`` with the pixels in ``frame.data``;
* ``sidecar-shm``: ``Infer`` with ``frame.reference`` into a ring the call registers
  (:mod:`sidecar.frame_ring`; the client copies the frame into its slot first);
* ``stream-shm``: the same requests on one ``InferStream`` (the camera path) that registered the ring.

At 1 in flight the paths take turns request by request, each leading a turn in rotation (so that
each sees the same machine and follows every other path equally often), and
the added latency is the median of the paired differences against ``direct-shm``; at ``--in-flight``
(4) each path runs alone for ``--duration`` seconds with that many requests in flight, from one
client process.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from ruthgen.embedded import EmbeddedTriton
from ruthgen.manifest import load_manifest
from ruthgen.writer import build_repository
from sidecar.client import AIRuntimeClient, pb
from sidecar.frame_ring import FrameRing
from sidecar.process import SidecarProcess

MODEL, VERSION = "bench_raw", "1.0.0"
PATHS = ("direct", "direct-shm", "sidecar", "sidecar-shm", "stream-shm")
SIZES = {"640x480": (480, 640), "1920x1080": (1080, 1920)}
YAML = """\
model_id: bench_raw
version: "1.0.0"
display_name: Raw frame benchmark plugin
input: {type: frame, format: raw_rgb, max_width: 3840, max_height: 2160}
output:
  schema:
    width: {type: integer}
    height: {type: integer}
"""
INFERENCE = """\
def load(context):
    return None


def infer(state, frame):
    return {"width": frame.width, "height": frame.height}
"""
_OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


def build(workdir: Path) -> tuple[Path, str, bool]:
    plugin = workdir / "models" / MODEL / VERSION
    (plugin / "weights").mkdir(parents=True)
    (plugin / "model.yaml").write_text(YAML)
    (plugin / "inference.py").write_text(INFERENCE)
    repo = workdir / "repo"
    build_repository(workdir / "models", repo)
    manifest = load_manifest(repo)
    assert manifest is not None
    entry = next(m for m in manifest["models"] if m["model_id"] == MODEL)
    return repo, entry["triton_name"], entry["triton"]["max_batch_size"] > 0


class Paths:
    """One request along each path; every call returns after checking the answer."""

    def __init__(self, triton_url: str, sidecar_address: str, name: str, batched: bool, frame: np.ndarray):
        self.frame = frame
        self.height, self.width = frame.shape[:2]
        self.size = frame.nbytes
        self.name = name
        self.shape = [1, self.height, self.width, 3] if batched else [self.height, self.width, 3]
        self.channel = grpc.aio.insecure_channel(triton_url, options=_OPTIONS)
        self.triton = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.client = AIRuntimeClient(sidecar_address, options=_OPTIONS)
        self.direct_ring = FrameRing(slots=8, slot_bytes=self.size)
        self.sidecar_ring = FrameRing(slots=8, slot_bytes=self.size)
        self.stream_ring = FrameRing(slots=8, slot_bytes=self.size)
        self.region = f"bench-{self.direct_ring.name}"
        self._stream: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[pb.InferenceResponse]] = {}
        self._ids = 0
        self._writing = asyncio.Lock()  # one write at a time on a gRPC stream

    async def open(self) -> None:
        await self.triton.SystemSharedMemoryRegister(service_pb2.SystemSharedMemoryRegisterRequest(
            name=self.region, key=f"/{self.direct_ring.name}", offset=0,
            byte_size=self.direct_ring.slots * self.direct_ring.slot_bytes,
        ))  # fmt: skip
        self._stream = self.client.open_stream(metadata=self.stream_ring.metadata)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while (response := await self._stream.read()) is not grpc.aio.EOF:
            self._waiting.pop(response.frame_id).set_result(response)

    async def close(self) -> None:
        self._stream.cancel()
        self._reader.cancel()  # type: ignore[union-attr]
        self.stream_ring.close()
        request = service_pb2.SystemSharedMemoryUnregisterRequest(name=self.region)
        await self.triton.SystemSharedMemoryUnregister(request)
        await self.channel.close()
        await self.client.close()
        self.direct_ring.close()
        self.sidecar_ring.close()

    def call(self, path: str):
        return {"direct": self.direct, "direct-shm": self.direct_shm, "sidecar": self.sidecar,
                "sidecar-shm": self.sidecar_shm, "stream-shm": self.stream_shm}[path]

    def _triton_request(self) -> service_pb2.ModelInferRequest:
        request = service_pb2.ModelInferRequest(model_name=self.name)
        tensor = request.inputs.add(name="FRAME", datatype="UINT8")
        tensor.shape.extend(self.shape)
        return request

    async def direct(self) -> None:
        request = self._triton_request()
        request.raw_input_contents.append(self.frame.tobytes())
        _check_triton(await self.triton.ModelInfer(request))

    async def direct_shm(self) -> None:
        slot, reference = await self.direct_ring.put(self.frame)
        try:
            request = self._triton_request()
            params = request.inputs[0].parameters
            params["shared_memory_region"].string_param = self.region
            params["shared_memory_byte_size"].int64_param = reference.size
            params["shared_memory_offset"].int64_param = reference.offset
            _check_triton(await self.triton.ModelInfer(request))
        finally:
            self.direct_ring.release(slot)

    async def sidecar(self) -> None:
        response = await self.client.infer(MODEL, VERSION, self.frame.tobytes(), "raw_rgb",
                                           width=self.width, height=self.height)
        _check(response)

    async def sidecar_shm(self) -> None:
        slot, reference = await self.sidecar_ring.put(self.frame)
        try:
            request = pb.InferenceRequest(model_id=MODEL, version=VERSION, frame=pb.Frame(
                format=pb.RAW_RGB, width=self.width, height=self.height, reference=reference))
            _check(await self.client.infer_request(request, metadata=self.sidecar_ring.metadata))
        finally:
            self.sidecar_ring.release(slot)


    async def stream_shm(self) -> None:
        slot, reference = await self.stream_ring.put(self.frame)
        try:
            self._ids += 1
            frame_id = str(self._ids)
            answer = self._waiting[frame_id] = asyncio.get_running_loop().create_future()
            request = pb.InferenceRequest(
                model_id=MODEL, version=VERSION, frame_id=frame_id,
                frame=pb.Frame(format=pb.RAW_RGB, width=self.width, height=self.height, reference=reference),
            )  # fmt: skip
            async with self._writing:
                await self._stream.write(request)
            _check(await answer)
        finally:
            self.stream_ring.release(slot)


def _check(response: pb.InferenceResponse) -> None:
    if response.HasField("error"):
        raise RuntimeError(f"{pb.ErrorCode.Name(response.error.code)}: {response.error.message}")


def _check_triton(response: service_pb2.ModelInferResponse) -> None:
    if not response.raw_output_contents:
        raise RuntimeError("Triton answered without RESULT")


async def paired(paths: Paths, duration_s: float, warmup_s: float) -> dict[str, list[float]]:
    """1 in flight, the paths taking turns request by request: latencies per path (seconds)."""
    latencies: dict[str, list[float]] = {path: [] for path in PATHS}
    start = time.perf_counter() + warmup_s
    end = start + duration_s
    turn = 0
    while (now := time.perf_counter()) < end:
        turn += 1
        for path in PATHS[turn % len(PATHS):] + PATHS[:turn % len(PATHS)]:  # each path leads in turn
            began = time.perf_counter()
            await paths.call(path)()
            if now >= start:
                latencies[path].append(time.perf_counter() - began)
    return latencies


async def loaded(
    paths: Paths, path: str, in_flight: int, duration_s: float, warmup_s: float
) -> dict[str, Any]:
    """``in_flight`` requests at once along one path: frames/s and latencies."""
    call = paths.call(path)
    start = time.perf_counter() + warmup_s
    end = start + duration_s
    latencies: list[float] = []

    async def worker() -> None:
        while (began := time.perf_counter()) < end:
            await call()
            if began >= start:
                latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return {"fps": len(latencies) / duration_s, "latencies": latencies}


def p50(values: list[float]) -> float:
    return statistics.median(values) * 1000 if values else float("nan")


async def measure(
    triton_url: str, sidecar_address: str, name: str, batched: bool, sizes: list[str], rounds: int,
    duration_s: float, warmup_s: float, in_flight: int,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for label in sizes:
        frame = np.random.default_rng(0).integers(0, 255, (*SIZES[label], 3), dtype=np.uint8)
        paths = Paths(triton_url, sidecar_address, name, batched, frame)
        await paths.open()
        try:
            for path in PATHS:  # warm every path (the sidecar registers its pool on first use)
                await paths.call(path)()
            turns: dict[str, list[float]] = {path: [] for path in PATHS}
            fps: dict[str, list[float]] = {path: [] for path in PATHS}
            for round_index in range(rounds):
                for path, values in (await paired(paths, duration_s, warmup_s)).items():
                    turns[path].extend(values)
                order = PATHS if round_index % 2 == 0 else tuple(reversed(PATHS))
                for path in order:
                    fps[path].append((await loaded(paths, path, in_flight, duration_s, warmup_s))["fps"])
        finally:
            await paths.close()
        base = turns["direct-shm"]
        base_fps = statistics.mean(fps["direct-shm"])
        results[label] = {}
        for path in PATHS:
            added = [b - a for a, b in zip(base, turns[path], strict=True)]
            results[label][path] = {
                "p50_ms": round(p50(turns[path]), 2),
                "added_vs_direct_shm_ms": round(p50(added), 2),
                "fps_in_flight": round(statistics.mean(fps[path]), 1),
                "fps_rounds": [round(x, 1) for x in fps[path]],
                "fps_vs_direct_shm": round(statistics.mean(fps[path]) / base_fps, 2),
            }
    return results


def run(workdir: Path, sizes: list[str], rounds: int, duration_s: float, warmup_s: float,
        in_flight: int) -> dict[str, Any]:
    """Build, start Triton and a sidecar with frames by reference on, measure, stop."""
    repo, name, batched = build(workdir / "raw")
    with EmbeddedTriton(repo, load_models=[name], log_path=workdir / "raw-triton.log") as triton:
        sidecar = SidecarProcess(
            triton.grpc_url, repo, port=0, log_path=workdir / "raw-sidecar.log",
            extra_args=["--log-level", "WARNING", "--http-port", "0", "--no-calibrate", "--shared-memory"],
        ).start()  # fmt: skip
        try:
            return asyncio.run(measure(triton.grpc_url, sidecar.address, name, batched, sizes, rounds,
                                       duration_s, warmup_s, in_flight))
        finally:
            sidecar.stop()
            shutil.rmtree(workdir / "raw", ignore_errors=True)


def report(results: dict[str, Any], in_flight: int) -> None:
    for label, rows in results.items():
        print(f"\nraw {label} ({3 * np.prod(SIZES[label]) / 1e6:.1f} MB), unary, 1 in flight paired; "
              f"{in_flight} in flight for throughput")
        print(f"  {'path':<12} {'p50 ms':>8} {'added vs direct-shm':>20} {'fps':>8} {'fps / direct-shm':>17}")
        for path, row in rows.items():
            print(f"  {path:<12} {row['p50_ms']:>8} {row['added_vs_direct_shm_ms']:>+20} "
                  f"{row['fps_in_flight']:>8} {row['fps_vs_direct_shm']:>17}")
