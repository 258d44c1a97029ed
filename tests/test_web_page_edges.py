"""The drive page's rough edges, in headless Chromium: a landscape phone keeps STOP and the
joystick on screen; a refused mode change says why by the selector; the erase count is
what the recorder really erased; a simulator's laps, speed and resets are shown; the
keyboard hint hides on a touch-only device. Every wait is generous (a loaded machine can
stall Chromium for seconds) and nothing here asserts a timing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from car.config import WebConfig
from car.controllers.web import WebController
from car.frames import Mode
from tests.browser import require_browser

require_browser()

from playwright.sync_api import Browser, Page  # noqa: E402

from tests.test_web_browser import DESKTOP, PHONE, TOKEN, Clock, FakeLoop  # noqa: E402

WAIT_MS = 10000
LANDSCAPE = ({"width": 844, "height": 390}, {"width": 740, "height": 360},
             {"width": 667, "height": 375})
PUSHED_PAD = """
window.fakePad = {connected: true, mapping: "standard", id: "fake pad", axes: [0.6, 0, 0, 0],
                  buttons: Array.from({length: 17}, () => ({value: 0, pressed: false}))};
navigator.getGamepads = () => [window.fakePad];
"""
SIM = {"lap": 3, "last_lap_s": 12.43, "speed_mps": 1.84, "resets": 2}


@pytest.fixture
def web() -> Iterator[WebController]:
    controller = WebController(WebConfig(host="127.0.0.1", port=0, token=TOKEN),
                               start_mode=None, clock=Clock())
    controller.start()
    yield controller
    controller.close()


def open_page(browser: Browser, web: WebController, viewport: dict[str, int] = DESKTOP,
              touch: bool = False) -> Page:
    """A page that has its first status and (as the owner) has sent its first control."""
    context = browser.new_context(viewport=viewport, has_touch=touch, is_mobile=touch)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(web.url)
    page.wait_for_function("window.carPage && window.carPage.statuses > 0"
                           " && (!window.carPage.owner || window.carPage.sent > 0)",
                           timeout=WAIT_MS)
    assert errors == []
    return page


def inside(page: Page, selector: str, viewport: dict[str, int]) -> None:
    """The element is wholly inside the viewport, the page unscrolled."""
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    assert box["x"] >= 0 and box["y"] >= 0, (selector, box)
    assert box["x"] + box["width"] <= viewport["width"], (selector, box, viewport)
    assert box["y"] + box["height"] <= viewport["height"], (selector, box, viewport)


def shoot(page: Page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"web_{name}.png"
    page.screenshot(path=str(path))
    shutil.copy(path, f"/tmp/web_{name}.png")


@pytest.mark.parametrize("viewport", LANDSCAPE, ids=lambda v: f"{v['width']}x{v['height']}")
def test_a_landscape_phone_keeps_stop_and_the_pad_on_screen(
        browser: Browser, web: WebController, viewport: dict[str, int],
        tmp_path: Path) -> None:
    loop = FakeLoop(web, model=None, extra=SIM)
    try:
        page = open_page(browser, web, viewport, touch=True)
        page.wait_for_function("window.carPage.frames >= 3", timeout=WAIT_MS)
        page.select_option("#mode", "local")  # refused: a note by the selector, too
        page.wait_for_selector("#mode-note", state="visible", timeout=WAIT_MS)
        assert page.evaluate("[window.scrollX, window.scrollY]") == [0, 0]
        for control in ("#estop", "#pad", "#video", "#mode", "#mode-note", "#record"):
            inside(page, control, viewport)
        # the page as a whole does not scroll: STOP cannot be scrolled away
        assert page.evaluate("document.documentElement.scrollHeight") <= viewport["height"]
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        pad = page.locator("#pad").bounding_box()
        assert pad is not None and pad["width"] >= 150  # still a thumb's room
        # side by side: the controls to the right of the video
        video = page.locator("#video").bounding_box()
        assert video is not None and pad["x"] >= video["x"] + video["width"]
        assert video["width"] >= 240  # the note has not squeezed the video away
        page.tap("#estop")  # usable: a tap on STOP stops the car
        loop.wait_for(lambda u, _: u.estop)
        shoot(page, tmp_path, f"landscape_{viewport['width']}")
        page.context.close()
    finally:
        loop.close()


@pytest.mark.parametrize("viewport", (PHONE, DESKTOP), ids=("portrait", "desktop"))
def test_portrait_and_desktop_still_show_every_control(
        browser: Browser, web: WebController, viewport: dict[str, int],
        tmp_path: Path) -> None:
    loop = FakeLoop(web, extra=SIM)
    try:
        page = open_page(browser, web, viewport, touch=viewport is PHONE)
        page.wait_for_function("window.carPage.frames >= 3", timeout=WAIT_MS)
        for control in ("#estop", "#pad", "#mode", "#record", "#limit"):
            inside(page, control, viewport)
        page.click("#estop")
        loop.wait_for(lambda u, _: u.estop)
        shoot(page, tmp_path, "portrait" if viewport is PHONE else "desktop_edges")
        page.context.close()
    finally:
        loop.close()


def test_a_refused_mode_change_says_why(browser: Browser, web: WebController) -> None:
    loop = FakeLoop(web, model=None)  # `car record`: no model, so no pilot mode
    try:
        page = open_page(browser, web)
        assert page.is_hidden("#mode-note")
        page.select_option("#mode", "local")
        page.wait_for_selector("#mode-note", state="visible", timeout=WAIT_MS)
        assert page.inner_text("#mode-note") == \
            "mode local needs a model and this run has none: staying in user"
        page.wait_for_function("document.querySelector('#mode').value === 'user'",
                               timeout=WAIT_MS)  # the mode in effect, at once
        assert loop.mode is Mode.USER and loop.mode_refusals == 1
        page.context.close()
    finally:
        loop.close()


def test_a_mode_change_refused_by_the_server_says_why(browser: Browser,
                                                      web: WebController) -> None:
    loop = FakeLoop(web)
    try:
        context = browser.new_context(viewport=DESKTOP)
        page = context.new_page()
        page.add_init_script(PUSHED_PAD)  # its stick is pushed from the start: not centred
        page.goto(web.url)
        page.wait_for_function("window.carPage.owner && window.carPage.sent > 3",
                               timeout=WAIT_MS)
        page.select_option("#mode", "local")
        page.wait_for_selector("#mode-note", state="visible", timeout=WAIT_MS)
        assert page.inner_text("#mode-note").startswith("mode refused: ")
        page.wait_for_function("document.querySelector('#mode').value === 'user'",
                               timeout=WAIT_MS)
        assert all(u.mode is None for u, _ in loop.since(0))
        page.evaluate("fakePad.axes[0] = 0")  # centred: now the mode changes, once the
        # server has seen a centred control (a busy machine can delay the page's next tick)
        page.wait_for_function("window.carPage.takeoverPending === false", timeout=WAIT_MS)
        page.select_option("#mode", "local")
        loop.wait_for(lambda u, _: u.mode is Mode.LOCAL)
        page.wait_for_selector("#mode-note", state="hidden", timeout=WAIT_MS)
        context.close()
    finally:
        loop.close()


def test_the_erase_count_is_what_was_erased(browser: Browser, web: WebController) -> None:
    loop = FakeLoop(web, kept=37)  # a recording only 37 records long so far
    try:
        page = open_page(browser, web)
        page.click("#erase")
        page.click("#erase")  # two taps
        loop.wait_for(lambda u, _: u.erase_last == 100)
        page.wait_for_function("window.carPage.eraseText !== ''", timeout=WAIT_MS)
        text = page.inner_text("#message")
        assert text.startswith("erased 37 records (all there were);"), text
        assert page.evaluate("window.carPage.eraseText") == text
        loop.kept = 500
        page.wait_for_timeout(3100)  # one erase per 3 s
        page.click("#erase")
        page.click("#erase")
        page.wait_for_function("window.carPage.eraseText.startsWith('erased 100 records;')",
                               timeout=WAIT_MS)
        page.context.close()
    finally:
        loop.close()


def test_the_simulator_fields_are_shown_and_hidden_without_them(
        browser: Browser, web: WebController) -> None:
    loop = FakeLoop(web)  # a real car: no laps, speed or resets
    try:
        page = open_page(browser, web)
        text = page.inner_text("#status")
        for label in ("LAPS", "LAST LAP", "SPEED", "RESETS"):
            assert label not in text.upper()
        loop.extra = {**SIM, "last_lap_s": None}  # a simulator, before the first lap
        page.wait_for_function("document.querySelector('#status').innerText.includes("
                               "'1.8 m/s')", timeout=WAIT_MS)
        text = page.inner_text("#status").upper()
        assert "LAPS\n3" in text and "RESETS\n2" in text and "LAST LAP" not in text
        loop.extra = SIM
        page.wait_for_function("document.querySelector('#status').innerText.includes("
                               "'12.4 s')", timeout=WAIT_MS)
        page.context.close()
    finally:
        loop.close()


def test_the_keyboard_hint_hides_on_a_touch_device(browser: Browser,
                                                   web: WebController) -> None:
    loop = FakeLoop(web)
    try:
        desktop = open_page(browser, web, DESKTOP)
        assert desktop.is_visible("#hint-keys")
        assert "arrows or WASD" in desktop.inner_text(".hint")
        assert desktop.evaluate("window.carPage.touchOnly") is False
        desktop.context.close()
        phone = open_page(browser, web, PHONE, touch=True)
        assert phone.evaluate("window.carPage.touchOnly") is True
        assert phone.is_hidden("#hint-keys")
        assert "Gamepad" in phone.inner_text(".hint")  # a phone may have a pad
        phone.context.close()
    finally:
        loop.close()
