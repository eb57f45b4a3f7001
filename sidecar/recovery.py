"""Recovery of broken model instances (architecture §6.3), for what Triton 2.51 does not do itself.

* A stub process that died leaves its model READY in Triton, and every request then fails with
  ``Stub process '<instance>' is not healthy.``: :func:`is_dead_stub_error` recognises it.
* A hung ``execute()`` blocks its instance forever, and ``unload`` waits for it: the stub must be
  killed. :class:`StubKiller` finds the ``triton_python_backend_stub`` processes of one Triton model
  (their command line ends with the instance name ``<model>_<group>_<index>``) among the
  descendants of our tritonserver only, and kills them.
* :class:`RecoveryPolicy` holds every figure: timeouts before UNHEALTHY, cooldown, retries, load and
  unload timeouts, drain time;
* :class:`RecoveryMixin` is the ERROR -> cooldown -> reload loop of the lifecycle manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sidecar.states import ModelRecord, ModelState

LOGGER = logging.getLogger(__name__)

S = ModelState
STUB_NAME = "triton_python_backend_stub"
_DEAD_STUB = re.compile(r"Stub process .* is not healthy", re.S)


@dataclass(frozen=True)
class RecoveryPolicy:
    load_timeout_s: float = 60.0
    unload_timeout_s: float = 10.0
    drain_timeout_s: float = 30.0
    cooldown_s: float = 30.0
    max_retries: int = 3
    max_consecutive_timeouts: int = 3


def is_dead_stub_error(message: str | None) -> bool:
    """True for the error Triton answers once a model's stub process has died."""
    return bool(message) and bool(_DEAD_STUB.search(message or ""))


def find_server_pid(grpc_port: int | None, proc: Path = Path("/proc")) -> int | None:
    """The pid of the visible tritonserver serving gRPC on ``grpc_port`` (None when not found)."""
    if grpc_port is None:
        return None
    wanted = str(grpc_port)
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not argv or os.path.basename(argv[0]) != "tritonserver":
            continue
        for i, arg in enumerate(argv):
            if arg == f"--grpc-port={wanted}" or (arg == "--grpc-port" and argv[i + 1 : i + 2] == [wanted]):
                return int(entry.name)
    return None


class StubKiller:
    """Kills the Python-backend stubs of one Triton model, only under our tritonserver.

    ``server_pid`` returns the tritonserver's pid (None when Triton runs elsewhere and its
    processes cannot be seen: then nothing is killed). ``proc`` is ``/proc`` (a fake in tests).
    """

    def __init__(self, server_pid: Callable[[], int | None], proc: Path = Path("/proc")) -> None:
        self._server_pid = server_pid
        self._proc = proc

    def find(self, triton_name: str) -> list[int]:
        server = self._server_pid()
        if server is None:
            return []
        instance = re.compile(rf"^{re.escape(triton_name)}_\d+_\d+$")
        found = []
        for entry in self._proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = [a for a in (entry / "cmdline").read_bytes().decode(errors="replace").split("\0") if a]
            except OSError:
                continue
            if not argv or STUB_NAME not in argv[0] or not instance.match(argv[-1]):
                continue
            if self._descends_from(int(entry.name), server):
                found.append(int(entry.name))
        return sorted(found)

    def kill(self, triton_name: str, wait_s: float = 2.0) -> list[int]:
        """SIGKILL the stubs of ``triton_name``; return their pids once gone (or ``wait_s`` passed)."""
        pids = self.find(triton_name)
        for pid in pids:
            LOGGER.warning("killing stub process %d of model %s", pid, triton_name)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + wait_s
        while pids and time.monotonic() < deadline and any(self._alive(p) for p in pids):
            time.sleep(0.02)
        return pids

    def _alive(self, pid: int) -> bool:
        try:
            stat = (self._proc / str(pid) / "stat").read_text()
        except OSError:
            return False
        return stat[stat.rindex(")") + 2 :].split()[0] not in ("Z", "X")

    def _descends_from(self, pid: int, ancestor: int) -> bool:
        for _ in range(64):
            if pid == ancestor:
                return True
            parent = self._parent(pid)
            if parent is None or parent <= 1:
                return False
            pid = parent
        return False

    def _parent(self, pid: int) -> int | None:
        try:
            stat = (self._proc / str(pid) / "stat").read_text()
        except OSError:
            return None
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        try:
            return int(stat[stat.rindex(")") + 2 :].split()[1])
        except (ValueError, IndexError):
            return None


class RecoveryMixin:
    """The §6.3 part of :class:`sidecar.manager.LifecycleManager`: ERROR -> cooldown -> reload.

    A READY version that failed (dead stub, or hung) goes to ERROR; after ``cooldown_s`` it is
    reloaded into its other slot (a hung instance's stubs killed first), at most ``max_retries``
    times until a request succeeds again (the manager resets the count then). It relies on the
    manager's ``_lock``, ``_load_copy``, ``_switch``, ``_other_slot``, ``_retire_copy``, ``_spawn``
    and ``_changed``.
    """

    policy: RecoveryPolicy
    stub_killer: StubKiller | None
    _hung: set[tuple[str, str]]
    _recoveries: dict[tuple[str, str], asyncio.Task[None]]

    def _gave_up(self, record: ModelRecord) -> bool:
        return record.recovery_attempts >= self.policy.max_retries

    def _fail(self, record: ModelRecord, reason: str, *, hung: bool) -> None:
        if hung:
            self._hung.add(record.key)
        record.transition(S.ERROR, reason)
        self._schedule_recovery(record)

    def _schedule_recovery(self, record: ModelRecord) -> None:
        key = record.key
        task = self._recoveries.get(key)
        if task is not None and not task.done():
            return
        self._recoveries[key] = asyncio.get_running_loop().create_task(
            self._recovery_loop(record), name=f"recover-{record.model_id}-{record.version}"
        )

    def _cancel_recovery(self, key: tuple[str, str]) -> None:
        task = self._recoveries.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _recovery_loop(self, record: ModelRecord) -> None:
        while True:
            await asyncio.sleep(self.policy.cooldown_s)
            async with self._lock(record.key):
                if record.state is not S.ERROR:
                    return
                if record.recovery_attempts >= self.policy.max_retries:
                    record.note_error(
                        f"automatic recovery gave up after {record.recovery_attempts} reloads "
                        f"(last: {record.reason}); a rescan retries"
                    )
                    self._changed()
                    return
                if await self._recover_once(record, None):
                    return

    async def _recover_once(self, record: ModelRecord, digest: str | None) -> bool:
        """ERROR -> LOADING -> READY (reloaded into the other slot) or back to ERROR."""
        record.recovery_attempts += 1
        attempt = f"{record.recovery_attempts}/{self.policy.max_retries}"
        record.transition(S.LOADING, f"recovery reload {attempt}")
        old = record.active_name
        if old is not None and record.key in self._hung and self.stub_killer is not None:
            await asyncio.to_thread(self.stub_killer.kill, old)
        staged, error = await self._load_copy(record, self._other_slot(record))
        if staged is None:
            record.transition(S.ERROR, f"recovery reload {attempt} failed: {error}")
            return False
        if digest is not None:
            record.source_digest = digest
        self._switch(record, staged)
        record.transition(S.READY, f"recovered by reload {attempt} as {staged.name}")
        if old is not None:
            self._spawn(self._retire_copy(old, kill_first=False))
        return True
