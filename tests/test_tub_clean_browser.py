"""`car tub clean`'s page in a real browser: Debian's headless Chromium driven by Playwright.
Selecting by mouse drag, keys and touch drag, deleting, restoring and undoing, and checking
the tub on disk each time; playback; the phone layout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from car.config import WebConfig
from car.tub import Tub, TubWriter
from car.tubclean import CleanServer, CleanSession
from tests.browser import require_browser
from tests.conftest import DRIVE_INPUTS, DRIVE_TYPES, drive_record

require_browser()

from playwright.sync_api import Browser, Page  # noqa: E402

TOKEN = "clean-browser-token-0123"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}
WAIT_MS = 10000  # generous: a loaded CI machine can stall Chromium for seconds
RECORDS = 120


@pytest.fixture
def tub(tmp_path: Path) -> Path:
    path = tmp_path / "tub"
    with TubWriter(path, DRIVE_INPUTS, DRIVE_TYPES) as writer:
        for i in range(RECORDS):
            writer.write(drive_record(i))
    return path


@pytest.fixture
def server(tub: Path) -> Iterator[CleanServer]:
    server = CleanServer(CleanSession(tub), WebConfig(host="127.0.0.1", port=0, token=TOKEN))
    server.start()
    yield server
    server.close()


def open_page(browser: Browser, server: CleanServer, viewport: dict[str, int] = DESKTOP,
              touch: bool = False) -> tuple[Page, list[str]]:
    context = browser.new_context(viewport=viewport, has_touch=touch, is_mobile=touch)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url)
    page.wait_for_function("window.tubClean && window.tubClean.loaded"
                           " && window.tubClean.frameLoaded", timeout=WAIT_MS, polling=100)
    return page, errors


def state(page: Page, key: str) -> object:
    return page.evaluate(f"window.tubClean.{key}")


def wait_edits(page: Page, edits: int) -> None:
    """Until the page has had ``edits`` answers that changed (or kept) the tub."""
    try:
        page.wait_for_function(f"window.tubClean.edits >= {edits} && !window.tubClean.busy",
                               timeout=WAIT_MS, polling=100)
    except Exception:
        raise AssertionError("no edit answered; page: " + str(page.evaluate(
            "[window.tubClean.edits, window.tubClean.busy, window.tubClean.message, "
            "window.tubClean.sel]"))) from None


def deleted(tub: Path) -> set[int]:
    return set(Tub(tub).deleted_indexes)


def timeline_x(page: Page, fraction: float) -> tuple[float, float]:
    box = page.locator("#timeline").bounding_box()
    assert box is not None
    return box["x"] + fraction * box["width"], box["y"] + box["height"] / 2


def test_drag_delete_undo(browser: Browser, server: CleanServer, tub: Path) -> None:
    page, errors = open_page(browser, server)
    x0, y = timeline_x(page, 0.30)
    x1, _ = timeline_x(page, 0.45)
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move(x1, y, steps=8)
    page.mouse.up()
    start, end = state(page, "sel")  # type: ignore[misc]
    assert abs(start - 0.30 * RECORDS) <= 2 and abs(end - 0.45 * RECORDS) <= 2
    assert state(page, "cur") == end  # the frame follows the drag
    page.keyboard.press("Delete")
    wait_edits(page, 1)
    assert deleted(tub) == set(range(start, end + 1))
    assert page.inner_text("#message") == (f"deleted {end - start + 1} record(s) "
                                           f"({start}..{end})")
    assert page.is_visible("#deleted-badge")  # the cursor is on a deleted frame
    assert page.inner_text("#counts") == f"{RECORDS - (end - start + 1)} live · " \
                                         f"{end - start + 1} deleted"
    page.click("#undo")
    wait_edits(page, 2)
    assert deleted(tub) == set() and not page.is_visible("#deleted-badge")
    assert page.inner_text("#message").startswith("undid: deleted")
    assert page.is_disabled("#undo")
    x2, _ = timeline_x(page, 0.8)
    page.mouse.click(x2, y)  # a click without a drag moves the cursor, clears the selection
    assert state(page, "sel") is None and abs(state(page, "cur") - 0.8 * RECORDS) <= 2
    assert errors == []
    page.close()


def test_keyboard_selection(browser: Browser, server: CleanServer, tub: Path) -> None:
    page, errors = open_page(browser, server)
    page.keyboard.press("Delete")  # nothing selected yet: said so, nothing changed
    assert "select a range first" in page.inner_text("#message")
    page.keyboard.press("Home")
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("[")
    for _ in range(4):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("]")
    assert state(page, "sel") == [3, 7]
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("Shift+ArrowRight")
    assert state(page, "sel") == [3, 9] and state(page, "cur") == 9
    assert "selected 7 record(s), index 3..9" in page.inner_text("#selection")
    assert page.inner_text("#selection code") == "3:10"  # what `car tub delete` would take
    page.keyboard.press("Delete")
    wait_edits(page, 1)
    assert deleted(tub) == set(range(3, 10))
    page.keyboard.press("ArrowLeft")  # the cursor moves, the selection stays
    page.keyboard.press("Shift+ArrowLeft")  # the cursor is not an end: a new selection
    assert state(page, "sel") == [7, 8]
    page.keyboard.press("r")
    wait_edits(page, 2)
    assert deleted(tub) == {3, 4, 5, 6, 9}
    page.keyboard.press("z")
    wait_edits(page, 3)
    assert deleted(tub) == set(range(3, 10))
    page.keyboard.press("Control+z")
    wait_edits(page, 4)
    assert deleted(tub) == set()
    page.keyboard.press("Escape")
    assert state(page, "sel") is None
    page.keyboard.press("ArrowDown")  # ten frames on
    assert state(page, "cur") == 17
    assert errors == []
    page.close()


def test_playback(browser: Browser, server: CleanServer) -> None:
    page, errors = open_page(browser, server)
    assert page.evaluate("document.querySelector('#frame').naturalWidth") == 160
    page.select_option("#speed", "8")
    page.keyboard.press(" ")
    page.wait_for_function("window.tubClean.cur >= 10", timeout=WAIT_MS, polling=100)
    page.keyboard.press(" ")
    assert state(page, "playing") is False
    stopped = state(page, "cur")
    page.wait_for_timeout(300)
    assert state(page, "cur") == stopped
    index = page.inner_text("#index")
    assert index == str(stopped)
    page.click("#fwd")
    assert state(page, "cur") == stopped + 1
    page.click("#last")
    assert page.inner_text("#pos") == f"{RECORDS} / {RECORDS}"
    assert errors == []
    page.close()


def touch_drag(page: Page, x0: float, x1: float, y: float) -> None:
    """A finger drag, as the phone's touch screen sends it (Chromium's own touch events)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart",
                                          "touchPoints": [{"x": x0, "y": y}]})
    for i in range(1, 9):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [
            {"x": x0 + (x1 - x0) * i / 8, "y": y}]})
    # The finger stops before it lifts, as a person's does: lifted while moving, Chromium
    # starts a fling, and the next tap only stops the fling (no click reaches the page).
    page.wait_for_timeout(150)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x1, "y": y}]})
    page.wait_for_timeout(150)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def test_phone_layout_and_touch(browser: Browser, server: CleanServer, tub: Path) -> None:
    page, errors = open_page(browser, server, PHONE, touch=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    for control in ("#frame", "#play", "#back", "#fwd", "#timeline", "#mark-start",
                    "#mark-end", "#delete", "#restore", "#undo"):
        box = page.locator(control).bounding_box()
        assert box is not None and page.is_visible(control), control
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], control
        assert box["height"] >= 30 or control == "#frame", control  # big enough to tap
    page.locator("#timeline").scroll_into_view_if_needed()
    x0, y = timeline_x(page, 0.5)
    x1, _ = timeline_x(page, 0.6)
    touch_drag(page, x0, x1, y)
    page.wait_for_function("window.tubClean.sel !== null", timeout=WAIT_MS, polling=100)
    start, end = state(page, "sel")  # type: ignore[misc]
    assert abs(start - 0.5 * RECORDS) <= 2 and abs(end - 0.6 * RECORDS) <= 2
    page.tap("#delete")
    wait_edits(page, 1)
    assert deleted(tub) == set(range(start, end + 1))
    page.tap("#undo")
    wait_edits(page, 2)
    assert deleted(tub) == set()
    assert errors == []
    page.context.close()
