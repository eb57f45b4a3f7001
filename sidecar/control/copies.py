"""A version's copies in Triton: staged and loaded within a time limit, retired without dropping a
request, and their stubs killed when they hang.

A load past ``load_timeout_s`` is abandoned (its stubs killed, an unload requested); a copy that
needs GPU memory loads only where :class:`~sidecar.control.placement.GpuPlacement` finds it. A copy
being retired is first drained (its requests in flight finish), then unloaded; an unload that hangs
gets its stubs killed, and the source removes what it wrote for the copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from ruthgen.interface import ManifestEntry
from sidecar.control.placement import GpuPlacement
from sidecar.control.recovery import RecoveryPolicy, StubKiller
from sidecar.control.sources import EntrySource, StageError
from sidecar.control.states import ModelRecord
from sidecar.control.tasks import Background
from sidecar.errors import SidecarError
from sidecar.request.routes import Leases
from sidecar.triton_client import IndexEntry

LOGGER = logging.getLogger(__name__)


class ModelControl(Protocol):
    """What the lifecycle needs of the Triton client."""

    async def load_model(self, name: str, timeout_s: float = ...) -> None: ...
    async def unload_model(self, name: str, timeout_s: float = ...) -> None: ...
    async def repository_index(self, timeout_s: float = ...) -> list[IndexEntry]: ...
    async def model_statistics(self, name: str) -> dict[str, Any]: ...


@dataclass(eq=False)
class Copies:
    control: ModelControl
    source: EntrySource
    leases: Leases
    policy: RecoveryPolicy
    placement: GpuPlacement
    background: Background
    stub_killer: StubKiller | None = None

    async def kill(self, name: str) -> None:
        """Kill the stubs of copy ``name`` (nothing without a stub killer)."""
        if self.stub_killer is not None:
            await asyncio.to_thread(self.stub_killer.kill, name)

    async def load(self, record: ModelRecord, name: str) -> tuple[ManifestEntry | None, str]:
        """Stage copy ``name`` and load it; (its record, "") or (None, why it failed)."""
        started = time.monotonic()
        try:
            staged = await asyncio.to_thread(self.source.stage, record.key, name)
        except StageError as exc:
            return None, exc.reason
        generated = time.monotonic()
        short = self.placement.reserve(staged)
        if short:
            return None, short
        timeout = self.policy.load_timeout_s
        try:
            await asyncio.wait_for(self.control.load_model(name, timeout_s=timeout), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            self.background.spawn(self._abandon(name))
            return None, f"loading did not finish within {timeout:g} s; abandoned"
        except SidecarError as exc:
            return None, exc.message or f"the load failed ({exc.code.value}, without a message)"
        except Exception as exc:  # a bug in the client: the load failed all the same
            return None, str(exc) or type(exc).__name__
        loaded = time.monotonic()
        LOGGER.info("%s staged in %.3f s, loaded in %.3f s", name, generated - started, loaded - generated)
        return staged, ""

    async def _abandon(self, name: str) -> None:
        await self.kill(name)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.control.unload_model(name, timeout_s=self.policy.unload_timeout_s),
                                   self.policy.unload_timeout_s)

    async def retire(self, name: str, *, kill_first: bool) -> None:
        """Drain ``name`` (in-flight requests), unload it, kill its stubs if the unload hangs."""
        if kill_first:
            await self.kill(name)
        await self.leases.drained(name, self.policy.drain_timeout_s)
        timeout = self.policy.unload_timeout_s
        unload = asyncio.ensure_future(self.control.unload_model(name, timeout_s=timeout * 3))
        try:
            await asyncio.wait_for(asyncio.shield(unload), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            LOGGER.warning("unloading %s takes longer than %g s: killing its stubs", name, timeout)
            await self.kill(name)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(unload, timeout * 2)
        except Exception as exc:
            LOGGER.warning("unloading %s failed: %s", name, exc)
        await asyncio.to_thread(self.source.discard, name)

    def other(self, record: ModelRecord) -> str:
        """The copy a reload of ``record`` loads: the one not serving, or its only one."""
        copies = self.source.copies(record.key)
        if len(copies) == 1 or record.active_name is None:
            return copies[0]
        return copies[1] if record.active_name == copies[0] else copies[0]
