"""The whole manual-driving path, as a person does it: `car record --sim` prints a URL, a real
browser (Debian's headless Chromium through Playwright) opens it, drives the simulated car
with the keyboard and the joystick, toggles recording, and the tub holds what it did."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from car.tub.reader import Tub
from tests.browser import ARGS, CHROMIUM, require_browser
from training.records import load_records

require_browser()

from playwright.sync_api import sync_playwright  # noqa: E402


def start_record(tub: Path, cwd: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "car.cli", "record", "--sim", "oval", "--out", str(tub),
         "--set", "web.port=0", "--set", "web.host=127.0.0.1", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
        env={**os.environ, "CAR_CONFIG": ""})
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        found = re.search(r"web controller: open (\S+)", line)
        if found:
            return proc, found.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"car record printed no URL: {proc.stderr.read()}")


def test_a_person_drives_and_records_from_the_browser(tmp_path: Path) -> None:
    tub = tmp_path / "tub"
    proc, url = start_record(tub, tmp_path)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.goto(url)
            page.wait_for_function("window.carPage.frames >= 5", timeout=15000)
            page.keyboard.down("ArrowUp")  # drive off, then a left curve
            time.sleep(1.5)
            page.keyboard.down("ArrowLeft")
            time.sleep(0.7)
            page.keyboard.up("ArrowLeft")
            time.sleep(0.5)
            page.click("#record")  # recording off for a while: those ticks are not kept
            time.sleep(0.6)
            page.click("#record")
            time.sleep(0.6)
            page.keyboard.up("ArrowUp")
            box = page.locator("#pad").bounding_box()
            assert box is not None
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(cx, cy)
            page.mouse.down()
            page.mouse.move(cx + box["width"] * 0.4, cy - box["height"] * 0.3, steps=5)
            time.sleep(1.0)  # the joystick: right and forward
            page.screenshot(path=str(tmp_path / "record_phone.png"))
            page.mouse.up()
            page.close()  # the owner leaves: the user's input goes neutral
            time.sleep(0.5)
            browser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    records = list(Tub(tub).records())
    throttles = [r["user/throttle"] for r in records]
    angles = [r["user/angle"] for r in records]
    assert len(records) >= 40 and all(abs(t) > 0.05 for t in throttles)  # auto-record
    assert min(angles) < -0.5 and max(angles) > 0.3  # keyboard left, joystick right
    assert max(throttles) > 0.9 and all(r["user/mode"] == "user" for r in records)
    assert max(r["sim/speed"] for r in records) > 1.0  # the simulated car really drove
    assert len(load_records([tub])) == len(records)  # what `car train` reads
    assert '"stop_reason": "interrupted"' in out
