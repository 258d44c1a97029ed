"""The page on a real run, end to end: `car record --sim oval --controller web` assembled in
Python (``car.run``), its loop on a thread, the page in headless Chromium. What the page
shows comes from the loop itself: the simulator's laps, speed and resets, a pilot mode
refused for want of a model (and why), and the number of records an erase really erased.
Every wait is generous (a loaded machine can stall Chromium and the simulator for seconds);
nothing here asserts a timing."""

from __future__ import annotations

import dataclasses
import re
import threading
from pathlib import Path

from car.config import Config, WebConfig
from car.controllers.web import WebController
from car.run import Run, RunSpec
from tests.browser import require_browser

require_browser()

from playwright.sync_api import Browser  # noqa: E402

TOKEN = "drive-page-token-0123456789"
WAIT_MS = 10000


def test_the_page_shows_what_the_loop_did(browser: Browser, tmp_path: Path) -> None:
    base = Config()  # erase more than will have been recorded: all there are
    config = dataclasses.replace(
        base, web=WebConfig(host="127.0.0.1", port=0, token=TOKEN),
        record=dataclasses.replace(base.record, erase_count=5000))
    spec = RunSpec(sim="oval", controller="web", mode="user", record=str(tmp_path / "tub"),
                   rate_hz=20)
    stop = threading.Event()
    with Run(spec, config, report=lambda line: None) as run:
        web = run.input.controller
        assert isinstance(web, WebController)
        thread = threading.Thread(target=lambda: run.drive(stop.is_set),
                                  name="drive", daemon=True)
        thread.start()
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.goto(web.url)
            page.wait_for_function("window.carPage.statuses > 0 && window.carPage.owner",
                                   timeout=WAIT_MS)
            status = page.locator("#status")
            # the simulator's fields, from its world and the runner
            page.wait_for_function("document.querySelector('#status').innerText"
                                   ".includes('m/s')", timeout=WAIT_MS)
            text = status.inner_text().upper()
            assert "LAPS\n0" in text and "RESETS\n0" in text
            assert "LAST LAP" not in text  # no lap finished yet
            # no model in this run: a pilot mode is refused, and the page says why
            page.select_option("#mode", "local")
            page.wait_for_selector("#mode-note", state="visible", timeout=WAIT_MS)
            assert page.inner_text("#mode-note") == \
                "mode local needs a model and this run has none: staying in user"
            page.wait_for_function("document.querySelector('#mode').value === 'user'",
                                   timeout=WAIT_MS)
            assert run.arbiter.mode.value == "user" and run.loop.mode_refusals == 1
            # an erase: the page says what the recorder really erased
            page.wait_for_function("/RECORDS\\n[1-9]/i.test(document.querySelector("
                                   "'#status').innerText)", timeout=WAIT_MS)
            page.click("#erase")
            page.click("#erase")  # two taps
            page.wait_for_function("window.carPage.eraseText !== ''", timeout=WAIT_MS)
            said = page.evaluate("window.carPage.eraseText")
            match = re.match(r"erased (\d+) records? \(all there were\)", said)
            assert match, said
            assert run.recorder is not None
            erased = int(match.group(1))
            assert 0 < erased == run.recorder.erased  # the one erase: what it deleted
            page.close()
        finally:
            stop.set()
            thread.join(timeout=30)
    assert not thread.is_alive()
    assert run.summary is not None and run.summary["record"]["erased"] == erased
