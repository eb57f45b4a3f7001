"""Capability registration with the backend: POST the declaration, keep it fresh.

What it holds and when it is sent: docs/lifecycle.md#capability-registration.

``POST <backend_url>/api/internal/runtime/register`` with the declaration's JSON and, when configured,
``Authorization: Bearer <token>``. It is sent once :meth:`Registrar.start` is called (after the
initial loads), again after every change (:meth:`Registrar.mark_dirty`, debounced), and every
``heartbeat_s``. While the backend is down it retries with exponential backoff (``backoff_s`` doubling
up to ``backoff_max_s``), sending the newest declaration each time.

It never slows inference: :meth:`mark_dirty` only sets a flag in a one-slot queue (a full queue
already means "send again"), and the POST runs in its own asyncio task with bounded timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from sidecar.control.tasks import cancelled

LOGGER = logging.getLogger(__name__)
REGISTER_PATH = "/api/internal/runtime/register"


@dataclass(frozen=True)
class RegistrationConfig:
    backend_url: str | None = None  # None: registration is off
    token: str | None = None
    heartbeat_s: float = 30.0
    debounce_s: float = 0.5
    timeout_s: float = 5.0
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0

    @property
    def url(self) -> str | None:
        return None if not self.backend_url else self.backend_url.rstrip("/") + REGISTER_PATH


@dataclass
class RegistrationStatus:
    sent: int = 0
    failures: int = 0
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Registrar:
    """Sends the declaration built by ``build`` to the backend, in the background."""

    def __init__(
        self,
        config: RegistrationConfig,
        build: Callable[[], dict[str, Any]],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self._build = build
        self._transport = transport
        self._dirty: asyncio.Queue[None] = asyncio.Queue(maxsize=1)
        self._task: asyncio.Task[None] | None = None
        self.status = RegistrationStatus()

    @property
    def enabled(self) -> bool:
        return self.config.url is not None

    def mark_dirty(self) -> None:
        """Ask for a new registration soon; never blocks, safe on the inference path."""
        with contextlib.suppress(asyncio.QueueFull):
            self._dirty.put_nowait(None)

    def start(self) -> None:
        """Register now, then on every change and heartbeat (call after the initial loads)."""
        if not self.enabled or self._task is not None:
            return
        self.mark_dirty()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ruth-registration")

    async def stop(self) -> None:
        await cancelled(self._task)
        self._task = None

    async def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.config.token}"} if self.config.token else {}
        async with httpx.AsyncClient(
            timeout=self.config.timeout_s, headers=headers, transport=self._transport
        ) as client:
            while True:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._dirty.get(), timeout=self.config.heartbeat_s)
                    await asyncio.sleep(self.config.debounce_s)  # let a burst of changes settle
                await self._send_until_accepted(client)

    async def _send_until_accepted(self, client: httpx.AsyncClient) -> None:
        delay = self.config.backoff_s
        while True:
            with contextlib.suppress(asyncio.QueueEmpty):
                self._dirty.get_nowait()  # what is sent now includes every change so far
            if await self.send_once(client):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.backoff_max_s)

    async def send_once(self, client: httpx.AsyncClient) -> bool:
        """Build and POST one declaration; return True when the backend accepted it (2xx)."""
        assert self.config.url is not None
        try:
            declaration = self._build()
            response = await client.post(self.config.url, json=declaration)
            if response.is_success:
                self.status.sent += 1
                self.status.last_success_at = time.time()
                return True
            error = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug in building the declaration must not end the task
            LOGGER.exception("building the capability declaration failed")
            error = f"{type(exc).__name__}: {exc}"
        self.status.failures += 1
        self.status.last_error, self.status.last_error_at = error, time.time()
        LOGGER.warning("registration with %s failed (%s); retrying", self.config.url, error)
        return False
