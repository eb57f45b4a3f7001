"""A stand-in for the backend's registration endpoint, served on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import uvicorn
from fastapi import FastAPI, Request


class FakeBackend:
    """The backend's registration endpoint on a loopback port; keeps every declaration received."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.authorization: list[str | None] = []
        app = FastAPI()

        @app.post("/api/internal/runtime/register")
        async def register(request: Request) -> dict[str, bool]:
            self.received.append(await request.json())
            self.authorization.append(request.headers.get("authorization"))
            return {"accepted": True}

        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self._server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def __aenter__(self) -> FakeBackend:
        self._task = asyncio.get_running_loop().create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)
        self.url = f"http://127.0.0.1:{self._server.servers[0].sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.should_exit = True
        assert self._task is not None
        await self._task

    def models(self, index: int = -1) -> dict[tuple[str, str], dict[str, Any]]:
        return {(m["model_id"], m["version"]): m for m in self.received[index]["models"]}
