"""Limits of the AIRuntime port in-process (real server on port 0, fake Triton): the stream caps,
the idle timeout and the server's keepalive; tests/integration/test_sidecar.py proves them against
the real inference server, with a client frozen by SIGSTOP."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from sidecar._proto import airuntime_pb2 as pb
from sidecar.client import AIRuntimeClient, make_request
from sidecar.main import Sidecar, build_core
from sidecar.request.limits import StreamLimits
from tests.sidecar.abuse import frozen_stream_client, until
from tests.sidecar.conftest import image_bytes

JPEG = image_bytes(32, 32)
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # a channel of its own: its own connection


@pytest.fixture
async def serve(settings, fake_triton):
    started: list[Sidecar] = []

    async def start(**overrides) -> Sidecar:
        configured = settings.model_copy(update=overrides)
        running = Sidecar(configured, build_core(configured, fake_triton))
        await running.start()
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop(grace=0.5)


async def _open(client: AIRuntimeClient, frame_id: str) -> grpc.aio.StreamStreamCall:
    """An InferStream that has answered one frame (so the server admitted it)."""
    call = client.open_stream()
    await call.write(make_request("alpha", "1.0.0", JPEG, frame_id=frame_id))
    answer = await asyncio.wait_for(call.read(), 5)
    assert answer.frame_id == frame_id and answer.HasField("result"), answer
    return call


async def _refusal(client: AIRuntimeClient) -> grpc.aio.AioRpcError:
    call = client.open_stream()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call.write(make_request("alpha", "1.0.0", JPEG, frame_id="refused"))
        await asyncio.wait_for(call.read(), 5)
    return refused.value


async def _ended(call: grpc.aio.StreamStreamCall) -> grpc.aio.AioRpcError:
    """How the server ended ``call`` (its next read raises the status)."""
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await asyncio.wait_for(call.read(), 5)
    return ended.value


async def test_stream_caps_refuse_the_next_stream_and_keep_the_others_serving(serve):
    running = await serve(max_streams=3, max_streams_per_connection=2)
    target = f"127.0.0.1:{running.port}"
    first = AIRuntimeClient(target, options=OWN_CONNECTION)
    second = AIRuntimeClient(target, options=OWN_CONNECTION)
    third = AIRuntimeClient(target, options=OWN_CONNECTION)
    try:
        calls = [await _open(first, "a0"), await _open(first, "a1")]
        refused = await _refusal(first)
        assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ("ruth-error-code", "OVERLOADED") in tuple(refused.trailing_metadata())
        assert "max_streams_per_connection" in refused.details()
        calls.append(await _open(second, "b0"))  # another connection: the process has room for one
        refused = await _refusal(third)
        assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_streams" in refused.details() and "3 InferStream streams" in refused.details()
        for n, call in enumerate(calls):  # the open streams still serve
            await call.write(make_request("alpha", "1.0.0", JPEG, frame_id=f"again{n}"))
            assert (await asyncio.wait_for(call.read(), 5)).frame_id == f"again{n}"
        streams = running.core.streams
        assert (streams.open, streams.connections, streams.refused) == (3, 2, {"process": 1, "connection": 1})
        await calls[0].done_writing()
        assert await calls[0].read() is grpc.aio.EOF
        assert await until(lambda: streams.open == 2, 30)
        calls.append(await _open(first, "a2"))  # the place it left is free again
        assert running.core.streams.open == 3
    finally:
        for client in (first, second, third):
            await client.close()
    assert await until(lambda: running.core.streams.open == 0 and running.core.streams.connections == 0, 30)


async def test_idle_stream_is_closed_after_the_idle_timeout_and_an_active_one_is_not(serve):
    running = await serve(stream_idle_timeout_s=1.0)
    loop = asyncio.get_running_loop()
    async with AIRuntimeClient(f"127.0.0.1:{running.port}") as client:
        opened = loop.time()
        idle = await _open(client, "idle")
        closed_after: list[float] = []
        closing = asyncio.ensure_future(_ended(idle))
        closing.add_done_callback(lambda _: closed_after.append(loop.time() - opened))
        active = await _open(client, "active")
        n = 0
        while not closing.done() or n < 3:  # a frame every 0.1 s: never idle for 1 s
            await asyncio.sleep(0.1)
            await active.write(make_request("alpha", "1.0.0", JPEG, frame_id=f"active{n}"))
            assert (await asyncio.wait_for(active.read(), 5)).frame_id == f"active{n}"
            n += 1
        closed = await closing
        assert closed.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "stream_idle_timeout_s" in closed.details()
        assert ("ruth-error-code", "TIMEOUT") in tuple(closed.trailing_metadata())
        assert closed_after[0] >= 0.99, closed_after  # not before 1 s after its last request
        assert (running.core.streams.open, running.core.streams.closed_idle) == (1, 1)
        await active.done_writing()
        assert await active.read() is grpc.aio.EOF
        assert await active.code() is grpc.StatusCode.OK


async def test_idle_timeout_spares_a_stream_until_its_requests_are_answered(serve, fake_triton):
    fake_triton.behaviours["alpha__1.0.0"] = lambda request: None  # never answers: the deadline does
    running = await serve(stream_idle_timeout_s=0.2, request_timeout_ms=1500)
    leases = running.core.leases
    async with AIRuntimeClient(f"127.0.0.1:{running.port}") as client:
        call = client.open_stream()
        await call.write(make_request("alpha", "1.0.0", JPEG, frame_id="slow"))
        await asyncio.sleep(0.5)  # idle for longer than 0.2 s, with a request in flight
        assert leases.count("alpha__1.0.0") == 1 and running.core.streams.open == 1
        answer = await asyncio.wait_for(call.read(), 5)
        assert answer.error.code == pb.TIMEOUT
        closed = await _ended(call)  # closed once nothing is in flight
        assert closed.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert leases.count("alpha__1.0.0") == 0 and running.core.streams.open == 0


async def test_stream_of_a_client_that_stops_answering_pings_is_closed_by_keepalive(
    serve, fake_triton, tmp_path
):
    fake_triton.behaviours["alpha__1.0.0"] = lambda request: None  # in flight until the stream ends
    running = await serve(grpc_keepalive_time_s=0.5, grpc_keepalive_timeout_s=0.5,
                          request_timeout_ms=60_000, stream_idle_timeout_s=0)  # fmt: skip
    frame = tmp_path / "frame.jpg"
    frame.write_bytes(JPEG)
    loop = asyncio.get_running_loop()
    leases, streams = running.core.leases, running.core.streams
    with frozen_stream_client(f"127.0.0.1:{running.port}", "alpha", "1.0.0", frame):
        frozen = loop.time()
        assert await until(lambda: leases.count("alpha__1.0.0") == 1, 30), "the frame never arrived"
        assert streams.open == 1
        assert await until(lambda: streams.open == 0, 30), "the frozen client's stream is still open"
        reaped = loop.time() - frozen
    assert leases.count("alpha__1.0.0") == 0
    assert reaped < 10.0, reaped  # keepalive time + timeout (1 s), long before the request's 60 s


async def test_an_ending_stream_keeps_its_place_but_is_no_longer_closed_for_idleness():
    limits = StreamLimits(max_streams=1, max_per_connection=1, idle_timeout_s=0.05)
    admitted = limits.admit("peer:1")
    closed: list[str] = []
    admitted.watch(lambda: False, lambda: closed.append("idle"))
    admitted.unwatch()  # the transport is giving back what the stream held
    await asyncio.sleep(0.2)
    assert closed == [] and not admitted.idle
    assert limits.open == 1 and limits.connections == 1  # still counted until released
    admitted.release()
    assert limits.open == 0 and limits.connections == 0
