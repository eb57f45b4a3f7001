"""Upstream results: a model that declares ``upstreams`` gets their results for the same frame.

Before a dependent's request is sent, :meth:`Upstreams.attach` runs each upstream on the frame (an
ordinary request to that model, answered, counted and checked as any other) and hands the results to
the dependent's request as its ``upstreams`` parameter, ``{model_id: result}``.

An upstream runs once per frame, however many dependents ask:

* within one call that names several models (the ``shared`` mapping of that call), and
* across calls, for the same ``camera_id`` + ``frame_id`` (a frame without a ``frame_id`` is never
  shared across calls): :class:`UpstreamMemo` keeps each result for ``max_age_s`` and holds at most
  ``max_entries`` results and ``max_bytes`` of them, the oldest going first. A run in progress is
  shared too: a second dependent waits for it instead of starting another.

A failed upstream is not kept: each dependent waiting for it gets ``UPSTREAM_ERROR`` naming the
upstream, its version and its own code; a later request runs it again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sidecar.errors import SidecarError, UpstreamFailed

#: (model_id, version, camera_id, frame_id): one upstream's result for one frame.
Key = tuple[str, str, str, str]
#: Runs one request to a model and returns (result JSON bytes, None) or (None, its error).
RunUpstream = Callable[[str, str, object], Awaitable[tuple["bytes | None", "SidecarError | None"]]]


@dataclass
class _Entry:
    created: float
    future: asyncio.Future[bytes]
    size: int = 0


class UpstreamMemo:
    """Upstream results by frame, bounded in count, bytes and age."""

    def __init__(
        self, max_entries: int = 4096, max_bytes: int = 16 * 2**20, max_age_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._clock = clock
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self.bytes = 0
        self.hits = 0  # dependents served from a kept or running result
        self.runs = 0  # upstream requests started

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: Key) -> asyncio.Future[bytes] | None:
        """The kept (or running) result of ``key``, when young enough."""
        self._evict()
        entry = self._entries.get(key)
        if entry is None:
            return None
        self.hits += 1
        return entry.future

    def start(self, key: Key, future: asyncio.Future[bytes]) -> None:
        """``future`` will hold the result of ``key``."""
        self.runs += 1
        self._drop(key)
        self._entries[key] = _Entry(self._clock(), future)
        self._evict()

    def settle(self, key: Key, future: asyncio.Future[bytes]) -> None:
        """``future`` is done: keep its result's size, or forget a failure."""
        entry = self._entries.get(key)
        if entry is None or entry.future is not future:
            return  # evicted meanwhile, or replaced
        if future.cancelled() or future.exception() is not None:
            self._drop(key)
            return
        entry.size = len(future.result())
        self.bytes += entry.size
        self._evict()

    def _drop(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size

    def _evict(self) -> None:
        entries, now = self._entries, self._clock()
        while entries:
            key, oldest = next(iter(entries.items()))
            if (len(entries) > self.max_entries or self.bytes > self.max_bytes
                    or now - oldest.created > self.max_age_s):
                self._drop(key)
            else:
                break


def upstream_error(model_id: str, version: str, error: SidecarError) -> UpstreamFailed:
    return UpstreamFailed(f"upstream {model_id} {version} answered {error.code.value}: {error.message}",
                          phase="upstream")


class Upstreams:
    """Runs a dependent's upstreams on its frame, once per frame (see the module docstring)."""

    def __init__(self, run: RunUpstream, memo: UpstreamMemo) -> None:
        self._run = run
        self.memo = memo
        self._tasks: set[asyncio.Task[None]] = set()

    async def results(
        self, upstreams: tuple[tuple[str, str], ...], frame: object, camera_id: str, frame_id: str,
        shared: dict[Key, asyncio.Future[bytes]] | None = None,
    ) -> str:
        """The ``upstreams`` parameter for one frame: ``{"<model_id>": <result>, ...}`` as JSON text.

        ``frame`` is what ``run`` sends to each upstream (the request it derives from); raises
        :class:`UpstreamFailed` for the first upstream that failed."""
        futures = [self._result(m, v, frame, camera_id, frame_id, shared) for m, v in upstreams]
        parts = []
        for (model_id, version), future in zip(upstreams, futures, strict=True):
            try:
                raw = await asyncio.shield(future)
            except SidecarError as error:
                raise upstream_error(model_id, version, error) from None
            parts.append(f'"{model_id}":{raw.decode("utf-8")}')
        return "{" + ",".join(parts) + "}"

    def _result(
        self, model_id: str, version: str, frame: object, camera_id: str, frame_id: str,
        shared: dict[Key, asyncio.Future[bytes]] | None,
    ) -> asyncio.Future[bytes]:
        key = (model_id, version, camera_id, frame_id)
        future = shared.get(key) if shared is not None else None
        if future is not None:
            self.memo.hits += 1
            return future
        if frame_id:
            future = self.memo.lookup(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
            if frame_id:
                self.memo.start(key, future)
            else:
                self.memo.runs += 1
            task = asyncio.get_running_loop().create_task(self._fill(key, future, frame))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if shared is not None:
            shared[key] = future
        return future

    async def _fill(self, key: Key, future: asyncio.Future[bytes], frame: object) -> None:
        try:
            result, error = await self._run(key[0], key[1], frame)
        except BaseException as exc:  # never leave a dependent waiting
            if not future.done():
                future.set_exception(SidecarError(f"{type(exc).__name__}: {exc}"))
            self.memo.settle(key, future)
            raise
        if not future.done():
            if error is not None:
                future.set_exception(error)
            elif result is None:
                future.set_exception(SidecarError("the upstream answered nothing"))
            else:
                future.set_result(result)
        self.memo.settle(key, future)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def parse(parameter: str) -> dict[str, object]:
    """The results an ``upstreams`` parameter carries (for a batch's per-frame items)."""
    return json.loads(parameter)


def _retrieve(future: asyncio.Future[bytes]) -> None:
    """Mark a failed result as seen: a failure nobody waited for is not an error to log."""
    if not future.cancelled():
        future.exception()
