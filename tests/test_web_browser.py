"""The web page in a real browser: Debian's headless Chromium driven by Playwright.

A fake loop thread polls the WebController at 20 Hz, keeps every UserInput it got, and
publishes a moving synthetic picture and a status, as the drive loop does. The controller's
clock can be frozen, so that "the page closed, the loop went neutral" is told apart from
the 250 ms failsafe.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from car.config import WebConfig
from car.controllers.web import WebController
from car.frames import Frame, Mode, UserInput
from tests.browser import require_browser

require_browser()

from playwright.sync_api import Browser, Page  # noqa: E402

TOKEN = "browser-token-0123456789"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}


class Clock:
    """time.monotonic (plus ``offset``), unless frozen."""

    def __init__(self) -> None:
        self.frozen: float | None = None
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset if self.frozen is None else self.frozen


class FakeLoop:
    """Polls and publishes at 20 Hz on its own thread, like the drive loop: without a
    ``model`` it refuses the pilot modes (counted in ``mode_refusals``, as the loop does), and
    an erase takes at most the ``kept`` records there are (``erases``, ``erased_last``, as
    the recorder reports them). ``extra`` adds status fields (a simulator's, say)."""

    def __init__(self, web: WebController, rate_hz: float = 20.0,
                 model: str | None = "pilot.onnx (linear)", kept: int = 1000,
                 extra: dict[str, Any] | None = None):
        self.web = web
        self.period_s = 1.0 / rate_hz
        self.inputs: list[tuple[UserInput, bool]] = []  # (input, failsafe) per tick
        self.recording = False
        self.mode = Mode.USER
        self.model = model
        self.kept = kept
        self.extra = extra or {}
        self.mode_refusals = self.erases = self.erased_last = 0
        self.mode_refused = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        y, x = np.mgrid[0:120, 0:160]
        while not self._stop.wait(self.period_s):
            user = self.web.poll(time.monotonic())
            self.recording = user.recording if user.recording is not None else self.recording
            if user.mode not in (None, Mode.USER) and self.model is None:
                self.mode_refusals += 1
                self.mode_refused = (f"mode {user.mode.value} needs a model and this run has "
                                     f"none: staying in {self.mode.value}")
            else:
                self.mode = user.mode or self.mode
            if user.erase_last > 0:
                self.erased_last = min(self.kept, user.erase_last)
                self.kept -= self.erased_last
                self.erases += 1
            with self._lock:
                self.inputs.append((user, self.web.failsafe))
            image = np.stack([(x + 3 * seq) % 256, 2 * y, np.full_like(x, 120)], axis=-1)
            self.web.publish(Frame(image.astype(np.uint8), time.monotonic(), seq), {
                "hz": 20.0, "latency_ms": 14.0, "mode": self.mode.value,
                "recording": self.recording, "records": 3 * seq if self.recording else 0,
                "model": self.model, "mcu": True, "battery_v": 7.42,
                "mcu_failsafe": False, "estop": False, "throttle_limit": 0.8,
                "steering": user.steering, "throttle": user.throttle, "reason": "ok",
                "mode_refusals": self.mode_refusals, "erases": self.erases,
                "erased_last": self.erased_last, "erase_error": None,
                "mode_refused": self.mode_refused, **self.extra})
            seq += 1

    def mark(self) -> int:
        with self._lock:
            return len(self.inputs)

    def since(self, mark: int) -> list[tuple[UserInput, bool]]:
        with self._lock:
            return self.inputs[mark:]

    def wait_for(self, test: Callable[[UserInput, bool], bool], mark: int = 0,
                 timeout_s: float = 10.0) -> UserInput:
        # Generous: a loaded CI machine can stall Chromium for seconds. It bounds only how
        # long a condition may take to appear, never what the condition is.
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for user, failsafe in self.since(mark):
                if test(user, failsafe):
                    return user
            time.sleep(0.02)
        raise AssertionError(f"no polled input passed the test; last: {self.since(mark)[-3:]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def page_ticks(page: Page, ticks: int) -> None:
    """Wait until ``page`` has sent ``ticks`` more control messages (one per 40 ms tick)."""
    sent = page.evaluate("window.carPage.sent")
    page.wait_for_function(f"window.carPage.sent >= {sent + ticks}", timeout=5000)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def web(clock: Clock) -> Iterator[WebController]:
    controller = WebController(WebConfig(host="127.0.0.1", port=0, token=TOKEN),
                               start_mode=None, clock=clock)
    controller.start()
    yield controller
    controller.close()


@pytest.fixture
def loop(web: WebController) -> Iterator[FakeLoop]:
    fake = FakeLoop(web)
    yield fake
    fake.close()


def open_page(browser: Browser, web: WebController, viewport: dict[str, int] = DESKTOP
              ) -> Page:
    page = browser.new_page(viewport=viewport)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(web.url)
    # An owner must centre its controls once before it drives (a new owner's held key is
    # refused): wait for the page's first (neutral) control, so that a key pressed next is
    # not the first control the server sees. A busy machine can delay that first tick.
    page.wait_for_function("window.carPage && window.carPage.statuses > 0"
                           " && (!window.carPage.owner || window.carPage.sent > 0)",
                           timeout=10000)
    assert errors == []
    return page


def test_video_frames_arrive(browser: Browser, web: WebController, loop: FakeLoop) -> None:
    page = open_page(browser, web)
    page.wait_for_function("window.carPage.frames >= 10", timeout=5000)
    # The newest blob may still be decoding at any instant: wait for a decoded 160x120 frame.
    page.wait_for_function("(() => { const img = document.querySelector('#video');"
                           " return img.naturalWidth === 160 && img.naturalHeight === 120; })()",
                           timeout=5000)
    assert page.evaluate("window.carPage.owner") is True
    assert page.inner_text("#status").count("20.0 Hz") == 1
    page.close()


def test_keyboard_drives(browser: Browser, web: WebController, loop: FakeLoop) -> None:
    page = open_page(browser, web)
    page.keyboard.down("ArrowUp")
    page.keyboard.down("ArrowRight")
    loop.wait_for(lambda u, _: u.throttle > 0.3 and u.steering > 0.3)
    page.keyboard.up("ArrowUp")
    page.keyboard.up("ArrowRight")
    mark = loop.mark()
    loop.wait_for(lambda u, failsafe: u.throttle == 0 and u.steering == 0 and not failsafe,
                  mark)
    page.keyboard.down("KeyS")  # WASD too: S is reverse
    page.keyboard.down("KeyA")
    loop.wait_for(lambda u, _: u.throttle < -0.3 and u.steering < -0.3, loop.mark())
    page.keyboard.up("KeyS")
    page.keyboard.up("KeyA")
    page.close()


def test_joystick_follows_the_drag(browser: Browser, web: WebController,
                                   loop: FakeLoop) -> None:
    page = open_page(browser, web, PHONE)
    box = page.locator("#pad").bounding_box()
    assert box is not None
    cx, cy, half = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 0.9 * half, cy - 0.9 * half, steps=5)  # up and right
    loop.wait_for(lambda u, _: u.steering > 0.8 and u.throttle > 0.8)
    page.mouse.move(cx - 0.4 * half, cy + 0.4 * half, steps=5)  # down and left
    loop.wait_for(lambda u, _: -0.7 < u.steering < -0.3 and -0.7 < u.throttle < -0.3,
                  loop.mark())
    page.mouse.up()  # released: back to the centre
    loop.wait_for(lambda u, failsafe: u == UserInput() and not failsafe, loop.mark())
    page.close()


GAMEPAD = """
window.fakePad = {connected: true, mapping: "standard", id: "fake pad", axes: [0, 0, 0, 0],
                  buttons: Array.from({length: 17}, () => ({value: 0, pressed: false}))};
navigator.getGamepads = () => [window.fakePad];
"""


def test_gamepad_standard_mapping(browser: Browser, web: WebController,
                                  loop: FakeLoop) -> None:
    page = browser.new_page()
    page.add_init_script(GAMEPAD)  # headless Chromium has no pad: the Gamepad API, faked
    page.goto(web.url)
    page.wait_for_function("window.carPage.owner", timeout=5000)
    page.evaluate("fakePad.axes[0] = 0.5; fakePad.buttons[7].value = 0.6")  # stick, RT
    loop.wait_for(lambda u, _: u.steering == 0.5 and u.throttle == pytest.approx(0.6))
    page.wait_for_function("document.querySelector('#status').innerText.includes('fake pad')")
    page.evaluate("fakePad.buttons[7].value = 0; fakePad.buttons[6].value = 0.3")  # LT
    loop.wait_for(lambda u, _: u.throttle == pytest.approx(-0.3), loop.mark())
    page.evaluate("fakePad.buttons[6].value = 0; fakePad.axes = [0.05, 0, 0, -0.8]")
    loop.wait_for(lambda u, _: u.steering == 0 and u.throttle == pytest.approx(0.8),
                  loop.mark())  # dead zone on the left stick, right stick up is forward
    mark = loop.mark()
    page.evaluate("fakePad.buttons[1].value = 1")  # B: stop, once however long it is held
    loop.wait_for(lambda u, _: u.estop, mark)
    page_ticks(page, 5)  # five more reads of the pad with B held
    page.evaluate("fakePad.axes[0] = -0.5")  # then a marker, sent after all of them
    loop.wait_for(lambda u, _: u.steering == -0.5, mark)
    assert sum(u.estop for u, _ in loop.since(mark)) == 1
    page.close()


def test_buttons_send_requests_once(browser: Browser, web: WebController,
                                    loop: FakeLoop) -> None:
    page = open_page(browser, web)
    mark = loop.mark()
    page.click("#record")
    loop.wait_for(lambda u, _: u.recording is True, mark)
    page.wait_for_function("document.querySelector('#record').textContent === "
                           "'Stop recording'")
    assert [u.recording for u, _ in loop.since(mark) if u.recording is not None] == [True]
    page.select_option("#mode", "local")
    loop.wait_for(lambda u, _: u.mode is Mode.LOCAL, mark)
    page.click("#erase")
    page.click("#erase")  # two taps
    loop.wait_for(lambda u, _: u.erase_last == 100, mark)
    page.click("#estop")
    loop.wait_for(lambda u, _: u.estop, mark)
    page.locator("#limit").fill("40")
    loop.wait_for(lambda u, _: u.throttle_limit == pytest.approx(0.4), mark)
    page_ticks(page, 5)  # a few more ticks: nothing is delivered twice
    page.keyboard.down("ArrowLeft")  # a marker after them
    loop.wait_for(lambda u, _: u.steering < 0, mark)
    page.keyboard.up("ArrowLeft")
    delivered = [u for u, _ in loop.since(mark)]
    assert sum(u.recording is not None for u in delivered) == 1
    assert sum(u.mode is not None for u in delivered) == 1
    assert sum(u.erase_last > 0 for u in delivered) == 1
    assert sum(u.estop for u in delivered) == 1
    page.close()


def test_closing_the_page_is_neutral_at_once(browser: Browser, clock: Clock) -> None:
    # A 2 s failsafe: a page stalled by a busy machine before the clock is frozen must not
    # trip it (the owner would then have to centre its controls). Once frozen, only the
    # page's going can make the input neutral.
    config = WebConfig(host="127.0.0.1", port=0, token=TOKEN, failsafe_ms=2000)
    with WebController(config, start_mode=None, clock=clock) as web:
        loop = FakeLoop(web)
        try:
            page = open_page(browser, web)
            page.keyboard.down("ArrowUp")
            loop.wait_for(lambda u, _: u.throttle > 0.3)
            clock.frozen = time.monotonic()  # from here no control message can grow stale
            mark = loop.mark()
            loop.wait_for(lambda u, _: u.throttle > 0.3, mark)
            page.close()  # pagehide sends a neutral control; then the socket closes
            mark = loop.mark()
            user = loop.wait_for(lambda u, failsafe: failsafe, mark)  # the clock is frozen
            assert user == UserInput()
            assert not web.owner_connected
            assert all(u.throttle == 0 for u, _ in loop.since(loop.mark() - 1))
        finally:
            loop.close()


def test_failsafe_banner_when_the_page_stalls(browser: Browser, web: WebController,
                                              loop: FakeLoop) -> None:
    page = open_page(browser, web)
    page.select_option("#mode", "local")  # a pilot drives: losing the watcher stops it
    loop.wait_for(lambda u, _: u.mode is Mode.LOCAL)
    page.keyboard.down("ArrowUp")
    loop.wait_for(lambda u, failsafe: u.throttle > 0.3 and not failsafe)
    mark = loop.mark()
    page.evaluate("() => { const end = performance.now() + 500; while (performance.now() < end)"
                  " {} }")  # the page's thread is busy: no control for 500 ms
    user = loop.wait_for(lambda u, failsafe: failsafe and u.throttle == 0, mark)
    assert user.mode is Mode.USER  # with the failsafe's first poll
    assert [u.mode for u, _ in loop.since(mark) if u.mode is not None] == [Mode.USER]
    page.wait_for_function("window.carPage.failsafeSeen > 0", timeout=3000)
    assert page.evaluate("window.carPage.failsafeText") == \
        "FAILSAFE: no control for 250 ms — car stopped — switched to user mode"
    loop.wait_for(lambda u, failsafe: not failsafe and u.throttle > 0.3, loop.mark())
    page.keyboard.up("ArrowUp")
    page.close()


HIDE = """(hidden) => {
  Object.defineProperty(document, "visibilityState", {value: hidden ? "hidden" : "visible",
                                                      configurable: true});
  Object.defineProperty(document, "hidden", {value: hidden, configurable: true});
  const sent = window.carPage.sent;
  document.dispatchEvent(new Event("visibilitychange"));
  return sent;
}"""


def test_a_hidden_page_sends_one_neutral_and_stops(browser: Browser, web: WebController,
                                                   loop: FakeLoop) -> None:
    page = open_page(browser, web)
    page.keyboard.down("ArrowUp")
    loop.wait_for(lambda u, failsafe: u.throttle > 0.3 and not failsafe)
    mark = loop.mark()
    sent = page.evaluate(HIDE, True)  # a background tab: timers would run at ~1 Hz
    loop.wait_for(lambda u, failsafe: u == UserInput() and not failsafe, mark)  # the neutral
    neutral = loop.mark()
    # then nothing: the failsafe (250 ms without a control) while the page's 25 Hz timer runs
    loop.wait_for(lambda u, failsafe: failsafe, neutral)
    assert page.evaluate("[window.carPage.sent, window.carPage.hiddenNeutrals]") == [sent + 1, 1]
    assert all(u.throttle == 0 for u, _ in loop.since(neutral))
    page.evaluate(HIDE, False)  # visible again: ArrowUp is still down, but nothing is held
    mark = loop.mark()
    loop.wait_for(lambda u, failsafe: not failsafe, mark)
    page_ticks(page, 5)
    page.keyboard.down("ArrowLeft")  # a marker after those ticks
    loop.wait_for(lambda u, _: u.steering < 0, mark)
    page.keyboard.up("ArrowLeft")
    assert all(u.throttle == 0 for u, _ in loop.since(mark))
    page.keyboard.up("ArrowUp")
    page.keyboard.down("ArrowUp")  # a new press drives again
    loop.wait_for(lambda u, failsafe: u.throttle > 0.3 and not failsafe, loop.mark())
    page.keyboard.up("ArrowUp")
    page.close()


def test_stop_while_offline_says_so(browser: Browser, web: WebController,
                                    loop: FakeLoop) -> None:
    page = open_page(browser, web)
    assert page.is_hidden("#banner-stopfail")
    web.close()  # the car's server is gone
    page.wait_for_function("!window.carPage.connected", timeout=3000)
    page.click("#estop")
    page.wait_for_selector("#banner-stopfail", state="visible", timeout=1000)
    assert page.inner_text("#banner-stopfail") == "STOP NOT SENT: offline"
    page.keyboard.press("Space")
    assert page.evaluate("window.carPage.stopsNotSent") == 2
    page.close()


def test_refused_without_the_token(browser: Browser, web: WebController) -> None:
    page = browser.new_page()
    for url in (web.url.split("?")[0], web.url.replace(TOKEN, "guess")):
        response = page.goto(url)
        assert response is not None and response.status == 403
        assert "wrong or missing token" in page.inner_text("body")
    page.close()


def test_second_page_is_view_only(browser: Browser, web: WebController, loop: FakeLoop,
                                  clock: Clock) -> None:
    first = open_page(browser, web)
    second = open_page(browser, web, PHONE)
    second.wait_for_selector("#banner-view", state="visible")
    assert "VIEW ONLY" in second.inner_text("#banner-view")
    assert second.inner_text("#role") == "view only"
    assert first.inner_text("#role") == "driving"
    mark = loop.mark()
    second.keyboard.down("ArrowUp")  # ignored: the first page drives
    second.wait_for_function("window.carPage.throttle > 0.3")  # its stick is up
    page_ticks(first, 3)
    first.keyboard.down("ArrowLeft")  # a marker from the driving page, after those
    loop.wait_for(lambda u, _: u.steering < 0, mark)
    first.keyboard.up("ArrowLeft")
    assert all(u.throttle == 0 for u, _ in loop.since(mark))
    mark = loop.mark()
    first.close()  # nobody drives; the control is kept 10 s for the first page
    second.wait_for_selector("#banner-view", state="hidden")
    second.wait_for_selector("#takeover", state="visible")
    second.wait_for_function("document.querySelector('#takeover').disabled")
    assert second.inner_text("#takeover").startswith("Take control (in ")
    second.screenshot(path="/tmp/web_takeover_wait.png")
    second.wait_for_timeout(300)  # its held throttle counts for nothing: it does not drive
    assert all(u.throttle == 0 for u, _ in loop.since(mark))
    clock.offset += 10.5  # the window is over: a deliberate press takes control
    second.wait_for_function("!document.querySelector('#takeover').disabled")
    assert second.inner_text("#takeover") == "Take control"
    second.click("#takeover")  # its throttle is still held: not until it centres
    second.wait_for_selector("#takeover", state="hidden")
    second.wait_for_selector("#banner-takeover", state="visible")
    assert "center the controls to take over" in second.inner_text("#banner-takeover")
    page_ticks(second, 5)  # the new owner sends its held throttle
    second.keyboard.up("ArrowUp")  # centred: it drives from here
    # the server took the centred control, so every control before it too
    second.wait_for_selector("#banner-takeover", state="hidden")
    assert all(u.throttle == 0 for u, _ in loop.since(mark))
    second.keyboard.down("ArrowUp")
    loop.wait_for(lambda u, _: u.throttle > 0.3, loop.mark())
    second.keyboard.up("ArrowUp")
    second.close()


def test_screenshots(browser: Browser, web: WebController, loop: FakeLoop,
                     tmp_path: Path) -> None:
    for name, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        page = open_page(browser, web, viewport)
        page.wait_for_function("window.carPage.frames >= 5", timeout=5000)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"]  # nothing runs off the side
        for control in ("#pad", "#estop", "#record", "#mode", "#limit"):
            box = page.locator(control).bounding_box()
            assert box is not None and box["y"] + box["height"] <= viewport["height"], control
        path = tmp_path / f"web_{name}.png"
        page.screenshot(path=str(path))
        shutil.copy(path, f"/tmp/web_{name}.png")
        page.close()
