"""Unit-test fixtures of the sidecar: a real repository of small plugins and a fake Triton adapter.

The repository is built by ruthgen from plugins written here (``write_plugin``), so the sidecar
reads a real manifest. The fake stands in for ``sidecar.triton_client.TritonAdapter`` only to test
the code in front of Triton; tests/integration/test_sidecar.py proves the same paths against the
real server. It receives the real ``ModelInferRequest`` messages the sidecar builds and answers them
by model name: ``behaviours[triton_name]`` is a function ``(request) -> bytes | str | None``
returning the RESULT JSON, a Triton error message (str), or None for a model that never answers.
"""

from __future__ import annotations

import asyncio
import io
import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ruthgen.writer import build_repository
from sidecar.errors import ModelLoadError
from sidecar.main import build_core
from sidecar.settings import SidecarSettings, load_settings
from sidecar.triton_client import IndexEntry, error_from_triton

Behaviour = Callable[[Any], "bytes | str | None"]


def image_bytes(width: int = 64, height: int = 48, fmt: str = "JPEG") -> bytes:
    pixels = (np.arange(width * height * 3) % 251).astype("uint8").reshape(height, width, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def write_plugin(models: Path, model_id: str, version: str = "1.0.0", **input_spec: Any) -> Path:
    """A minimal plugin (``model.yaml`` + ``inference.py``); ``input_spec`` overrides the input block."""
    spec = {"type": "frame", "format": "jpeg", "min_width": 8, "min_height": 8, **input_spec}
    folder = models / model_id / version
    folder.mkdir(parents=True, exist_ok=True)
    lines = "\n".join(f"  {key}: {value}" for key, value in spec.items())
    (folder / "model.yaml").write_text(
        f'model_id: {model_id}\nversion: "{version}"\ndisplay_name: {model_id}\ninput:\n{lines}\n'
        "output:\n  schema:\n    ok: {type: boolean}\n"
    )
    (folder / "inference.py").write_text(
        textwrap.dedent(
            """
            def load(context):
                return None

            def infer(state, frame):
                return {"ok": True}
            """
        )
    )
    return folder


def plugins(models: Path) -> Path:
    """The plugins the unit tests route to: two versions of alpha, png, raw, temporal, an invalid one."""
    write_plugin(models, "alpha", max_width=1920, max_height=1080)
    write_plugin(models, "alpha", "2.0.0")
    write_plugin(models, "beta", format="png")
    write_plugin(models, "rawcam", format="raw_rgb")
    write_plugin(models, "tracker", type="temporal")
    write_plugin(models, "broken", format="gif")
    return models


def echo(request) -> bytes:
    params = {k: v.string_param for k, v in request.parameters.items() if v.HasField("string_param")}
    return json.dumps({"model": request.model_name, "frame_id": params.get("frame_id", "")}).encode()


class FakeStream:
    """Answers in the order requests were sent, as Triton's ModelStreamInfer does: a request that
    never completes holds back every later answer on the same stream."""

    def __init__(self, adapter: FakeTriton, on_reply, on_close) -> None:
        self.adapter = adapter
        self.on_reply = on_reply
        self.on_close = on_close
        self.closed = False
        self.sent: list[Any] = []
        self._queue: list[list[Any]] = []  # [request, answer, complete]

    async def send(self, request) -> None:
        self.sent.append(request)
        self.adapter.requests.append(request)
        await asyncio.sleep(0)
        item = [request, self.adapter.answer(request), False]
        self._queue.append(item)
        if item[1] is None:
            return
        delay = self.adapter.delays.get(request.model_name, 0.0)

        def complete() -> None:
            item[2] = True
            self._deliver()

        asyncio.get_running_loop().call_later(delay, complete)

    def _deliver(self) -> None:
        while self._queue and self._queue[0][2] and not self.closed:
            request, answer, _ = self._queue.pop(0)
            if isinstance(answer, str):
                then = self.on_reply(request.id, None, error_from_triton(answer), None)
            else:
                then = self.on_reply(request.id, answer, None, self.adapter.model_ms.get(request.model_name))
            if then is not None:  # the adapter awaits it before reading the next reply
                self.adapter.writes.append(asyncio.ensure_future(then))

    async def close(self) -> None:
        self.closed = True


class FakeTriton:
    """The adapter's interface, answering from ``behaviours`` (see the module docstring)."""

    def __init__(self) -> None:
        self.url = "fake:0"
        self.ready = True
        self.index: dict[str, tuple[str, str]] = {}
        self.behaviours: dict[str, Behaviour] = {}
        self.delays: dict[str, float] = {}
        self.model_ms: dict[str, float] = {}  # the model's own time an answer reports (none: not reported)
        self.load_failures: dict[str, str] = {}
        self.loads: list[str] = []
        self.unloads: list[str] = []
        self.requests: list[Any] = []
        self.streams: list[FakeStream] = []
        self.writes: list[asyncio.Future] = []
        self.shared_memory: dict[str, str] = {}  # registered system shared-memory regions: name -> key

    def answer(self, request) -> bytes | str | None:
        """RESULT serialised as Triton does (a behaviour's bytes, or list of bytes for a batch), a
        Triton error message, or None (no answer)."""
        answer = self.behaviours.get(request.model_name, echo)(request)
        if isinstance(answer, bytes):
            answer = [answer]
        if isinstance(answer, list):
            return b"".join(len(item).to_bytes(4, "little") + item for item in answer)
        return answer

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def server_ready(self, timeout_s: float = 2.0) -> bool:
        return self.ready

    async def repository_index(self, timeout_s: float = 5.0) -> list[IndexEntry]:
        return [IndexEntry(name, "1", state, reason) for name, (state, reason) in self.index.items()]

    async def load_model(self, name: str, timeout_s: float = 300.0) -> None:
        self.loads.append(name)
        if name in self.load_failures:
            reason = self.load_failures[name]
            self.index[name] = ("UNAVAILABLE", reason)
            raise ModelLoadError(f"load failed for model '{name}': {reason}")
        self.index[name] = ("READY", "")

    async def unload_model(self, name: str, timeout_s: float = 60.0) -> None:
        self.unloads.append(name)
        self.index[name] = ("UNAVAILABLE", "unloaded")

    async def model_statistics(self, name: str, timeout_s: float = 5.0) -> dict[str, Any]:
        return {}

    async def register_system_shared_memory(self, name: str, key: str, byte_size: int) -> None:
        self.shared_memory[name] = key

    async def unregister_system_shared_memory(self, name: str) -> None:
        self.shared_memory.pop(name, None)

    async def system_shared_memory_regions(self) -> dict[str, str]:
        return dict(self.shared_memory)

    async def infer(self, request, timeout_s: float) -> tuple[bytes, float | None]:
        self.requests.append(request)
        answer = self.answer(request)
        delay = self.delays.get(request.model_name, 0.0)
        if answer is None or delay > timeout_s:
            await asyncio.sleep(timeout_s)
            raise error_from_triton("Deadline Exceeded", __import__("grpc").StatusCode.DEADLINE_EXCEEDED)
        await asyncio.sleep(delay)
        if isinstance(answer, str):
            raise error_from_triton(answer)
        return answer, self.model_ms.get(request.model_name)

    def open_stream(self, on_reply, on_close) -> FakeStream:
        stream = FakeStream(self, on_reply, on_close)
        self.streams.append(stream)
        return stream


@pytest.fixture
def fake_triton() -> FakeTriton:
    return FakeTriton()


@pytest.fixture(scope="session")
def built_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sidecar-unit")
    repository = root / "model_repository"
    build_repository(plugins(root / "models"), repository)
    return repository


@pytest.fixture
def repository(built_repository: Path) -> Path:
    return built_repository


@pytest.fixture
def settings(repository: Path) -> SidecarSettings:
    return load_settings(
        grpc_port=0, http_port=None, model_repository=repository, triton_connect_timeout_s=0.5,
        refresh_interval_s=0.05, calibrate=False, watch_models=False, recovery_cooldown_s=0.0,
    )


@pytest.fixture
async def core(settings: SidecarSettings, fake_triton: FakeTriton):
    runtime = build_core(settings, fake_triton)  # type: ignore[arg-type]
    await runtime.start()
    yield runtime
    await runtime.stop()
