"""Deadlines: many requests' deadlines behind one armed timer of the event loop."""

from __future__ import annotations

import asyncio

from sidecar.deadlines import Deadlines


def _timers(loop: asyncio.AbstractEventLoop) -> int:
    """Timers the loop holds that are not cancelled (its private heap: what the class saves)."""
    return sum(1 for handle in loop._scheduled if not handle.cancelled())  # type: ignore[attr-defined]


class ClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when the test moves it (:func:`at`): its timers run at
    the times they were set for, however busy the machine is."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def time(self) -> float:
        return self.now


async def at(loop: ClockLoop, when: float) -> None:
    """Move the clock to ``when`` and let the timers due by then run."""
    loop.now = when
    for _ in range(3):
        await asyncio.sleep(0)


def run_on_clock(scenario) -> None:
    loop = ClockLoop()
    try:
        loop.run_until_complete(scenario(loop))
    finally:
        loop.close()


def test_each_key_expires_once_at_its_deadline_in_order():
    async def scenario(loop: ClockLoop) -> None:
        expired: list[tuple[str, float]] = []
        deadlines: Deadlines[str] = Deadlines(lambda key: expired.append((key, loop.time())))
        now = loop.time()
        deadlines.add("late", now + 0.06)
        deadlines.add("early", now + 0.02)  # before the armed one: arms the timer again
        deadlines.add("middle", now + 0.04)
        for step, expected in ((0.01, []), (0.02, ["early"]), (0.03, ["early"]),
                               (0.04, ["early", "middle"]), (0.06, ["early", "middle", "late"])):
            await at(loop, now + step)
            assert [key for key, _ in expired] == expected, step
        assert expired == [("early", now + 0.02), ("middle", now + 0.04), ("late", now + 0.06)]
        await at(loop, now + 1.0)
        assert len(expired) == 3 and len(deadlines) == 0 and _timers(loop) == 0

    run_on_clock(scenario)


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


def test_an_expiry_may_add_a_deadline():
    async def scenario(loop: ClockLoop) -> None:
        expired: list[str] = []

        def on_expire(key: str) -> None:
            expired.append(key)
            if key == "first":
                deadlines.add("second", loop.time() + 0.01)

        deadlines: Deadlines[str] = Deadlines(on_expire)
        now = loop.time()
        deadlines.add("first", now + 0.01)
        deadlines.add("last", now + 0.05)
        for step in (0.01, 0.02, 0.05):
            await at(loop, now + step)
        assert expired == ["first", "second", "last"]

    run_on_clock(scenario)
