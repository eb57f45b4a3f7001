from __future__ import annotations

import asyncio
import json

import httpx

from sidecar.report.registration import Registrar, RegistrationConfig


class Backend:
    """An httpx transport standing for the backend; ``down`` answers 503."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.headers: list[httpx.Headers] = []
        self.down = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/internal/runtime/register"
        if self.down:
            return httpx.Response(503, text="down")
        self.received.append(json.loads(request.content))
        self.headers.append(request.headers)
        return httpx.Response(200, json={"ok": True})


async def _wait_for(predicate, timeout=3.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _registrar(backend, counter, **kwargs):
    config = RegistrationConfig(backend_url="http://backend", token="s3cret", debounce_s=0.05,
                                heartbeat_s=kwargs.pop("heartbeat_s", 60.0), backoff_s=0.02, **kwargs)

    def build():
        counter[0] += 1
        return {"n": counter[0]}

    return Registrar(config, build, transport=httpx.MockTransport(backend.handler))


async def test_registrar_registers_at_start_with_the_bearer_token():
    backend, counter = Backend(), [0]
    registrar = _registrar(backend, counter)
    registrar.start()
    await _wait_for(lambda: backend.received)
    assert backend.headers[0]["authorization"] == "Bearer s3cret"
    await registrar.stop()


async def test_registrar_sends_once_for_a_burst_of_changes():
    backend, counter = Backend(), [0]
    registrar = _registrar(backend, counter)
    registrar.start()
    await _wait_for(lambda: len(backend.received) == 1)
    for _ in range(50):
        registrar.mark_dirty()
    await _wait_for(lambda: len(backend.received) == 2)
    await asyncio.sleep(0.2)
    assert len(backend.received) == 2
    await registrar.stop()


async def test_registrar_sends_a_heartbeat_when_nothing_changes():
    backend, counter = Backend(), [0]
    registrar = _registrar(backend, counter, heartbeat_s=0.1)
    registrar.start()
    await _wait_for(lambda: len(backend.received) >= 3)
    await registrar.stop()


async def test_registrar_retries_with_backoff_when_the_backend_is_down():
    backend, counter = Backend(), [0]
    backend.down = True
    registrar = _registrar(backend, counter)
    registrar.start()
    await _wait_for(lambda: registrar.status.failures >= 3)
    assert "HTTP 503" in registrar.status.last_error
    backend.down = False
    await _wait_for(lambda: backend.received)
    assert registrar.status.sent == 1 and backend.received[-1]["n"] == counter[0]
    await registrar.stop()


async def test_registrar_survives_a_connection_error():
    def refuse(request):
        raise httpx.ConnectError("refused", request=request)

    registrar = Registrar(RegistrationConfig(backend_url="http://backend", backoff_s=0.01, debounce_s=0.0),
                          lambda: {}, transport=httpx.MockTransport(refuse))
    registrar.start()
    await _wait_for(lambda: registrar.status.failures >= 2)
    assert "ConnectError" in registrar.status.last_error
    await registrar.stop()


async def test_mark_dirty_never_blocks_and_is_a_noop_when_disabled():
    registrar = Registrar(RegistrationConfig(), lambda: {})
    for _ in range(1000):
        registrar.mark_dirty()
    registrar.start()
    assert not registrar.enabled
    await registrar.stop()
