"""Frames by reference: the regions a call registers, and the pool Triton reads the frames from.

A backend on the same host writes its frames into a POSIX shared-memory object it owns and names
that object in the call's metadata (``ruth-frame-region``, once per region); its requests then carry
``frame.reference`` (region, offset, size) instead of the bytes. The sidecar copies each referenced
frame with one ``preadv`` into a slot of its own region, the pool, which is registered once with
Triton's system shared-memory API; the Triton request names that slot. The frame crosses neither
gRPC hop.

Why one copy instead of handing the backend's region to Triton: Triton maps a registered region and
reads it when the request executes, and a region its owner shrinks meanwhile kills tritonserver
with SIGBUS (measured with 2.51). The pool belongs to the sidecar, so a backend can only spoil its
own frames: a region that shrinks or disappears makes its references INVALID_INPUT (``preadv``
reads short; it never faults).

A slot is free again as soon as Triton has answered its request. A request that ended without
Triton's answer (TIMEOUT, a lost stream, a client gone) keeps its slot for ``reuse_delay_s`` more,
in case Triton still reads it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import mmap
import os
import re
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sidecar.errors import REGION_KEY, InvalidInput, Overloaded, SidecarError

LOGGER = logging.getLogger(__name__)

REGION_METADATA = REGION_KEY
SHM_DIR = Path("/dev/shm")
POOL_PREFIX = "ruth-sidecar-"
_ALIGN = 64
_NAME_TAIL = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class SharedMemoryError(SidecarError):
    """The pool cannot be set up (e.g. /dev/shm too small)."""


@dataclass(frozen=True, slots=True)
class FrameReference:
    region: str
    offset: int
    size: int


@dataclass(frozen=True)
class RegionPolicy:
    """What a call may register."""

    enabled: bool
    prefix: str = "ruth-frames-"
    max_region_bytes: int = 1024**3
    max_regions: int = 8
    shm_dir: Path = SHM_DIR

    def check_name(self, name: str) -> None:
        tail = name[len(self.prefix):] if name.startswith(self.prefix) else ""
        if not _NAME_TAIL.match(tail) or tail in {".", ".."}:
            raise InvalidInput(
                f"shared-memory region {name!r}: a region's name must be {self.prefix!r} followed by "
                "1-128 letters, digits, '_', '.' or '-'"
            )


class CallRegions:
    """The regions one call (an InferStream, or one Infer) registered, opened read-only for its life."""

    def __init__(self, fds: dict[str, int]) -> None:
        self._fds = fds

    @classmethod
    def open(cls, names: Iterable[str], policy: RegionPolicy) -> CallRegions:
        """Open ``names`` (raises INVALID_INPUT for a name, kind or size not allowed)."""
        names = list(dict.fromkeys(names))
        if not policy.enabled:
            raise InvalidInput("frames by reference are off on this runtime (RUTH_SHARED_MEMORY=true turns "
                               "them on, for backends on the same host)")
        if len(names) > policy.max_regions:
            raise InvalidInput(f"{len(names)} shared-memory regions on one call; the limit is "
                               f"{policy.max_regions}")
        fds: dict[str, int] = {}
        try:
            for name in names:
                policy.check_name(name)
                fds[name] = _open_region(policy.shm_dir / name, name, policy.max_region_bytes)
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            raise
        return cls(fds)

    @property
    def names(self) -> list[str]:
        return list(self._fds)

    def read_into(self, reference: FrameReference, target: memoryview) -> None:
        """Copy the referenced bytes into ``target`` (exactly ``reference.size`` long)."""
        fd = self._fds.get(reference.region)
        if fd is None:
            registered = ", ".join(self._fds) or "none"
            raise InvalidInput(f"frame.reference.region {reference.region!r} is not registered on this call "
                               f"(metadata {REGION_METADATA}; registered: {registered})")
        try:
            read = os.preadv(fd, [target], reference.offset)
        except OSError as e:
            raise InvalidInput(f"region {reference.region!r} cannot be read: {e.strerror}") from None
        if read != reference.size:
            raise InvalidInput(
                f"region {reference.region!r} holds {read} bytes at offset {reference.offset}; the "
                f"reference needs {reference.size}"
            )

    def read(self, reference: FrameReference) -> bytes:
        buffer = bytearray(reference.size)
        self.read_into(reference, memoryview(buffer))
        return bytes(buffer)

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)


def _open_region(path: Path, name: str, max_bytes: int) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InvalidInput(f"shared-memory region {name!r} does not exist on this host") from None
    except OSError as e:
        raise InvalidInput(f"shared-memory region {name!r} cannot be opened: {e.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
        os.close(fd)
        what = "is not a shared-memory object" if not stat.S_ISREG(info.st_mode) else (
            f"holds {info.st_size} bytes; the limit is {max_bytes}")
        raise InvalidInput(f"shared-memory region {name!r} {what}")
    return fd


class Slot:
    __slots__ = ("offset", "size", "span", "view")

    def __init__(self, offset: int, size: int, span: int, view: memoryview) -> None:
        self.offset = offset
        self.size = size
        self.span = span
        self.view = view


class SharedMemoryRegistry(Protocol):
    """Triton's system shared-memory API, as the adapter offers it."""

    async def register_system_shared_memory(self, name: str, key: str, byte_size: int) -> None: ...

    async def unregister_system_shared_memory(self, name: str) -> None: ...

    async def system_shared_memory_regions(self) -> dict[str, str]: ...


class FramePool:
    """The sidecar's own region in /dev/shm that Triton reads frames from.

    Reserved at start, or (``lazy``) at its first use, so that a runtime that never needs it spends
    no memory on it. Slots are carved first-fit from free extents (64-byte aligned) and merged back
    when released.
    """

    def __init__(
        self, size: int, reuse_delay_s: float = 30.0, shm_dir: Path = SHM_DIR, lazy: bool = False
    ) -> None:
        self.name = f"{POOL_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.size = size
        self.reuse_delay_s = reuse_delay_s
        self._path = shm_dir / self.name
        self._map: mmap.mmap | None = None
        self._view = memoryview(b"")
        self._starts: list[int] = [0]  # free extents, sorted by offset
        self._lengths: list[int] = [size]
        self.in_use = 0
        self.registered = False
        self._registering: asyncio.Lock | None = None
        if not lazy:
            self.reserve()

    def reserve(self) -> None:
        """Create and reserve the region (SharedMemoryError when /dev/shm has no room for it)."""
        if self._map is not None:
            return
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, self.size)  # reserve now: a full /dev/shm fails here, not later
            self._map = mmap.mmap(fd, self.size)
        except OSError as e:
            self._path.unlink(missing_ok=True)
            raise SharedMemoryError(
                f"the frame pool of {self.size} bytes does not fit in {self._path.parent} ({e.strerror}): "
                "give the container a larger /dev/shm or lower shared_memory_pool_bytes"
            ) from None
        finally:
            os.close(fd)
        self._view = memoryview(self._map)

    @property
    def reserved(self) -> bool:
        """Whether the region exists in /dev/shm (a lazy pool's is made at its first use)."""
        return self._map is not None

    @property
    def key(self) -> str:
        """The shm_open key Triton maps."""
        return f"/{self.name}"

    def allocate(self, size: int) -> Slot:
        """A slot of ``size`` bytes (OVERLOADED when the pool has no free extent that large)."""
        self.reserve()
        span = -(-max(size, 1) // _ALIGN) * _ALIGN
        for i, length in enumerate(self._lengths):
            if length >= span:
                offset = self._starts[i]
                if length == span:
                    del self._starts[i], self._lengths[i]
                else:
                    self._starts[i] += span
                    self._lengths[i] -= span
                self.in_use += span
                return Slot(offset, size, span, self._view[offset:offset + size])
        raise Overloaded(
            f"the shared-memory frame pool is full ({self.in_use} of {self.size} bytes in flight); "
            "slow down or raise shared_memory_pool_bytes"
        )

    def release(self, slot: Slot, answered: bool = True) -> None:
        """Free ``slot``: now when Triton answered its request, else after ``reuse_delay_s``."""
        if answered or self.reuse_delay_s <= 0:
            self._free(slot)
        else:
            asyncio.get_running_loop().call_later(self.reuse_delay_s, self._free, slot)

    def _free(self, slot: Slot) -> None:
        slot.view.release()
        self.in_use -= slot.span
        offset, length = slot.offset, slot.span
        i = bisect.bisect_left(self._starts, offset)
        if i < len(self._starts) and offset + length == self._starts[i]:  # merge with the next extent
            length += self._lengths[i]
            del self._starts[i], self._lengths[i]
        if i > 0 and self._starts[i - 1] + self._lengths[i - 1] == offset:  # and the previous one
            self._lengths[i - 1] += length
        else:
            self._starts.insert(i, offset)
            self._lengths.insert(i, length)

    def free_bytes(self) -> int:
        return sum(self._lengths)

    async def ensure_registered(self, triton: SharedMemoryRegistry) -> None:
        """Register the pool with Triton unless it is (again after Triton restarted: :meth:`forget`)."""
        if self.registered:
            return
        if self._registering is None:
            self._registering = asyncio.Lock()
        async with self._registering:
            if self.registered:
                return
            self.reserve()
            await self._drop_orphans(triton)
            await triton.register_system_shared_memory(self.name, self.key, self.size)
            self.registered = True
            LOGGER.info("frame pool %s (%d bytes) registered with Triton", self.name, self.size)

    async def _drop_orphans(self, triton: SharedMemoryRegistry) -> None:
        """Unregister the pools of sidecars that are gone (their object no longer exists)."""
        shm_dir = self._path.parent
        for name, key in (await triton.system_shared_memory_regions()).items():
            gone = not (shm_dir / key.lstrip("/")).exists()
            if name.startswith(POOL_PREFIX) and name != self.name and gone:
                with contextlib.suppress(SidecarError):
                    await triton.unregister_system_shared_memory(name)
                    LOGGER.info("unregistered the frame pool %s of a sidecar that is gone", name)

    def forget(self) -> None:
        """Triton lost its registrations (it restarted): register again before the next use."""
        self.registered = False

    async def close(self, triton: SharedMemoryRegistry | None = None) -> None:
        if self.registered and triton is not None:
            with contextlib.suppress(SidecarError):
                await triton.unregister_system_shared_memory(self.name)
            self.registered = False
        self._path.unlink(missing_ok=True)
        if self._map is None:
            return
        with contextlib.suppress(BufferError):  # a slot still viewed: the mapping goes with the process
            self._view.release()
            self._map.close()


class SharedSlot:
    """A pool slot that several requests read (one frame decoded once for several models): free
    again when the last of them has settled, later if one of them ended without Triton's answer.

    Its maker holds it first (:meth:`let_go` when done handing it out); each request that reads it
    holds it from when it is built until it is settled. ``input`` is what a Triton request names.
    """

    __slots__ = ("_answered", "_holders", "height", "input", "pool", "slot", "width")

    def __init__(self, pool: FramePool, slot: Slot, width: int, height: int, input: object) -> None:
        self.pool = pool
        self.slot = slot
        self.width = width
        self.height = height
        self.input = input
        self._holders = 1
        self._answered = True

    def hold(self) -> None:
        self._holders += 1

    def let_go(self, answered: bool = True) -> None:
        """One holder is done (``answered``: Triton answered its request, or it sent none)."""
        self._answered = self._answered and answered
        self._holders -= 1
        if self._holders == 0:
            self.pool.release(self.slot, self._answered)
