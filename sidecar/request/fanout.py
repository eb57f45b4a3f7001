"""One frame to several models: a call that names several models, and the upstreams a model declares.

* :meth:`Fanout.infer_many` answers a call naming several models for one frame, each model's answer
  in the order asked; a named model that another named model takes as its upstream runs once, and
  its own answer is the result its dependents get. The frame is decoded once for the models that take
  it encoded (:meth:`~sidecar.request.frame_memory.FrameMemory.decode_once`).
* :meth:`Fanout.attach_upstreams` runs a model's upstreams on the frame before the model's own
  request (each upstream once per frame, :mod:`sidecar.request.upstreams`), and
  :meth:`Fanout.infer_shared` keeps the result of a model that others take as their upstream.

Every request goes through the :class:`~sidecar.request.pipeline.Pipeline` like any other.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from sidecar.errors import InvalidInput, SidecarError
from sidecar.request.records import FrameRequest, Outcome
from sidecar.request.routes import Route
from sidecar.request.shared_frames import CallRegions
from sidecar.request.upstreams import UpstreamMemo, Upstreams
from sidecar.settings import SidecarSettings

if TYPE_CHECKING:
    from sidecar.request.pipeline import Pipeline

#: The most models one request may name (``InferenceRequest.models``).
MAX_MODELS_PER_REQUEST = 16


class Fanout:
    def __init__(self, pipeline: Pipeline, settings: SidecarSettings) -> None:
        self._pipeline = pipeline
        self.upstreams = Upstreams(
            self._run_upstream,
            UpstreamMemo(settings.upstream_memo_entries, settings.upstream_memo_bytes,
                         settings.upstream_memo_age_s),
        )

    async def attach_upstreams(
        self, route: Route, request: FrameRequest, regions: CallRegions | None = None,
        shared: dict | None = None, client_remaining_s: float | None = None,
    ) -> None:
        """Run ``route``'s upstreams on the request's frame (each frame of a batch) and give the
        request their results; raises UPSTREAM_ERROR for an upstream that failed. The upstreams'
        requests keep the request's own limits (``timeout_ms``, the client's deadline)."""
        results = self.upstreams.results
        limits = (request.timeout_ms, client_remaining_s)
        if request.batch is None:
            request.upstreams = await results(route.upstreams, (request, regions, limits), request.camera_id,
                                              request.frame_id, shared)
            return
        items = request.batch
        cameras = [item.camera_id or request.camera_id for item in items]
        found = await asyncio.gather(
            *(results(route.upstreams, (item, regions, limits), camera, item.frame_id, shared)
              for item, camera in zip(items, cameras, strict=True)),
            return_exceptions=True,
        )
        for item, value in zip(items, found, strict=True):
            if isinstance(value, BaseException):
                raise value
            item.upstreams = value

    async def _run_upstream(
        self, model_id: str, version: str, frame: object
    ) -> tuple[bytes | None, SidecarError | None]:
        """One upstream request for the frame of ``frame``: the dependent's request or batch item, the
        call's shared-memory regions, and the dependent's limits (timeout_ms, the client's deadline)."""
        source, regions, (timeout_ms, client_remaining_s) = frame  # type: ignore[misc]
        request = FrameRequest(
            source.frame_id, source.camera_id, model_id, version, source.data, source.format, source.width,
            source.height, source.timestamp_ms, timeout_ms, reference=source.reference,
        )
        request.pixels = getattr(source, "pixels", None)  # a batch's item has none
        # the memo's own run: not shared again
        outcome = await self._pipeline.infer_one(request, client_remaining_s, regions, None)
        return outcome.result, outcome.error


    async def infer_shared(
        self, request: FrameRequest, client_remaining_s: float | None, regions: CallRegions | None,
        shared: dict | None,
    ) -> Outcome:
        """A request to a model that others take as their upstream: its result for the frame is kept
        (and a result kept or running already answers it), so that the model runs once per frame."""
        key = (request.model_id, request.version, request.camera_id, request.frame_id)
        memo = self.upstreams.memo
        loop = asyncio.get_running_loop()
        started = loop.time()
        found = memo.lookup(key)
        if found is not None and (shared is None or shared.get(key) is not found):
            try:
                result = await asyncio.shield(found)
            except SidecarError:
                pass  # a failure is not kept: run it
            else:
                return Outcome(request, result, None, (loop.time() - started) * 1000.0)
        future = loop.create_future()
        future.add_done_callback(_seen)
        memo.start(key, future)
        try:
            outcome = await self._pipeline.infer_one(request, client_remaining_s, regions, shared)
        except BaseException as exc:
            future.set_exception(SidecarError(f"{type(exc).__name__}: {exc}"))
            memo.settle(key, future)
            raise
        if outcome.error is not None:
            future.set_exception(outcome.error)
        else:
            future.set_result(outcome.result)
        memo.settle(key, future)
        return outcome


    async def infer_many(
        self,
        request: FrameRequest,
        client_remaining_s: float | None = None,
        regions: CallRegions | None = None,
    ) -> Outcome:
        """Answer a request that names several models for one frame: each model's outcome in
        ``answers``, in the order asked. A named model that another named model declares as an
        upstream runs once: its own answer is the result the dependents get."""
        started = asyncio.get_running_loop().time()
        models = request.models or []
        try:
            self._check_models(request, models)
        except SidecarError as e:
            return Outcome(request, None, e, 0.0)
        shared: dict = {}
        members = [request.for_model(m, v) for m, v in models]
        named = {(m.model_id, m.version): m for m in members}
        routes = self._pipeline.routes
        needed = {u for m in members if (r := routes.get(m.model_id, m.version)) for u in r.upstreams}
        for key in needed & named.keys():  # dependents wait for the answer of the named upstream
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_seen)
            shared[(*key, request.camera_id, request.frame_id)] = future
        pixels = await self._pipeline.frames.decode_once(request, [*named, *(needed - named.keys())])
        for member in members:
            member.pixels = pixels
        try:
            answers = await asyncio.gather(
                *(self._infer_member(m, shared, client_remaining_s, regions) for m in members)
            )
        finally:
            if pixels is not None:
                pixels.let_go()
        outcome = Outcome(request, None, None, (asyncio.get_running_loop().time() - started) * 1000.0)
        outcome.answers = list(answers)
        return outcome

    async def _infer_member(
        self, member: FrameRequest, shared: dict, client_remaining_s: float | None,
        regions: CallRegions | None,
    ) -> Outcome:
        future = shared.get((member.model_id, member.version, member.camera_id, member.frame_id))
        try:
            outcome = await self._pipeline.infer(member, client_remaining_s, regions, shared)
        except BaseException as exc:
            if future is not None and not future.done():
                future.set_exception(SidecarError(f"{type(exc).__name__}: {exc}"))
            raise
        if future is not None and not future.done():
            if outcome.error is not None:
                future.set_exception(outcome.error)
            else:
                future.set_result(outcome.result)
        return outcome

    def _check_models(self, request: FrameRequest, models: list[tuple[str, str]]) -> None:
        if request.model_id or request.version:
            raise InvalidInput("name the models either in model_id/version or in models, not both")
        if request.batch is not None:
            raise InvalidInput("a request naming several models carries one frame, not a batch")
        if not 1 <= len(models) <= MAX_MODELS_PER_REQUEST:
            limit = MAX_MODELS_PER_REQUEST
            raise InvalidInput(f"models names {len(models)} models; a request names 1 to {limit}")
        if len(set(models)) != len(models):
            raise InvalidInput("models names a model version more than once")


def _seen(future: asyncio.Future) -> None:
    """A failure nobody waited for is not an error to log."""
    if not future.cancelled():
        future.exception()
