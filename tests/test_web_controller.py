"""The web controller without a browser: aiohttp's client against the real server (port 0).

Each test runs its client side in ``asyncio.run``; the server has its own thread and loop.
The controller's clock is a FakeClock that stands still unless a test moves it, so two
control messages sent back to back arrive "at once": a neutral control first gives a new
owner's consent, and the next control arms the input.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest

from car.config import WebConfig
from car.controllers.web import WebController
from car.controllers.web.controller import lan_address
from car.errors import CarError
from car.frames import Frame, Mode, UserInput

TOKEN = "s3cret-token-0123456789"
JPEG_MAGIC = b"\xff\xd8\xff"


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def web(clock: FakeClock) -> Iterator[WebController]:
    controller = WebController(WebConfig(host="127.0.0.1", port=0, token=TOKEN),
                               start_mode=None, erase_count=42, clock=clock)
    controller.start()
    yield controller
    controller.close()


def run(web: WebController, scenario: Callable[[aiohttp.ClientSession, str],
                                                 Awaitable[None]]) -> None:
    """Run ``scenario(session, base_url)`` on a fresh event loop."""
    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.wait_for(scenario(session, f"http://127.0.0.1:{web.port}"), 10)
    asyncio.run(main())


async def open_ws(session: aiohttp.ClientSession, base: str, token: str = TOKEN,
                  client: str = "") -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(f"{base}/ws?token={token}"
                                  + (f"&client={client}" if client else ""))
    await next_text(ws, "hello")
    return ws


async def take_control(web: WebController, ws: aiohttp.ClientWebSocketResponse) -> None:
    """Centre the controls (the new owner's consent); the next control arms the input."""
    before = web.stats["messages"]
    await ws.send_str(control(0, 0))
    await settle(web, before + 1)


async def next_text(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    """The next text message of type ``kind`` (others skipped)."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), 3)
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        if msg.type == aiohttp.WSMsgType.TEXT:
            data = json.loads(msg.data)
            if data["type"] == kind:
                return data


async def texts_until(ws: aiohttp.ClientWebSocketResponse, kind: str) -> list[dict[str, Any]]:
    """Every text message up to and including the next one of type ``kind``."""
    texts: list[dict[str, Any]] = []
    while not texts or texts[-1]["type"] != kind:
        msg = await asyncio.wait_for(ws.receive(), 3)
        if msg.type == aiohttp.WSMsgType.TEXT:
            texts.append(json.loads(msg.data))
    return texts


async def settle(web: WebController, messages: int) -> None:
    """Wait until the server has handled ``messages`` messages in all."""
    for _ in range(300):
        if web.stats["messages"] >= messages:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"server handled {web.stats['messages']} of {messages} messages")


async def gone(web: WebController) -> None:
    """Wait until the server has seen the owner's socket close."""
    for _ in range(300):
        if not web.owner_connected:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the owner is still connected")


async def fresh_status(web: WebController, ws: aiohttp.ClientWebSocketResponse,
                       **status: Any) -> dict[str, Any]:
    """Publish ``status`` and return the page's copy of it (older statuses skipped)."""
    seq = time.monotonic_ns()
    web.publish(None, {**status, "seq": seq})
    while True:
        data = await next_text(ws, "status")
        if data.get("seq") == seq:
            return data


def control(steering: Any, throttle: Any) -> str:
    return json.dumps({"type": "control", "steering": steering, "throttle": throttle})


# ---------------------------------------------------------------------------- token and page


@pytest.mark.parametrize("path", ["/", "/ws", "/static/app.js", "/static/style.css", "/nope"])
@pytest.mark.parametrize("query", ["", "?token=wrong", "?token="])
def test_requests_without_the_token_are_refused(web: WebController, path: str,
                                                query: str) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        async with session.get(base + path + query) as response:
            assert response.status == 403
            assert "wrong or missing token" in await response.text()
            assert "car record" in await response.text()
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(f"{base}/ws{query}")
        assert info.value.status == 403
    run(web, scenario)
    assert web.stats["refused"] == 2
    assert web.stats["connections"] == 0


def test_page_and_assets_with_the_token(web: WebController) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        async with session.get(f"{base}/?token={TOKEN}") as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "no-store"
            page = await response.text()
            assert f"static/app.js?token={TOKEN}" in page
            assert f"static/style.css?token={TOKEN}" in page
        for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
            async with session.get(f"{base}/static/{name}?token={TOKEN}") as response:
                assert response.status == 200
                assert response.content_type == kind
        async with session.get(f"{base}/static/secrets.txt?token={TOKEN}") as response:
            assert response.status == 404
    run(web, scenario)


def test_url_and_token(web: WebController) -> None:
    assert web.url == f"http://127.0.0.1:{web.port}/?token={TOKEN}"
    assert web.port > 0
    a, b = WebController(WebConfig()), WebController(WebConfig())
    assert len(a.token) >= 16 and a.token != b.token  # random per start when not configured
    address = lan_address()
    assert address != "0.0.0.0" and socket.inet_aton(address)


def test_any_address_url_names_the_lan_address() -> None:
    with WebController(WebConfig(host="0.0.0.0", port=0, token=TOKEN)) as web:
        assert web.url == f"http://{lan_address()}:{web.port}/?token={TOKEN}"


def test_busy_port_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        web = WebController(WebConfig(host="127.0.0.1", port=port))
        with pytest.raises(CarError, match=rf"^port {port} is in use: .*--set web\.port=N "
                           r"\(or web\.port in car\.toml"):
            web.start()
    assert not any(t.name == "web-server" for t in threading.enumerate())


# ---------------------------------------------------------------------------- control


def test_control_message_reaches_poll(web: WebController) -> None:
    assert web.poll(0.0) == UserInput() and web.failsafe  # nobody connected

    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        await take_control(web, ws)
        await ws.send_str(control(0.5, -0.25))
        await settle(web, 2)
        assert web.poll(0.0) == UserInput(0.5, -0.25)
        assert not web.failsafe
        await ws.close()
    run(web, scenario)


def test_out_of_range_values_are_clamped_and_counted(web: WebController) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        await take_control(web, ws)
        await ws.send_str(control(1.7, -3))
        error = await next_text(ws, "error")
        assert "steering 1.7 is outside [-1, 1]: clamped to 1" in error["message"]
        assert "throttle -3 is outside [-1, 1]: clamped to -1" in error["message"]
        assert web.poll(0.0) == UserInput(1.0, -1.0)
        await ws.send_str(json.dumps({"type": "throttle_limit", "value": 1.5}))
        await next_text(ws, "error")
        assert web.poll(0.0).throttle_limit == 1.0
    run(web, scenario)
    assert web.stats["clamped"] == 2


BAD = [
    ("steer left", "not JSON"),
    ("[0.1, 0.2]", "expected a JSON object"),
    ('{"steering": 0.1}', "unknown message type null"),
    ('{"type": "fly"}', 'unknown message type "fly"'),
    ('{"type": "control", "steering": 0.2}', "control message without 'throttle'"),
    ('{"type": "control", "steering": "0.2", "throttle": 0}', "'steering' must be a number"),
    ('{"type": "control", "steering": true, "throttle": 0}', "'steering' must be a number"),
    ('{"type": "control", "steering": NaN, "throttle": 0}', "'steering' must be a finite"),
    ('{"type": "control", "steering": 0, "throttle": -Infinity}', "must be a finite number"),
    ('{"type": "control", "steering": 0, "throttle": 1e999}', "must be a finite number"),
    ('{"type": "mode", "mode": "turbo"}', "'mode' must be one of user, local_angle, local"),
    ('{"type": "record", "on": "yes"}', "'on' must be true or false"),
    ('{"type": "throttle_limit", "value": null}', "'value' must be a number"),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_malformed_messages_get_an_error_and_neutral(web: WebController, text: str,
                                                     expected: str) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        await take_control(web, ws)
        await ws.send_str(control(0.5, 0.5))
        await settle(web, 2)
        assert web.poll(0.0) == UserInput(0.5, 0.5)
        await ws.send_str(text)
        error = await next_text(ws, "error")
        assert expected in error["message"]
        assert web.poll(0.0) == UserInput()  # neutral, and no request got through
        assert web.failsafe
    run(web, scenario)
    assert web.stats["malformed"] == 1


def test_binary_and_oversized_messages_are_rejected(web: WebController) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        await ws.send_bytes(b"\x00\x01")
        assert "binary messages are not accepted" in (await next_text(ws, "error"))["message"]
        await ws.send_str(control(0.5, 0.5) + " " * 10_000)
        closed = await asyncio.wait_for(ws.receive(), 3)
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await gone(web)
        assert web.poll(0.0) == UserInput()
    run(web, scenario)
    assert web.stats["malformed"] == 1


def test_failsafe_exactly_at_failsafe_ms(web: WebController, clock: FakeClock) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        await take_control(web, ws)
        await ws.send_str(control(-0.4, 0.3))
        await settle(web, 2)
        clock.t = 1000.249
        assert web.poll(123.0) == UserInput(-0.4, 0.3)  # the loop's now_s is not the clock
        assert not web.failsafe
        clock.t = 1000.25
        assert web.poll(123.0) == UserInput()
        assert web.failsafe
        await ws.send_str(control(-0.4, 0.3))  # one heartbeat does not end the failsafe...
        await settle(web, 3)
        assert web.poll(0.0) == UserInput() and web.failsafe
        clock.t += 0.249
        await ws.send_str(control(-0.4, 0.3))  # ... two within failsafe_ms do
        await settle(web, 4)
        assert web.poll(0.0) == UserInput(-0.4, 0.3)
        assert not web.failsafe
    run(web, scenario)
    assert web.stats["failsafe_polls"] == 2


# ---------------------------------------------------------------------------- requests


def test_one_shot_requests_are_delivered_once(web: WebController) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        await take_control(web, ws)
        for msg in ({"type": "mode", "mode": "local"}, {"type": "record", "on": True},
                    {"type": "erase"}, {"type": "throttle_limit", "value": 0.4},
                    {"type": "estop"}, {"type": "clear_estop"},
                    {"type": "mode", "mode": "local_angle"}):
            await ws.send_str(json.dumps(msg))
        await settle(web, 8)
        # all in one poll: the latest mode wins; an e-stop wins over a clear in the same poll
        assert web.poll(0.0) == UserInput(mode=Mode.LOCAL_ANGLE, recording=True,
                                          erase_last=42, throttle_limit=0.4, estop=True)
        assert web.poll(0.0) == UserInput()
        await ws.send_str(json.dumps({"type": "clear_estop"}))
        await settle(web, 9)
        assert web.poll(0.0) == UserInput(clear_estop=True)
        assert web.poll(0.0) == UserInput()
    run(web, scenario)


def test_start_mode_is_requested_on_the_first_poll_only() -> None:
    web = WebController(WebConfig(), start_mode=Mode.LOCAL_ANGLE)
    assert web.poll(0.0).mode is Mode.LOCAL_ANGLE
    assert web.poll(0.0).mode is None


# ---------------------------------------------------------------------------- ownership


def test_second_browser_is_view_only(web: WebController) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        owner = await open_ws(session, base)
        viewer = await session.ws_connect(f"{base}/ws?token={TOKEN}")
        hello = await next_text(viewer, "hello")
        assert hello["owner"] is False
        assert hello["message"] == "view only: another browser is driving"
        await take_control(web, owner)
        await owner.send_str(control(0.2, 0.1))
        for _ in range(3):
            await viewer.send_str(control(-1, 1))
        await viewer.send_str(json.dumps({"type": "mode", "mode": "local"}))
        await settle(web, 6)
        assert web.poll(0.0) == UserInput(0.2, 0.1)
        await viewer.send_str(json.dumps({"type": "estop"}))  # anyone may stop the car
        await settle(web, 7)
        assert web.poll(0.0).estop
        web.publish(None, {})
        texts = await texts_until(viewer, "status")
        assert [t["message"] for t in texts if t["type"] == "error"] == \
            ["view only: another browser is driving"]  # said once, however often refused
        status = texts[-1]
        assert status["owner"] is False and status["viewers"] == 1
        assert status["rejected"]["view_only"] == 4
    run(web, scenario)
    assert web.stats["viewers_refused_control"] == 4


def test_owner_leaving_is_neutral_at_once_and_nobody_else_drives(web: WebController,
                                                               clock: FakeClock) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        owner = await open_ws(session, base, client="tab-one-aaaa")
        viewer = await open_ws(session, base, client="tab-two-bbbb")
        await take_control(web, owner)
        await owner.send_str(control(0.6, 0.7))
        await settle(web, 2)
        assert web.poll(0.0) == UserInput(0.6, 0.7)
        await owner.close()  # the clock stands still: this is not the failsafe timer
        hello = await next_text(viewer, "hello")
        assert hello["owner"] is False and hello["message"].startswith(
            "the driving browser left: nobody drives")
        assert web.poll(0.0) == UserInput() and web.failsafe
        for _ in range(2):  # its controls were auto-centred: they still do not count
            await viewer.send_str(control(0, 0))
        error = await next_text(viewer, "error")
        assert error["message"] == "nobody drives: press Take control to drive"
        await viewer.send_str(json.dumps({"type": "take_over"}))
        error = await next_text(viewer, "error")
        assert error["message"] == \
            "take over refused: the driving browser may come back for 10 s more"
        status = await fresh_status(web, viewer)
        assert status["control_free"] is True and status["reclaim_s"] == 10.0
        clock.t += 10.1  # the window is over: Take control is a deliberate press
        await viewer.send_str(json.dumps({"type": "take_over"}))
        hello = await next_text(viewer, "hello")
        assert hello["owner"] is True and hello["takeover_pending"] is True
        await take_control(web, viewer)
        await viewer.send_str(control(-0.1, 0.2))
        await settle(web, 8)
        assert web.poll(0.0) == UserInput(-0.1, 0.2)
    run(web, scenario)
    assert web.stats["takeovers"] == 1 and web.stats["takeovers_refused"] == 1
    assert web.stats["viewers_refused_control"] == 2


def test_nobody_takes_control_from_a_connected_owner(web: WebController) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        owner = await open_ws(session, base)
        viewer = await open_ws(session, base)
        await take_control(web, owner)
        await viewer.send_str(json.dumps({"type": "take_over"}))
        error = await next_text(viewer, "error")
        assert error["message"] == "take over refused: view only: another browser is driving"
        assert (await fresh_status(web, owner))["owner"] is True
    run(web, scenario)


# ---------------------------------------------------------------------------- video and status


def red_frame(seq: int) -> Frame:
    image = np.zeros((120, 160, 3), np.uint8)
    image[..., 0] = 220  # RGB red
    return Frame(image, 0.0, seq)


def test_publish_sends_a_jpeg_and_the_status(web: WebController) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        web.publish(red_frame(1), {"hz": 20.0, "mode": Mode.USER, "records": None,
                                   "battery_v": np.float32(7.4), "latency_ms": float("nan")})
        status = await next_text(ws, "status")
        assert status["hz"] == 20.0 and status["mode"] == "user" and status["records"] is None
        assert status["battery_v"] == pytest.approx(7.4, abs=1e-3)
        assert status["latency_ms"] is None  # NaN is not JSON
        assert status["owner"] is True and status["failsafe"] is True
        assert status["viewers"] == 0
        assert set(status["rejected"]) == {"malformed", "clamped", "refused", "view_only"}
        msg = await asyncio.wait_for(ws.receive(), 3)
        assert msg.type == aiohttp.WSMsgType.BINARY and msg.data.startswith(JPEG_MAGIC)
        image = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (120, 160, 3)
        b, g, r = image.reshape(-1, 3).mean(axis=0)
        assert r > 180 and g < 40 and b < 40  # RGB was turned into OpenCV's BGR
    run(web, scenario)


def test_each_frame_is_encoded_once_for_every_browser(web: WebController) -> None:
    web.publish(red_frame(0), {})  # nobody connected: nothing is encoded
    assert web.stats["frames_encoded"] == 0

    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        clients = [await open_ws(session, base) for _ in range(3)]
        frame = red_frame(1)
        for _ in range(2):  # the same frame twice (a repeated camera frame)
            web.publish(frame, {"hz": 1.0})
            for ws in clients:
                msg = await asyncio.wait_for(ws.receive(), 3)
                while msg.type != aiohttp.WSMsgType.BINARY:
                    msg = await asyncio.wait_for(ws.receive(), 3)
                assert msg.data.startswith(JPEG_MAGIC)
        for _ in range(300):  # the server counts a frame once its send has returned
            if web.stats["frames_sent"] == 6:
                break
            await asyncio.sleep(0.01)
    run(web, scenario)
    assert web.stats["frames_encoded"] == 1
    assert web.stats["frames_sent"] == 6


def test_close_ends_the_sockets_and_the_thread(clock: FakeClock,
                                               caplog: pytest.LogCaptureFixture) -> None:
    web = WebController(WebConfig(host="127.0.0.1", port=0, token=TOKEN), clock=clock)
    web.start()

    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        received = asyncio.ensure_future(ws.receive())  # answers the server's close
        with caplog.at_level(logging.WARNING, "car.controllers.web"):
            await asyncio.get_running_loop().run_in_executor(None, web.close)
        # close() returned through the clean shutdown (it closed the socket itself), not by
        # giving up on a hung one
        assert "did not stop cleanly" not in caplog.text
        msg = await asyncio.wait_for(received, 3)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert msg.extra == "the car is stopping"
    run(web, scenario)
    assert not any(t.name == "web-server" for t in threading.enumerate())
    web.close()  # twice is harmless


# ---------------------------------------------------------------------------- arming


def test_controls_a_second_apart_never_arm(web: WebController, clock: FakeClock) -> None:
    """A background tab (timers at ~1 Hz) must not drive in 250 ms pulses."""
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        await take_control(web, ws)  # consent, but one control does not arm
        assert web.poll(0.0) == UserInput() and web.failsafe
        sent = 1
        for _ in range(5):  # one control a second: each one alone, never two in time
            clock.t += 1.0
            await ws.send_str(control(0, 0.8))
            sent += 1
            await settle(web, sent)
            for _ in range(3):
                assert web.poll(0.0) == UserInput() and web.failsafe
                clock.t += 0.05
        clock.t += 1.0
        await ws.send_str(control(0, 0.8))
        clock.t += 0.2  # the second within failsafe_ms: armed
        await settle(web, sent + 1)
        await ws.send_str(control(0, 0.8))
        await settle(web, sent + 2)
        assert web.poll(0.0) == UserInput(0, 0.8) and not web.failsafe
        clock.t += 0.3  # a gap: the failsafe fires, and one late control does not re-arm
        assert web.poll(0.0) == UserInput() and web.failsafe
        await ws.send_str(control(0, 0.8))
        await settle(web, sent + 3)
        assert web.poll(0.0) == UserInput() and web.failsafe
    run(web, scenario)


def test_a_gap_disarms_even_when_no_poll_saw_it(web: WebController,
                                                clock: FakeClock) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        await take_control(web, ws)
        await ws.send_str(control(0.3, 0.3))
        await settle(web, 2)
        clock.t += 0.5  # no poll in between
        await ws.send_str(control(0.3, 0.3))
        await settle(web, 3)
        assert web.poll(0.0) == UserInput() and web.failsafe
    run(web, scenario)


# ---------------------------------------------------------------------------- losing the watcher


def test_failsafe_in_a_pilot_mode_switches_to_user_once(
        web: WebController, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        await take_control(web, ws)
        await ws.send_str(control(0, 0))
        await settle(web, 2)
        web.publish(None, {"mode": "local"})  # what the loop drives in
        assert web.poll(0.0) == UserInput()
        assert not web.failsafe
        clock.t += 0.25
        with caplog.at_level(logging.WARNING, "car.controllers.web"):
            assert web.poll(0.0) == UserInput(mode=Mode.USER)  # with the failsafe's first poll
        assert "no control for 250 ms while the car was in local mode: switching to user " \
            "mode" in caplog.text
        web.publish(None, {"mode": "local"})  # the status of a tick before the switch
        clock.t += 0.1
        assert web.poll(0.0) == UserInput()  # once
        status = await fresh_status(web, ws, mode="user")
        assert status["failsafe"] is True and status["failsafe_switched"] is True
        assert web.stats["mode_switches"] == 1
        await ws.send_str(control(0, 0))  # back: live again, no further switch
        await ws.send_str(control(0, 0))
        await settle(web, 4)
        assert web.poll(0.0) == UserInput() and not web.failsafe
        status = await fresh_status(web, ws, mode="user")
        assert status["failsafe"] is False and status["failsafe_switched"] is False
        clock.t += 0.25  # a failsafe in user mode: nothing to switch
        assert web.poll(0.0) == UserInput() and web.failsafe
    run(web, scenario)
    assert web.stats["mode_switches"] == 1


def test_owner_leaving_in_a_pilot_mode_switches_to_user(
        web: WebController, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        await take_control(web, ws)
        await ws.send_str(json.dumps({"type": "mode", "mode": "local_angle"}))
        await settle(web, 2)
        assert web.poll(0.0).mode is Mode.LOCAL_ANGLE  # delivered: the loop drives in it
        with caplog.at_level(logging.WARNING, "car.controllers.web"):
            await ws.close()  # the clock stands still: the owner left, no failsafe timer
            await gone(web)
        assert "the owner's browser left while the car was in local_angle mode" in caplog.text
    run(web, scenario)
    assert web.poll(0.0) == UserInput(mode=Mode.USER)
    assert web.poll(0.0) == UserInput()
    assert web.stats["mode_switches"] == 1


def test_a_pending_pilot_mode_counts_when_the_owner_leaves(web: WebController) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        await take_control(web, ws)
        await ws.send_str(json.dumps({"type": "mode", "mode": "local"}))
        await settle(web, 2)
        await ws.close()  # before the loop polled the request
        await gone(web)
    run(web, scenario)
    assert web.poll(0.0) == UserInput(mode=Mode.USER)  # the pilot never drives unwatched


def test_an_unsupervised_pilot_is_left_alone(clock: FakeClock) -> None:
    """Nobody ever connected (car drive --mode local with the page unused): no switch."""
    web = WebController(WebConfig(), start_mode=Mode.LOCAL, clock=clock)
    assert web.poll(0.0) == UserInput(mode=Mode.LOCAL)
    web.publish(None, {"mode": "local"})
    clock.t += 1.0
    assert web.poll(0.0) == UserInput() and web.failsafe
    assert web.stats["mode_switches"] == 0


# ---------------------------------------------------------------------------- floods


def test_estop_is_not_behind_queued_requests(web: WebController) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        await take_control(web, ws)
        for i in range(30):
            await ws.send_str(json.dumps({"type": "mode",
                                          "mode": ("local", "user")[i % 2]}))
        await ws.send_str(json.dumps({"type": "clear_estop"}))
        await ws.send_str(json.dumps({"type": "estop"}))
        await settle(web, 33)
        assert web.poll(0.0) == UserInput(mode=Mode.USER, estop=True)  # at once; no clear
        assert web.poll(0.0) == UserInput()
    run(web, scenario)


def test_requests_are_coalesced_and_erase_is_limited(web: WebController,
                                                     clock: FakeClock) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        await take_control(web, ws)
        for i in range(150):  # 150 of each kind in one tick (under the rate limit)
            await ws.send_str(json.dumps({"type": "throttle_limit", "value": i / 200}))
        await settle(web, 151)
        state = web._state
        assert len(state._latest) == 1 and not state._flags  # bounded: one slot per kind
        assert web.poll(0.0) == UserInput(throttle_limit=149 / 200)
        await ws.send_str(json.dumps({"type": "erase"}))
        await ws.send_str(json.dumps({"type": "erase"}))
        error = await next_text(ws, "error")
        assert error["message"] == "erase ignored: one per 3 s"
        assert web.poll(0.0) == UserInput(erase_last=42)
        clock.t += 2.9
        await ws.send_str(json.dumps({"type": "erase"}))
        await settle(web, 154)
        assert web.poll(0.0).erase_last == 0
        clock.t += 0.1
        await ws.send_str(json.dumps({"type": "erase"}))
        await settle(web, 155)
        assert web.poll(0.0).erase_last == 42
    run(web, scenario)
    assert web.stats["erase_ignored"] == 2


def test_a_flooding_socket_is_closed(web: WebController,
                                     caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        viewer = await open_ws(session, base)
        await take_control(web, ws)
        await ws.send_str(control(0.4, 0.4))
        await settle(web, 2)
        assert web.poll(0.0) == UserInput(0.4, 0.4)
        with caplog.at_level(logging.WARNING, "car.controllers.web"):
            for _ in range(250):
                await ws.send_str(control(0.4, 0.4))
            while True:
                msg = await asyncio.wait_for(ws.receive(), 3)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    break
            assert msg.data == 1008 and "too many messages" in msg.extra
            hello = await next_text(viewer, "hello")  # the owner's socket closed
            assert hello["owner"] is False  # and nobody drives
        assert "sent more than 200 messages within 1 s: closing its socket (it was " \
            "driving: neutral now)" in caplog.text
        assert web.poll(0.0) == UserInput() and web.failsafe
    run(web, scenario)
    assert web.stats["rate_limited"] == 1


# ---------------------------------------------------------------------------- consent and reclaim


def test_a_new_owner_must_centre_its_controls(web: WebController) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        first = await open_ws(session, base)
        second = await open_ws(session, base)
        await first.close()  # (no client id: no page to wait for)
        assert (await next_text(second, "hello"))["owner"] is False
        await second.send_str(json.dumps({"type": "take_over"}))
        hello = await next_text(second, "hello")
        assert hello["owner"] is True and hello["takeover_pending"] is True
        for _ in range(3):  # the stick was pushed when it inherited control: ignored
            await second.send_str(control(0, 0.9))
        await second.send_str(json.dumps({"type": "mode", "mode": "local"}))
        error = await next_text(second, "error")
        assert error["message"] == "mode refused: you are driving: center the controls " \
            "to take over"
        await second.send_str(json.dumps({"type": "estop"}))  # a stop is always taken
        await settle(web, 6)
        assert web.poll(0.0) == UserInput(estop=True) and web.failsafe
        assert (await fresh_status(web, second))["takeover_pending"] is True
        await second.send_str(control(0.04, -0.04))  # centred: consent
        await second.send_str(control(0, 0.9))
        await settle(web, 8)
        assert web.poll(0.0) == UserInput(0, 0.9)
        assert (await fresh_status(web, second))["takeover_pending"] is False
    run(web, scenario)
    assert web.stats["not_centred"] == 1


def test_the_owner_reconnecting_in_time_gets_control_back(web: WebController,
                                                          clock: FakeClock) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        first = await open_ws(session, base, client="tab-one-aaaa")
        second = await open_ws(session, base, client="tab-two-bbbb")
        await take_control(web, first)
        await first.close()  # a Wi-Fi hiccup
        assert (await next_text(second, "hello"))["owner"] is False
        clock.t += 9.9
        await second.send_str(json.dumps({"type": "take_over"}))  # still kept for the first
        await next_text(second, "error")
        again = await session.ws_connect(f"{base}/ws?token={TOKEN}&client=tab-one-aaaa")
        hello = await next_text(again, "hello")
        assert hello["owner"] is True and hello["takeover_pending"] is True
        await second.send_str(control(0, 0))  # a watcher: refused
        await take_control(web, again)
        await again.send_str(control(0.1, 0.2))
        await settle(web, 5)
        assert web.poll(0.0) == UserInput(0.1, 0.2)
    run(web, scenario)
    assert web.stats["reclaimed"] == 1 and web.stats["viewers_refused_control"] == 1


@pytest.mark.parametrize("case", ["too late", "other id"])
def test_no_reclaim_too_late_or_by_another_page(web: WebController, clock: FakeClock,
                                                case: str) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        first = await open_ws(session, base, client="tab-one-aaaa")
        await first.close()
        await gone(web)
        clock.t += 10.1 if case == "too late" else 5.0
        again = await session.ws_connect(f"{base}/ws?token={TOKEN}&client=" + (
            "tab-three-cc" if case == "other id" else "tab-one-aaaa"))
        hello = await next_text(again, "hello")
        assert hello["owner"] is False  # not even the old page drives without pressing
        assert hello["message"] == "nobody drives: press Take control to drive"
        await again.send_str(json.dumps({"type": "take_over"}))
        if case == "too late":
            assert (await next_text(again, "hello"))["owner"] is True
        else:
            assert (await next_text(again, "error"))["message"].startswith(
                "take over refused: the driving browser may come back for 5 s")
    run(web, scenario)
    assert web.stats["reclaimed"] == 0


def test_the_same_page_on_a_new_socket_inherits_first(web: WebController) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        first = await open_ws(session, base, client="tab-one-aaaa")
        other = await open_ws(session, base, client="tab-two-bbbb")
        again = await open_ws(session, base, client="tab-one-aaaa")  # before the old one died
        await first.close()
        assert (await next_text(again, "hello"))["owner"] is True
        assert (await fresh_status(web, other))["owner"] is False
    run(web, scenario)


# ---------------------------------------------------------------------------- token


@pytest.mark.parametrize("token", ["short-token", "x" * 15])
def test_a_short_token_is_refused(token: str) -> None:
    with pytest.raises(CarError, match=rf"^web\.token is {len(token)} characters: anyone on "
                       r"the network could guess it; set 16 or more random characters"):
        WebController(WebConfig(host="127.0.0.1", port=0, token=token))
    with WebController(WebConfig(host="127.0.0.1", port=0, token="x" * 16)):
        pass


def test_too_many_browsers_are_refused(web: WebController,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("car.controllers.web.server.MAX_BROWSERS", 2)

    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        first = await open_ws(session, base)
        second = await open_ws(session, base)
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(f"{base}/ws?token={TOKEN}")
        assert info.value.status == 503
        await first.close()
        await next_text(second, "hello")  # it drives now: the first one is gone
        await open_ws(session, base)  # a free place again
    run(web, scenario)
    assert web.stats["too_many"] == 1
