"""Routes and leases: what the request path reads, and what a retiring copy waits for."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.errors import ModelNotFound, ModelNotReady, VersionRequired
from sidecar.request.routes import Leases, Route, RouteTable


def table() -> RouteTable:
    routes = RouteTable()
    routes.publish(Route("alpha", "1.0.0", "READY", triton_name="alpha__1.0.0", format="jpeg"))
    routes.publish(Route("alpha", "2.0.0", "FAILED", "Internal: boom\ntraceback"))
    return routes


@pytest.mark.parametrize(
    ("model_id", "version", "error", "needle"),
    [
        ("nope", "1.0.0", ModelNotFound, "no model 'nope'"),
        ("alpha", "", VersionRequired, "available: 1.0.0, 2.0.0"),
        ("alpha", "3.0.0", ModelNotFound, "has no version '3.0.0'"),
        ("alpha", "2.0.0", ModelNotReady, "alpha 2.0.0 is FAILED: Internal: boom"),
    ],
)
def test_resolve_refuses_with_the_routing_error_when_a_version_cannot_serve(model_id, version, error, needle):
    with pytest.raises(error, match=needle):
        table().resolve(model_id, version)


def test_resolve_returns_the_route_published_last():
    routes = table()
    assert routes.resolve("alpha", "1.0.0").triton_name == "alpha__1.0.0"
    routes.publish(Route("alpha", "1.0.0", "READY", triton_name="alpha__1.0.0__b"))
    assert routes.resolve("alpha", "1.0.0").triton_name == "alpha__1.0.0__b"
    routes.withdraw("alpha", "1.0.0")
    with pytest.raises(ModelNotFound):
        routes.resolve("alpha", "1.0.0")


def test_route_of_a_raw_format_is_raw_and_bounds_read_any_when_open():
    route = Route("m", "1.0.0", "READY", format="raw_bgr", min_width=8, min_height=4, max_width=640)
    assert route.raw and route.serving
    assert route.bounds() == "8x4 to 640xany"


async def test_drained_waits_for_the_last_lease_of_a_copy():
    leases = Leases()
    leases.begin("m__1")
    leases.begin("m__1")
    leases.begin("other")
    waiter = asyncio.ensure_future(leases.drained("m__1", 5.0))
    await asyncio.sleep(0.01)
    leases.end("m__1")
    await asyncio.sleep(0.01)
    assert not waiter.done()
    leases.end("m__1")
    assert await asyncio.wait_for(waiter, 1.0) is True
    assert leases.count("other") == 1


async def test_drained_gives_up_after_its_timeout():
    leases = Leases()
    leases.begin("m__1")
    assert await leases.drained("m__1", 0.05) is False
    assert await leases.drained("idle", 0.05) is True
