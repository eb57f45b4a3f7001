"""The least a Python gRPC forwarder can do: AIRuntime in, Triton out, nothing else.

No routing table, checks, deadlines, statistics or error mapping: each client stream gets one
Triton ``ModelStreamInfer`` stream and replies are matched by request id; unary calls share one
reused Triton stream. ``bench_sidecar.py`` runs it beside the sidecar to show what the gRPC stack
alone costs on the machine (the floor under the sidecar's added latency).

    python benchmarks/floor_forwarder.py TRITON_HOST:PORT   # prints the port it serves on
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import grpc
from tritonclient.grpc import service_pb2 as tpb
from tritonclient.grpc import service_pb2_grpc as tpb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sidecar._proto import airuntime_pb2 as pb
from sidecar._proto import airuntime_pb2_grpc as pb_grpc

_LIMITS = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)]


def triton_request(message: pb.InferenceRequest, request_id: str) -> tpb.ModelInferRequest:
    request = tpb.ModelInferRequest(model_name=f"{message.model_id}__{message.version}", id=request_id)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "FRAME", "UINT8"
    tensor.shape.append(len(message.frame.data))
    request.raw_input_contents.append(message.frame.data)
    return request


def response(message: pb.InferenceRequest, reply: tpb.ModelInferResponse) -> pb.InferenceResponse:
    raw = reply.raw_output_contents[0]
    out = pb.InferenceResponse(
        frame_id=message.frame_id, camera_id=message.camera_id, model_id=message.model_id,
        version=message.version,
    )  # fmt: skip
    out.result.update(json.loads(raw[4 : 4 + int.from_bytes(raw[:4], "little")]))
    return out


class Forwarder(pb_grpc.AIRuntimeServicer):
    def __init__(self, stub: tpb_grpc.GRPCInferenceServiceStub) -> None:
        self._stub = stub
        self._shared: grpc.aio.StreamStreamCall | None = None
        self._waiting: dict[str, asyncio.Future] = {}
        self._ids = 0

    async def InferStream(self, request_iterator, context) -> None:
        call = self._stub.ModelStreamInfer()
        asked: dict[str, pb.InferenceRequest] = {}

        async def pump() -> None:
            ids = 0
            while (message := await context.read()) is not grpc.aio.EOF:
                ids += 1
                asked[str(ids)] = message
                await call.write(triton_request(message, str(ids)))
            await call.done_writing()

        task = asyncio.get_running_loop().create_task(pump())
        while (reply := await call.read()) is not grpc.aio.EOF:
            reply = reply.infer_response
            await context.write(response(asked.pop(reply.id), reply))
        await task

    async def Infer(self, message, context) -> pb.InferenceResponse:
        if self._shared is None:
            self._shared = self._stub.ModelStreamInfer()
            asyncio.get_running_loop().create_task(self._read_shared(self._shared))
        self._ids += 1
        request_id = str(self._ids)
        future = self._waiting[request_id] = asyncio.get_running_loop().create_future()
        await self._shared.write(triton_request(message, request_id))
        return response(message, await future)

    async def _read_shared(self, call) -> None:
        while (reply := await call.read()) is not grpc.aio.EOF:
            self._waiting.pop(reply.infer_response.id).set_result(reply.infer_response)


async def serve(triton_url: str) -> None:
    channel = grpc.aio.insecure_channel(triton_url, options=_LIMITS)
    server = grpc.aio.server(options=_LIMITS)
    pb_grpc.add_AIRuntimeServicer_to_server(Forwarder(tpb_grpc.GRPCInferenceServiceStub(channel)), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
