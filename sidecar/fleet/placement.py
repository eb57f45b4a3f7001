"""Which runtime a camera goes to: rendezvous hashing of the camera over the runtimes that can serve.

Every runtime gets a score per camera, a hash of both names; the camera goes to the highest-scoring
runtime among those serving its model READY. Adding a runtime takes from each other runtime only the
cameras it now outscores (about 1/N of all); removing one moves only the cameras it had, each to its
own next-best runtime. Every client computes the same placement from the same names, without talking
to each other.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


@functools.lru_cache(maxsize=65536)
def score(runtime: str, camera: str) -> int:
    """The camera's score on the runtime: 64 bits of BLAKE2b of both names."""
    digest = hashlib.blake2b(f"{runtime}\x00{camera}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def pick(camera: str, candidates: Iterable[tuple[str, T]]) -> T | None:
    """The candidate ``(name, value)`` whose name scores highest for ``camera`` (None when none)."""
    best: T | None = None
    best_key: tuple[int, str] | None = None
    for name, value in candidates:
        key = (score(name, camera), name)
        if best_key is None or key > best_key:
            best, best_key = value, key
    return best


def placement(cameras: Iterable[str], runtimes: Iterable[str]) -> dict[str, str]:
    """Each camera's runtime among ``runtimes`` (all serving): what :func:`pick` chooses."""
    names = list(runtimes)
    return {camera: pick(camera, ((name, name) for name in names)) or "" for camera in cameras}
