"""The status page in a real headless Chromium (Debian's ``chromium``, installed when missing) against
a running runtime (a sidecar owning a plugin folder, in front of tritonserver): one page load shows
every model's card, and the same page follows a plugin removed and added again; on a phone's width
nothing spills sideways. The screenshots go to ``RUTH_SCREENSHOT_DIR`` when it is set (the README's
is made so), else to the test's temporary folder.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from tests.browser import BROWSERS, Chromium
from tests.debian_tools import debian_tool
from tests.integration.test_lifecycle import FRAME, PLUGINS, V, state_is, until
from tests.integration.test_told_truthfully import stack

pytestmark = pytest.mark.integration

CARDS = ("[...document.querySelectorAll('[data-model]')]"
         ".map(c => [c.dataset.model, c.dataset.state, c.dataset.health])")


def chromium() -> str:
    """Chromium's path (Debian's ``chromium``, installed when missing)."""
    return debian_tool(BROWSERS, "chromium")


async def cards(page) -> dict[str, tuple[str, str]]:
    found = await asyncio.to_thread(page.evaluate, CARDS)
    return {key: (state, health) for key, state, health in found or []}


async def test_the_status_page_shows_every_model_and_follows_a_plugin_removed_and_added(
    triton_factory, tmp_path
):
    browser_binary = chromium()
    shots = Path(os.environ.get("RUTH_SCREENSHOT_DIR") or tmp_path)
    async with stack(triton_factory, tmp_path, ["lc_echo", "sc_flaky", "up_counter", "up_frame"]) as (
        sidecar, http, client
    ):
        for model_id in ("lc_echo", "sc_flaky", "up_counter", "up_frame"):
            await until(lambda m=model_id: state_is(http, m, "READY"), timeout=60.0)
        for n in range(6):  # traffic for the figures; sc_flaky fails every third frame
            await client.infer("lc_echo", V, FRAME, frame_id=f"p{n}")
            await client.infer("sc_flaky", V, FRAME, frame_id=f"f-{n}")
            await client.infer("up_frame", V, FRAME, frame_id=f"u{n}", camera_id="cam1")

        with Chromium(browser_binary, tmp_path / "chromium-profile") as browser:
            # the sidecar serves from this event loop: every browser call waits in a thread
            page = await asyncio.to_thread(browser.open, f"http://127.0.0.1:{sidecar.http_port}/")
            expected = {f"{m}:{V}" for m in ("lc_echo", "sc_flaky", "up_counter", "up_frame")}

            async def all_shown():
                shown = await cards(page)
                ready = shown.keys() == expected and all(state == "READY" for state, _ in shown.values())
                return shown if ready else None

            await until(all_shown, timeout=30.0, interval=0.2)
            assert await asyncio.to_thread(page.text, "#triton") == "ready"
            assert await asyncio.to_thread(page.text, "#serving") == "4 of 4"
            dependent = await asyncio.to_thread(page.text, f'[data-model="up_frame:{V}"] .upstreams')
            assert dependent == f"up_counter {V}"
            await asyncio.to_thread(page.screenshot, shots / "status-page.png")

            # the same page, no reload: the removed plugin's card turns UNLOADED, then READY again
            shutil.rmtree(tmp_path / "models" / "sc_flaky")
            await until(lambda: _in_state(page, f"sc_flaky:{V}", "UNLOADED"), timeout=60.0, interval=0.2)
            assert await asyncio.to_thread(page.text, "#serving") == "3 of 4"
            shutil.copytree(PLUGINS / "sc_flaky", tmp_path / "models" / "sc_flaky")
            await until(lambda: _in_state(page, f"sc_flaky:{V}", "READY"), timeout=90.0, interval=0.2)
            history = await asyncio.to_thread(page.text, f'[data-model="sc_flaky:{V}"] .history')
            assert "UNLOADED → DISCOVERED: found again" in history and "LOADING → READY" in history

            phone = await asyncio.to_thread(
                browser.open, f"http://127.0.0.1:{sidecar.http_port}/", width=390, height=844, mobile=True
            )
            await until(lambda: _count(phone, 4), timeout=30.0, interval=0.2)
            overflow = await asyncio.to_thread(
                phone.evaluate, "document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, f"the page is {overflow} px wider than a phone's screen"
            await asyncio.to_thread(phone.screenshot, shots / "status-page-phone.png")
    assert (shots / "status-page.png").stat().st_size > 10_000


async def _in_state(page, key: str, state: str) -> bool:
    found = (await cards(page)).get(key)
    return found is not None and found[0] == state


async def _count(page, n: int) -> bool:
    return len(await cards(page)) == n
