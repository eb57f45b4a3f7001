"""The load clients of ``bench_sidecar.py``, each run in its own process (``client_main``).

Paths: ``sidecar`` (the AIRuntime contract, unary and InferStream), ``direct`` (Triton with
``tritonclient.grpc.aio``: ``infer`` and ``stream_infer``), and ``paired`` (1 in flight: direct, the
sidecar and any other AIRuntime servers in ``spec["addresses"]`` take turns request by request).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def client_main(spec: dict[str, Any], ready: mp.Queue, go: Any, window: Any, queue: mp.Queue) -> None:
    import grpc  # noqa: F401  (import what the client needs before the clock starts)
    import tritonclient.grpc.aio  # noqa: F401

    from sidecar._proto import airuntime_pb2_grpc  # noqa: F401

    ready.put(os.getpid())
    go.wait()
    latencies = asyncio.run(_client(spec, window[0], window[1]))
    queue.put(latencies)


async def _client(spec: dict[str, Any], start_at: float, end_at: float):
    path, mode = spec["path"], spec["mode"]
    if path == "paired":
        return await _paired(spec, start_at, end_at)
    runner = {
        ("sidecar", "unary"): _sidecar_unary,
        ("sidecar", "stream"): _sidecar_stream,
        ("direct", "unary"): _direct_unary,
        ("direct", "stream"): _direct_stream,
    }[(path, mode)]
    return await runner(spec, start_at, end_at)


def _window(now: float, start_at: float, end_at: float) -> bool:
    return start_at <= now < end_at


async def _sidecar_unary(spec, start_at, end_at) -> list[float]:
    import grpc

    from sidecar._proto import airuntime_pb2 as pb
    from sidecar._proto import airuntime_pb2_grpc as pb_grpc

    data = Path(spec["jpeg"]).read_bytes()
    async with grpc.aio.insecure_channel(spec["address"]) as channel:
        stub = pb_grpc.AIRuntimeStub(channel)
        latencies: list[float] = []

        async def worker(index: int) -> None:
            request = pb.InferenceRequest(
                model_id=spec["model"],
                version=spec["version"],
                camera_id=f"cam{index}",
                frame=pb.Frame(data=data, format=pb.JPEG),
            )
            n = 0
            while (now := time.perf_counter()) < end_at:
                n += 1
                request.frame_id = str(n)
                await stub.Infer(request)
                done = time.perf_counter()
                if _window(now, start_at, end_at):
                    latencies.append(done - now)

        await asyncio.gather(*(worker(i) for i in range(spec["in_flight"])))
        return latencies


async def _sidecar_stream(spec, start_at, end_at) -> list[float]:
    import grpc

    from sidecar._proto import airuntime_pb2 as pb
    from sidecar._proto import airuntime_pb2_grpc as pb_grpc

    data = Path(spec["jpeg"]).read_bytes()
    async with grpc.aio.insecure_channel(spec["address"]) as channel:
        call = pb_grpc.AIRuntimeStub(channel).InferStream()
        sent: dict[str, float] = {}
        latencies: list[float] = []
        window = asyncio.Semaphore(spec["in_flight"])
        request = pb.InferenceRequest(
            model_id=spec["model"],
            version=spec["version"],
            camera_id="cam",
            frame=pb.Frame(data=data, format=pb.JPEG),
        )

        async def write() -> None:
            n = 0
            while time.perf_counter() < end_at:
                await window.acquire()
                n += 1
                request.frame_id = frame_id = str(n)
                sent[frame_id] = time.perf_counter()
                await call.write(request)
            await call.done_writing()

        writer = asyncio.ensure_future(write())
        async for response in call:
            done = time.perf_counter()
            began = sent.pop(response.frame_id)
            if response.HasField("error"):
                raise RuntimeError(response.error.message)
            if _window(began, start_at, end_at):
                latencies.append(done - began)
            window.release()
        await writer
        return latencies


async def _paired(spec, start_at, end_at) -> dict[str, list[float]]:
    """One request at a time, the paths taking turns: {path: latencies} with equal counts."""
    import grpc

    from sidecar._proto import airuntime_pb2 as pb

    triton_aio, inputs = _direct_inputs(spec)
    data = Path(spec["jpeg"]).read_bytes()
    frame = pb.Frame(data=data, format=pb.JPEG)
    request = pb.InferenceRequest(model_id=spec["model"], version=spec["version"], camera_id="c", frame=frame)
    client = triton_aio.InferenceServerClient(spec["triton"])
    channels = {path: grpc.aio.insecure_channel(address) for path, address in spec["addresses"].items()}
    name = f"{spec['model']}__{spec['version']}"
    build = _unary_turns if spec["mode"] == "unary" else _stream_turns
    paths, finish = build(client, name, inputs, channels, request)
    latencies: dict[str, list[float]] = {path: [] for path in paths}
    # Direct goes first; the forwarders after it swap places every other turn: the one right after
    # direct runs the client's AIRuntime code cold (tritonclient's ran last), which a fixed order
    # charges to that forwarder alone (about 0.04 ms at 1 in flight here, see benchmarks/README.md)
    order = list(paths.items())
    orders = [order, [order[0], *reversed(order[1:])]] if spec.get("alternate", True) else [order]
    n = 0
    while time.perf_counter() < end_at:
        n += 1
        for path, send in orders[n % len(orders)]:
            began = time.perf_counter()
            await send(n)
            if _window(began, start_at, end_at):
                latencies[path].append(time.perf_counter() - began)
    await finish()
    await client.close()
    for channel in channels.values():
        await channel.close()
    count = min(len(v) for v in latencies.values())  # whole turns only
    return {path: values[:count] for path, values in latencies.items()}


def _checked(response) -> None:
    if response.HasField("error"):
        raise RuntimeError(response.error.message)


def _unary_turns(client, name, inputs, channels, request):
    from sidecar._proto import airuntime_pb2_grpc as pb_grpc

    async def direct(n: int) -> None:
        (await client.infer(name, inputs)).as_numpy("RESULT")

    def through(channel):
        infer = pb_grpc.AIRuntimeStub(channel).Infer

        async def one(n: int) -> None:
            request.frame_id = str(n)
            _checked(await infer(request))

        return one

    async def finish() -> None:
        pass

    return {"direct": direct, **{path: through(c) for path, c in channels.items()}}, finish


def _stream_turns(client, name, inputs, channels, request):
    from sidecar._proto import airuntime_pb2_grpc as pb_grpc

    asked: asyncio.Queue = asyncio.Queue()

    async def feed():
        while (item := await asked.get()) is not None:
            yield item

    replies = client.stream_infer(feed()).__aiter__()

    async def direct(n: int) -> None:
        asked.put_nowait({"model_name": name, "inputs": inputs, "request_id": str(n)})
        result, error = await replies.__anext__()
        if error is not None:
            raise RuntimeError(str(error))
        result.as_numpy("RESULT")

    calls = [pb_grpc.AIRuntimeStub(channel).InferStream() for channel in channels.values()]

    def through(call):
        async def one(n: int) -> None:
            request.frame_id = str(n)
            await call.write(request)
            _checked(await call.read())

        return one

    async def finish() -> None:
        for call in calls:
            await call.done_writing()
        asked.put_nowait(None)

    return {"direct": direct, **{path: through(c) for path, c in zip(channels, calls, strict=True)}}, finish


def _direct_inputs(spec):
    import tritonclient.grpc.aio as triton_aio

    data = np.frombuffer(Path(spec["jpeg"]).read_bytes(), dtype=np.uint8)
    frame = triton_aio.InferInput("FRAME", [data.size], "UINT8")
    frame.set_data_from_numpy(data)
    return triton_aio, [frame]


async def _direct_unary(spec, start_at, end_at) -> list[float]:
    triton_aio, inputs = _direct_inputs(spec)
    client = triton_aio.InferenceServerClient(spec["triton"])
    name = f"{spec['model']}__{spec['version']}"
    latencies: list[float] = []

    async def worker() -> None:
        while (now := time.perf_counter()) < end_at:
            result = await client.infer(name, inputs)
            result.as_numpy("RESULT")
            done = time.perf_counter()
            if _window(now, start_at, end_at):
                latencies.append(done - now)

    try:
        await asyncio.gather(*(worker() for _ in range(spec["in_flight"])))
    finally:
        await client.close()
    return latencies


async def _direct_stream(spec, start_at, end_at) -> list[float]:
    triton_aio, inputs = _direct_inputs(spec)
    client = triton_aio.InferenceServerClient(spec["triton"])
    name = f"{spec['model']}__{spec['version']}"
    window = asyncio.Semaphore(spec["in_flight"])
    sent: dict[str, float] = {}
    latencies: list[float] = []
    finished = asyncio.Event()

    async def requests():
        n = 0
        while time.perf_counter() < end_at:
            await window.acquire()
            n += 1
            sent[str(n)] = time.perf_counter()
            yield {"model_name": name, "inputs": inputs, "request_id": str(n)}
        while sent:  # keep the stream open until every answer is in
            await asyncio.sleep(0.01)
        finished.set()

    try:
        async for result, error in client.stream_infer(requests()):
            done = time.perf_counter()
            if error is not None:
                raise RuntimeError(str(error))
            result.as_numpy("RESULT")
            began = sent.pop(result.get_response().id)
            if _window(began, start_at, end_at):
                latencies.append(done - began)
            window.release()
            if finished.is_set():
                break
    finally:
        await client.close()
    return latencies
