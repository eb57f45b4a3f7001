"""The adapter's unary lanes in front of a fake Triton stream stub (the real path: the
lane tests in tests/integration/test_sidecar.py)."""

from __future__ import annotations

import asyncio
import struct

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb

from sidecar.errors import ModelNotReady, RequestTimeout
from sidecar.triton_client import TritonAdapter, first_element
from tests.sidecar.abuse import until


class FakeCall:
    """One ModelStreamInfer call: answers each request with its id after ``delay`` seconds
    (``None``: never), in order."""

    def __init__(self, stub: FakeStub) -> None:
        self.stub = stub
        self.replies: asyncio.Queue = asyncio.Queue()
        self.cancelled = False
        self.writing = False

    async def write(self, request: pb.ModelInferRequest) -> None:
        if self.stub.broken:
            raise grpc.aio.UsageError("the call is closed")
        if self.writing:  # what grpc says of a second write before the first completed
            raise grpc.aio.UsageError("GRPC_CALL_ERROR_TOO_MANY_OPERATIONS")
        self.stub.sent.append((self, request.id))
        delay = self.stub.delays.get(request.id, 0.0)
        if delay is not None:
            asyncio.get_running_loop().call_later(delay, self.replies.put_nowait, request.id)
        if self.stub.stuck_writes:  # a write that never completes until the call is cancelled
            while not self.cancelled:
                await asyncio.sleep(0.01)
            if self.stub.stuck_writes == "cancelled":  # grpc.aio, when the call was cancelled locally
                raise asyncio.CancelledError()
            raise grpc.aio.UsageError("the call was cancelled")
        if self.stub.slow_writes:  # the answer can arrive before the write call returns
            self.writing = True
            try:
                await asyncio.sleep(0.02)
            finally:
                self.writing = False

    async def read(self):
        request_id = await self.replies.get()
        reply = pb.ModelStreamInferResponse()
        reply.infer_response.id = request_id
        raw = f'{{"id": "{request_id}"}}'.encode()
        response = reply.infer_response
        response.outputs.add(name="RESULT", datatype="BYTES", shape=[1])
        response.raw_output_contents.append(len(raw).to_bytes(4, "little") + raw)
        response.outputs.add(name="MODEL_MS", datatype="FP64", shape=[1])
        response.raw_output_contents.append(struct.pack("<d", 1.5))  # the model's own time
        return reply

    def cancel(self) -> None:
        self.cancelled = True


class FakeStub:
    def __init__(self) -> None:
        self.calls: list[FakeCall] = []
        self.sent: list[tuple[FakeCall, str]] = []
        self.delays: dict[str, float | None] = {}
        self.broken = False
        self.slow_writes = False
        self.stuck_writes: bool | str = False

    def ModelStreamInfer(self) -> FakeCall:
        call = FakeCall(self)
        self.calls.append(call)
        return call


@pytest.fixture
def adapter():
    adapter = TritonAdapter("fake:0")
    adapter._stub = FakeStub()  # type: ignore[assignment]
    return adapter


def request(request_id: str) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name="m__1.0.0", id=request_id)


async def answer(adapter: TritonAdapter, request_id: str, timeout_s: float = 1.0) -> bytes:
    """The RESULT JSON of one unary request, checking the model's own time came with it."""
    result, model_ms = await adapter.infer(request(request_id), timeout_s)
    assert model_ms == 1.5
    return first_element(result)


async def test_sequential_requests_reuse_one_lane(adapter):
    answers = [await answer(adapter, str(n)) for n in range(5)]
    assert answers == [f'{{"id": "{n}"}}'.encode() for n in range(5)]
    assert len(adapter.stub.calls) == 1


async def test_concurrent_requests_get_a_lane_each_then_reuse_them(adapter):
    adapter.stub.delays.update({"a": 0.05, "b": 0.01})
    first = await asyncio.gather(answer(adapter, "a"), answer(adapter, "b"))
    assert first == [b'{"id": "a"}', b'{"id": "b"}']
    await asyncio.gather(adapter.infer(request("c"), 1.0), adapter.infer(request("d"), 1.0))
    assert len(adapter.stub.calls) == 2


async def test_timed_out_request_closes_its_lane_so_the_late_answer_goes_nowhere(adapter):
    adapter.stub.delays["slow"] = 0.2
    with pytest.raises(RequestTimeout):
        await adapter.infer(request("slow"), 0.05)
    assert adapter.stub.calls[0].cancelled
    assert await answer(adapter, "next") == b'{"id": "next"}'
    await asyncio.sleep(0.25)  # past the slow answer's time
    for n in range(3):
        assert await answer(adapter, f"after{n}") == f'{{"id": "after{n}"}}'.encode()
    assert len(adapter.stub.calls) == 2


async def test_cancelled_caller_closes_its_lane(adapter):
    adapter.stub.delays["never"] = None
    pending = asyncio.ensure_future(adapter.infer(request("never"), 5.0))
    assert await until(lambda: adapter.stub.sent, 30)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    assert adapter.stub.calls[0].cancelled
    assert await answer(adapter, "next") == b'{"id": "next"}'
    assert len(adapter.stub.calls) == 2


async def test_request_that_cannot_be_sent_fails_and_its_lane_is_dropped(adapter):
    assert await answer(adapter, "ok") == b'{"id": "ok"}'
    adapter.stub.broken = True
    with pytest.raises(ModelNotReady):
        await adapter.infer(request("lost"), 1.0)
    assert adapter.stub.calls[0].cancelled
    adapter.stub.broken = False
    assert await answer(adapter, "again") == b'{"id": "again"}'
    assert len(adapter.stub.calls) == 2


async def test_close_ends_every_lane(adapter):
    adapter.stub.delays["never"] = None
    pending = asyncio.ensure_future(adapter.infer(request("never"), 5.0))
    assert await until(lambda: adapter.stub.sent, 30)
    await adapter.infer(request("idle"), 1.0)
    await adapter.close()
    assert all(call.cancelled for call in adapter.stub.calls)
    pending.cancel()


async def test_a_lane_answered_before_its_write_returned_takes_no_request_until_the_write_is_done(adapter):
    adapter.stub.slow_writes = True
    first = asyncio.ensure_future(answer(adapter, "a"))
    await asyncio.sleep(0.005)  # "a" is answered; its write has not returned yet
    assert await answer(adapter, "b") == b'{"id": "b"}'  # on another lane, not a second write on a's
    assert await first == b'{"id": "a"}'
    assert len(adapter.stub.calls) == 2 and not any(call.cancelled for call in adapter.stub.calls)
    assert await answer(adapter, "c") == b'{"id": "c"}'  # and a's lane serves again afterwards
    assert len(adapter.stub.calls) == 2


@pytest.mark.parametrize("ends", [True, "cancelled"])
async def test_a_write_that_does_not_complete_is_answered_timeout_at_the_deadline(adapter, ends):
    # grpc.aio ends a write on a call cancelled meanwhile with CancelledError (waiting for the call's
    # metadata, or in the send itself): that is the stream ended at the deadline, not our caller's
    # cancellation, and the request still gets its TIMEOUT
    adapter.stub.stuck_writes = ends
    adapter.stub.delays["stuck"] = None  # and no answer comes
    with pytest.raises(RequestTimeout):
        await asyncio.wait_for(adapter.infer(request("stuck"), 0.1), 10)
    assert adapter.stub.calls[0].cancelled
    adapter.stub.stuck_writes = False
    assert await answer(adapter, "next") == b'{"id": "next"}'


async def test_a_lane_taken_again_before_its_last_caller_resumed_keeps_the_new_request_deadline(adapter):
    # The answer to "a" puts its lane back among the idle ones at once; "b" takes that lane before
    # a's caller has run again. a's caller finishing must not take b's deadline with it: b, which
    # is never answered, still gets its TIMEOUT
    adapter.stub.delays.update({"a": None, "b": None})
    loop = asyncio.get_running_loop()
    later: list[asyncio.Future] = []
    first = asyncio.ensure_future(adapter.infer(request("a"), 5.0))
    assert await until(lambda: adapter.stub.sent, 30)
    (call, _), = adapter.stub.sent

    def answer_a_then_send_b() -> None:
        call.replies.put_nowait("a")  # the lane's reader runs first, then b, then a's caller
        later.append(asyncio.ensure_future(adapter.infer(request("b"), 0.1)))

    loop.call_soon(answer_a_then_send_b)
    result, _ = await first
    assert first_element(result) == b'{"id": "a"}'
    assert await until(lambda: later, 30)
    with pytest.raises(RequestTimeout):
        await asyncio.wait_for(later[0], 10)
    assert [(c, r) for c, r in adapter.stub.sent] == [(call, "a"), (call, "b")]  # the same lane
