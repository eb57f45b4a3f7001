"""Recovery of broken model instances, for what Triton 2.51 does not do itself.

Its place in the runtime: docs/architecture.md#control-path.

* A stub process that died leaves its model READY in Triton, and every request then fails with
  ``Stub process '<instance>' is not healthy.``: the request path answers those with
  :class:`~sidecar.errors.ModelProcessDied`.
* A hung ``execute()`` blocks its instance forever, and ``unload`` waits for it: the stub must be
  killed. :class:`StubKiller` finds the ``triton_python_backend_stub`` processes of one Triton model
  (their command line holds the instance name ``<model>_<group>_<index>``, last or followed by the
  stub's runtime argument) among the descendants of our tritonserver only, and kills them.
* :class:`RecoveryPolicy` holds every figure: timeouts before UNHEALTHY, the hang check's wait,
  cooldown, retries, load and unload timeouts, drain time.
* :func:`progress` reads from Triton's statistics of one copy how many executions it finished: an
  instance that keeps finishing them is slow, not hung, whatever its requests' deadlines.
* :class:`Recovery` is the schedule: ERROR -> cooldown -> reload, at most ``max_retries`` times
  until a request succeeds again. The reload itself is the lifecycle manager's (``reload``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ruthgen.interface import find_server, kill_processes, stub_processes
from sidecar.control.states import ModelRecord, ModelState

LOGGER = logging.getLogger(__name__)

Key = tuple[str, str]


@dataclass(frozen=True)
class RecoveryPolicy:
    load_timeout_s: float = 60.0
    unload_timeout_s: float = 10.0
    drain_timeout_s: float = 30.0
    cooldown_s: float = 30.0
    max_retries: int = 3
    max_consecutive_timeouts: int = 3
    hang_check_s: float = 10.0


def progress(stats: dict[str, Any]) -> int:
    """Executions and requests one Triton model finished (succeeded or failed), from its statistics:
    it grows while an instance answers, however late, and stands still while every one is hung."""
    timings = stats.get("inference_stats") or {}
    finished = sum(int((timings.get(k) or {}).get("count") or 0) for k in ("success", "fail"))
    return int(stats.get("execution_count") or 0) + finished


class StubKiller:
    """Kills the Python-backend stubs of one Triton model, only under our tritonserver.

    ``server_pid`` returns the tritonserver's pid (None when Triton runs where its processes cannot
    be seen: then nothing is killed).
    """

    def __init__(self, server_pid: Callable[[], int | None]) -> None:
        self._server_pid = server_pid

    @classmethod
    def for_server(cls, pid: int | None, grpc_port: int | None) -> StubKiller:
        """The killer of the tritonserver with ``pid``, else the one found serving ``grpc_port``."""
        if pid is not None:
            return cls(lambda: pid)
        return cls(lambda: find_server(grpc_port) if grpc_port is not None else None)

    def find(self, triton_name: str) -> list[int]:
        return [p.pid for p in self._stubs(triton_name)]

    def kill(self, triton_name: str, wait_s: float = 2.0) -> list[int]:
        """SIGKILL the stubs of ``triton_name``; return their pids once gone (or ``wait_s`` passed)."""
        stubs = self._stubs(triton_name)
        for stub in stubs:
            LOGGER.warning("killing stub process %d of model %s", stub.pid, triton_name)
        return kill_processes(stubs, wait_s)

    def _stubs(self, triton_name: str):
        server = self._server_pid()
        if server is None:
            return []
        instance = re.compile(rf"^{re.escape(triton_name)}_\d+_\d+$")
        return stub_processes(lambda argv: any(instance.match(arg) for arg in argv[1:]), under=server)


class Recovery:
    """The ERROR -> cooldown -> reload schedule of the versions that failed.

    ``reload(record)`` reloads one version in ERROR under its lock and returns True once it serves
    again; ``lock(key)`` is the version's lock; ``changed()`` tells the listeners.
    """

    def __init__(
        self,
        policy: RecoveryPolicy,
        reload: Callable[[ModelRecord], Awaitable[bool]],
        lock: Callable[[Key], asyncio.Lock],
        changed: Callable[[], None],
    ) -> None:
        self.policy = policy
        self._reload = reload
        self._lock = lock
        self._changed = changed
        self.hung: set[Key] = set()
        self._tasks: dict[Key, asyncio.Task[None]] = {}

    def gave_up(self, record: ModelRecord) -> bool:
        return record.recovery_attempts >= self.policy.max_retries

    def fail(self, record: ModelRecord, reason: str, *, hung: bool, delay_s: float | None = None) -> None:
        """READY -> ERROR, then a reload after ``delay_s`` (the cooldown by default)."""
        if hung:
            self.hung.add(record.key)
        record.transition(ModelState.ERROR, reason)
        self.schedule(record, delay_s)

    def schedule(self, record: ModelRecord, delay_s: float | None = None) -> None:
        key = record.key
        task = self._tasks.get(key)
        if task is not None and not task.done():
            return
        first = self.policy.cooldown_s if delay_s is None else delay_s
        self._tasks[key] = asyncio.get_running_loop().create_task(
            self._loop(record, first), name=f"recover-{record.model_id}-{record.version}"
        )

    def cancel(self, key: Key) -> None:
        task = self._tasks.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _loop(self, record: ModelRecord, delay_s: float) -> None:
        while True:
            await asyncio.sleep(delay_s)
            delay_s = self.policy.cooldown_s
            async with self._lock(record.key):
                if record.state is not ModelState.ERROR:
                    return
                if self.gave_up(record):
                    record.note_error(
                        f"automatic recovery gave up after {record.recovery_attempts} reloads "
                        f"(last: {record.reason}); a rescan retries"
                    )
                    self._changed()
                    return
                if await self._reload(record):
                    return

    async def stop(self) -> None:
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
