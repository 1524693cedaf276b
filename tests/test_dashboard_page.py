"""What the dashboard page says when it cannot be live, and how its tables read (a review):
a page opened past the 32 streams the admin serves stayed empty, blaming the admin ("stale:
no update for 5 s (admin paused or unreachable?)", though it never had one); a page whose
admin stopped flickered between two texts for 20 s and kept its tables looking live; HEAD
on /api/stream was refused (405) while / and /api/state answered it; and at 1,400 px the
tables' cells split words ("defau|lt", "truste|d", "complete|d").

The pages here are served by an in-process Dashboard over fixed data, and read in headless
Chromium (Debian's package, driven by Playwright), as tests/test_dashboard.py does."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import run
from kit import http_exchange

from ceylon_net.dev.testing import wait_until
from ceylon_net.edge.dashboard import MAX_STREAMS, Dashboard

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package "
                                    "'chromium'; bin/test installs it as root)")

# What an admin with two workers and a finished group shows (the shape of snapshot.dashboard)
VIEW: dict[str, Any] = {
    "admin": "admin", "workspace": "default", "groups_total": 1,
    "workers": [{"name": f"worker{i}", "role": "default", "skill": 5, "host": "ceylon-host-1",
                 "running": 1, "queued": 0, "capacity": 2, "stuck": 0, "state": "trusted",
                 "alone": False, "held": False, "seen": 0.1} for i in (1, 2)],
    "groups": [{"id": "g1", "name": "Data Processing", "status": "completed", "priority": 0,
                "total": 10, "completed": 10, "failed": 0, "cancelled": 0, "unassigned": 0,
                "goal": "Partial Processing Complete", "goal_status": "achieved"}],
    "counts": {"total": 12, "done": 11, "succeeded": 10, "failed": 1, "cancelled": 0,
               "unassigned": 0, "running": 1, "queued": 0, "waiting": 0},
    "totals": {"results": 11, "failed": 1},
    "failures": [{"task": "t-17", "worker": "worker2", "error": "ValueError: bad input",
                  "ago": 3.2}]}

# Every word of the tables' cells rendered on two lines (a word split by a wrap)
SPLIT_WORDS = """() => {
  const split = [];
  for (const td of document.querySelectorAll("main td")) {
    const texts = document.createTreeWalker(td, NodeFilter.SHOW_TEXT);
    for (let n = texts.nextNode(); n; n = texts.nextNode())
      for (const m of n.data.matchAll(/[^\\s-]+/g)) {  // (a hyphen may end a line)
        const r = document.createRange();
        r.setStart(n, m.index);
        r.setEnd(n, m.index + m[0].length);
        if (new Set([...r.getClientRects()].map(b => Math.round(b.top))).size > 1)
          split.push(m[0]);
      }
  }
  return split;
}"""

# Every text the status line shows, from the page's start (read back as window.seen)
RECORD_STATUS = """
window.seen = [];
document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  new MutationObserver(() => window.seen.push(live.textContent))
    .observe(live, {childList: true, characterData: true, subtree: true});
});
"""


@contextlib.asynccontextmanager
async def _served(view: dict[str, Any] = VIEW) -> AsyncIterator[Dashboard]:
    board = Dashboard(lambda now: view, lambda: (0, 0.0), lambda: 0, None)
    board.port = await board.start("127.0.0.1", 0)
    try:
        yield board
    finally:
        await board.close()


@contextlib.asynccontextmanager
async def _browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"])
        try:
            yield browser
        finally:
            await browser.close()


def _raw(port: int, data: bytes) -> bytes:
    """What the dashboard answers to ``data``, to the end of the connection."""
    return http_exchange(port, data, timeout=10)


async def _open_streams(board: Dashboard, n: int) -> list[asyncio.StreamWriter]:
    """``n`` pages' streams, open once the dashboard counts them."""
    writers = []
    for _ in range(n):
        _, writer = await asyncio.open_connection("127.0.0.1", board.port)
        writer.write(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        writers.append(writer)
    await wait_until(lambda: board.streams == n, 10, f"{n} streams open")
    return writers


@needs_chromium
@pytest.mark.timeout(60)
def test_a_page_past_the_open_dashboards_says_so_and_blames_no_one():
    """With 32 streams open, a page's stream is answered 503 "too many open dashboards":
    it said "disconnected: retrying...", then "stale: no update for 5 s (admin paused or
    unreachable?)" of an admin that was serving well, and a page that had no update yet."""

    async def body():
        async with _served() as board, _browser() as browser:
            streams = await _open_streams(board, MAX_STREAMS)
            try:
                page = await browser.new_page()
                await page.clock.install()  # (its timers: 20 s run in an instant below)
                await page.add_init_script(RECORD_STATUS)
                await page.goto(f"http://127.0.0.1:{board.port}/")
                await page.wait_for_selector("#live:has-text('most dashboards')", timeout=5_000)
                await page.clock.run_for(20_000)  # past STALE_AFTER and a retry or two
                return await page.evaluate("window.seen"), await page.inner_text("#workers")
            finally:
                for writer in streams:
                    writer.close()

    seen, workers = run(body())
    assert workers == ""
    assert seen[-1] == ("the admin is serving the most dashboards it serves: close another tab "
                        "of it; retrying..."), seen
    assert not [s for s in seen if "no update for" in s or "admin paused" in s], seen


@needs_chromium
@pytest.mark.timeout(60)
def test_a_page_whose_admin_stopped_says_since_when_steadily_and_dims_its_tables():
    """Once the admin stopped, the status line flipped every second or two between
    "disconnected: retrying..." (the stream's errors) and "stale: no update for 7 s" (the
    page's timer), for 20 s, and the tables went on showing "heartbeat 0.1 s ago"."""

    async def body():
        async with _browser() as browser:
            page = await browser.new_page()
            await page.add_init_script(RECORD_STATUS + """
window.errors = 0;  // the stream's errors, counted
const Source = window.EventSource;
window.EventSource = class extends Source {
  constructor(...args) { super(...args); this.addEventListener("error", () => window.errors++); }
};""")
            async with _served() as board:
                await page.goto(f"http://127.0.0.1:{board.port}/")
                await page.wait_for_selector("#live:has-text('live, ')", timeout=5_000)
                live = await page.evaluate("window.seen.length")
            # The admin is gone: its port refuses (the stream reconnects every ~3 s, failing)
            await page.wait_for_selector("#live:has-text('not reachable since')", timeout=5_000)
            errors = await page.evaluate("window.errors")
            await page.wait_for_function(f"window.errors > {errors}", timeout=10_000)
            seen = await page.evaluate(f"window.seen.slice({live})")
            dimmed = await page.evaluate(
                "[...document.querySelectorAll('main table')]"
                ".map(t => Number(getComputedStyle(t).opacity))")
            return seen, dimmed, await page.inner_text("#workers")

    seen, dimmed, workers = run(body())
    # one status from the first error on (the seconds count up in it), as of the last update
    steady = re.compile(r"admin not reachable since \d\d?:\d\d:\d\d( [AP]M)? \(\d+ s\): "
                        r"the tables show what it sent then; retrying\.\.\.")
    first = next(i for i, s in enumerate(seen) if "not reachable" in s)
    assert all(steady.fullmatch(s) for s in seen[first:]), seen
    assert "worker1" in workers  # still shown, as of then
    assert dimmed and all(o < 0.6 for o in dimmed), dimmed


@pytest.mark.timeout(30)
def test_head_on_the_stream_says_what_get_would_without_opening_one():
    """HEAD /api/stream was refused, 405 "read-only: GET only", while / and /api/state
    answered HEAD."""

    async def body():
        async with _served() as board:
            free = await asyncio.to_thread(_raw, board.port, b"HEAD /api/stream HTTP/1.1\r\n\r\n")
            opened = board.streams
            streams = await _open_streams(board, MAX_STREAMS)
            try:
                full = await asyncio.to_thread(_raw, board.port,
                                               b"HEAD /api/stream HTTP/1.1\r\n\r\n")
                get = await asyncio.to_thread(_raw, board.port,
                                              b"GET /api/stream HTTP/1.1\r\n\r\n")
            finally:
                for writer in streams:
                    writer.close()
            return free, opened, full, get

    free, opened, full, get = run(body())
    head, _, rest = free.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Type: text/event-stream" in head
    assert rest == b"" and opened == 0  # the headers only: no stream, none counted
    assert full == get.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"  # the 503's headers
    assert full.startswith(b"HTTP/1.1 503 Service Unavailable")
    assert get.endswith(b"\r\n\r\ntoo many open dashboards\n")


@needs_chromium
@pytest.mark.timeout(60)
@pytest.mark.parametrize("width", [1400, 1280, 1000, 1700])
def test_the_tables_do_not_split_words(width):
    """At 1,400 px (three columns of sections) the cells broke words anywhere: "defau|lt",
    "truste|d", "complete|d" (overflow-wrap: anywhere, meant for a long name, on every
    cell)."""

    async def body():
        async with _served() as board, _browser() as browser:
            page = await browser.new_page(viewport={"width": width, "height": 900})
            await page.goto(f"http://127.0.0.1:{board.port}/")
            await page.wait_for_selector("#failures td", timeout=5_000)
            return (await page.evaluate(SPLIT_WORDS),
                    await page.evaluate("document.documentElement.scrollWidth"))

    split, page_width = run(body())
    assert split == [] and page_width <= width, (split, page_width)
