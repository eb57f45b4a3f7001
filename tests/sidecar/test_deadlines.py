"""Deadlines: many requests' deadlines behind one armed timer of the event loop."""

from __future__ import annotations

import asyncio

from sidecar.request.deadlines import Deadlines


def _timers(loop: asyncio.AbstractEventLoop) -> int:
    """Timers the loop holds that are not cancelled (its private heap: what the class saves)."""
    return sum(1 for handle in loop._scheduled if not handle.cancelled())  # type: ignore[attr-defined]


async def test_each_key_expires_once_at_its_deadline_in_order():
    loop = asyncio.get_running_loop()
    expired: list[tuple[str, float]] = []
    deadlines: Deadlines[str] = Deadlines(lambda key: expired.append((key, loop.time())))
    now = loop.time()
    deadlines.add("late", now + 0.06)
    deadlines.add("early", now + 0.02)
    deadlines.add("middle", now + 0.04)
    await asyncio.sleep(0.1)
    assert [key for key, _ in expired] == ["early", "middle", "late"]
    for (_, at), due in zip(expired, (0.02, 0.04, 0.06), strict=True):
        assert now + due - 0.005 <= at < now + due + 0.02
    assert len(deadlines) == 0 and _timers(loop) == 0


async def test_a_discarded_key_never_expires():
    loop = asyncio.get_running_loop()
    expired: list[str] = []
    deadlines: Deadlines[str] = Deadlines(expired.append)
    deadlines.add("answered", loop.time() + 0.02)
    deadlines.add("hung", loop.time() + 0.03)
    deadlines.discard("answered")
    deadlines.discard("never added")
    await asyncio.sleep(0.06)
    assert expired == ["hung"]


async def test_later_deadlines_arm_no_timer_of_their_own():
    loop = asyncio.get_running_loop()
    deadlines: Deadlines[int] = Deadlines(lambda key: None)
    before = _timers(loop)
    for n in range(100):  # requests of one timeout, one after another
        deadlines.add(n, loop.time() + 5.0)
        deadlines.discard(n)
    assert _timers(loop) == before + 1
    deadlines.add("short", loop.time() + 0.01)  # an earlier deadline re-arms it
    assert _timers(loop) == before + 1
    deadlines.clear()
    assert _timers(loop) == before


async def test_an_expiry_may_add_a_deadline():
    loop = asyncio.get_running_loop()
    expired: list[str] = []

    def on_expire(key: str) -> None:
        expired.append(key)
        if key == "first":
            deadlines.add("second", loop.time() + 0.01)

    deadlines: Deadlines[str] = Deadlines(on_expire)
    deadlines.add("first", loop.time() + 0.01)
    deadlines.add("last", loop.time() + 0.05)
    await asyncio.sleep(0.08)
    assert expired == ["first", "second", "last"]
