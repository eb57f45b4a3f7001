"""Where requests for a model version go: one immutable :class:`Route` per version, and leases.

The control plane builds a new :class:`Route` whenever a version's state or serving copy changes
and publishes it with :meth:`RouteTable.publish`: one dictionary assignment, so a request sees
either the old route or the new one, never a mix. :class:`Leases` counts the requests in flight
per Triton copy; a copy being retired is unloaded once :meth:`Leases.drained` says none is left.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from ruthgen.interface import ENCODED_FORMATS
from sidecar.errors import ModelNotFound, ModelNotReady, VersionRequired

READY = "READY"
MAX_DEPTH = 8  # how deep :meth:`RouteTable.waiting` follows upstreams (validation allows 3)


@dataclass(frozen=True, slots=True)
class Route:
    """One model version as the request path sees it.

    ``serving`` is true only in state READY; then ``triton_name`` is the copy requests go to.
    Otherwise ``state`` and ``reason`` say why requests are refused (MODEL_NOT_READY).
    """

    model_id: str
    version: str
    state: str
    reason: str = ""
    triton_name: str = ""
    input_type: str = "frame"
    format: str = ""
    min_width: int = 1
    min_height: int = 1
    max_width: int | None = None
    max_height: int | None = None
    batched: bool = False
    sequence: bool = False
    max_batch: int = 1  # frames one request may carry: the Triton max_batch_size of a `batch` model
    limits_ms: int = 0  # the model's phase limits added up (0: unknown); its requests' time budget
    upstreams: tuple[tuple[str, str], ...] = ()  # the models whose results for a frame it needs

    @property
    def serving(self) -> bool:
        return self.state == READY

    @property
    def raw(self) -> bool:
        return self.format not in ENCODED_FORMATS

    def bounds(self) -> str:
        high_w = self.max_width if self.max_width is not None else "any"
        high_h = self.max_height if self.max_height is not None else "any"
        return f"{self.min_width}x{self.min_height} to {high_w}x{high_h}"


class RouteTable:
    """The published route of every known version, by ``(model_id, version)``."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Route] = {}
        #: the versions some route names as an upstream: their results are worth sharing
        self.upstream_keys: frozenset[tuple[str, str]] = frozenset()

    def publish(self, route: Route) -> None:
        self._routes[(route.model_id, route.version)] = route
        self._index()

    def withdraw(self, model_id: str, version: str) -> None:
        self._routes.pop((model_id, version), None)
        self._index()

    def _index(self) -> None:
        self.upstream_keys = frozenset(key for route in self._routes.values() for key in route.upstreams)

    def get(self, model_id: str, version: str) -> Route | None:
        return self._routes.get((model_id, version))

    def __iter__(self) -> Iterator[Route]:
        return iter(list(self._routes.values()))

    def waiting(self, route: Route, depth: int = 0) -> str | None:
        """Why ``route`` cannot serve because of its upstreams (one that is missing or not serving,
        however deep), or None when every upstream serves."""
        for key in route.upstreams:
            upstream = self._routes.get(key)
            if upstream is None or upstream.state != READY:
                state = "not there" if upstream is None else upstream.state
                return f"its upstream {key[0]} {key[1]} is {state}"
            if upstream.upstreams and depth < MAX_DEPTH:
                below = self.waiting(upstream, depth + 1)
                if below is not None:
                    return f"its upstream {key[0]} {key[1]} waits: {below}"
        return None

    def resolve(self, model_id: str, version: str) -> Route:
        """The serving route of ``(model_id, version)``, or the routing error: a model
        waiting for an upstream is not serving (MODEL_NOT_READY, naming the upstream and its state)."""
        route = self._routes.get((model_id, version))
        if route is not None and route.state == READY:
            if route.upstreams:
                why = self.waiting(route)
                if why is not None:
                    raise ModelNotReady(f"{model_id} {version} is not serving: {why}")
            return route
        if route is None:
            versions = sorted(v for m, v in self._routes if m == model_id)
            if not versions:
                raise ModelNotFound(f"no model {model_id!r}")
            available = ", ".join(versions)
            if not version:
                raise VersionRequired(f"version is required for {model_id!r} (available: {available})")
            raise ModelNotFound(f"model {model_id!r} has no version {version!r} (available: {available})")
        reason = f": {route.reason.strip().splitlines()[0]}" if route.reason.strip() else ""
        raise ModelNotReady(f"{model_id} {version} is {route.state}{reason}")


class Leases:
    """Requests in flight per Triton copy."""

    def __init__(self) -> None:
        self._count: dict[str, int] = {}
        self._drained: dict[str, asyncio.Event] = {}

    def begin(self, name: str) -> None:
        self._count[name] = self._count.get(name, 0) + 1

    def end(self, name: str) -> None:
        left = self._count.get(name, 1) - 1
        if left > 0:
            self._count[name] = left
            return
        self._count.pop(name, None)
        event = self._drained.get(name)
        if event is not None:
            event.set()

    def count(self, name: str) -> int:
        return self._count.get(name, 0)

    async def drained(self, name: str, timeout_s: float) -> bool:
        """Wait until no request is in flight on ``name`` (at most ``timeout_s``); True when none is."""
        if not self._count.get(name):
            return True
        event = self._drained.setdefault(name, asyncio.Event())
        event.clear()
        try:
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(event.wait(), timeout_s)
        finally:
            self._drained.pop(name, None)
        return not self._count.get(name)
