"""Clients that misbehave, for the tests of the sidecar's limits, and waiting for its reaction.

:func:`frozen_stream_client`: a client process that opens an InferStream, sends one frame and is
then frozen with SIGSTOP: its socket stays open and its kernel still acknowledges TCP, but nothing
answers HTTP/2 pings any more, as with a camera whose network vanished without closing its stream."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import asyncio, sys
from sidecar.client import AIRuntimeClient, make_request

async def main(target, model_id, version, path):
    async with AIRuntimeClient(target) as client:
        call = client.open_stream()
        data = open(path, "rb").read()
        await call.write(make_request(model_id, version, data, frame_id="frozen"))
        print("sent", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:]))
"""


@contextlib.contextmanager
def frozen_stream_client(target: str, model_id: str, version: str, frame: Path) -> Iterator[int]:
    """Yield the pid of a client that sent one frame on an InferStream to ``target`` and was then
    stopped (SIGSTOP); it is killed afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, target, model_id, version, str(frame)],
        stdout=subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip() == b"sent", f"the client did not send its frame (exit {process.poll()})"
        os.kill(process.pid, signal.SIGSTOP)
        yield process.pid
    finally:
        process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


async def until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` every 20 ms until it holds (True) or ``timeout_s`` passed (False)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not condition():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.02)
    return True
