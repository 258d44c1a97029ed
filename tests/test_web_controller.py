"""The web controller without a browser: aiohttp's client against the real server (port 0).

Each test runs its client side in ``asyncio.run``; the server has its own thread and loop.
"""

from __future__ import annotations

import asyncio
import json
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

TOKEN = "s3cret-token"
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


async def open_ws(session: aiohttp.ClientSession, base: str, token: str = TOKEN
                  ) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(f"{base}/ws?token={token}")
    await next_text(ws, "hello")
    return ws


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
    with WebController(WebConfig(host="0.0.0.0", port=0, token="t")) as web:
        assert web.url == f"http://{lan_address()}:{web.port}/?token=t"


def test_busy_port_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        web = WebController(WebConfig(host="127.0.0.1", port=port))
        with pytest.raises(CarError, match=rf"^port {port} is in use: .*web\.port or --web-port"):
            web.start()
    assert not any(t.name == "web-server" for t in threading.enumerate())


# ---------------------------------------------------------------------------- control


def test_control_message_reaches_poll(web: WebController) -> None:
    assert web.poll(0.0) == UserInput() and web.failsafe  # nobody connected

    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        await ws.send_str(control(0.5, -0.25))
        await settle(web, 1)
        assert web.poll(0.0) == UserInput(0.5, -0.25)
        assert not web.failsafe
        await ws.close()
    run(web, scenario)


def test_out_of_range_values_are_clamped_and_counted(web: WebController) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
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
        await ws.send_str(control(0.5, 0.5))
        await settle(web, 1)
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
        for _ in range(100):
            if not web.owner_connected:
                break
            await asyncio.sleep(0.01)
        assert web.poll(0.0) == UserInput()
    run(web, scenario)
    assert web.stats["malformed"] == 1


def test_failsafe_exactly_at_failsafe_ms(web: WebController, clock: FakeClock) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        await ws.send_str(control(-0.4, 0.3))
        await settle(web, 1)
        clock.t = 1000.249
        assert web.poll(123.0) == UserInput(-0.4, 0.3)  # the loop's now_s is not the clock
        assert not web.failsafe
        clock.t = 1000.25
        assert web.poll(123.0) == UserInput()
        assert web.failsafe
        await ws.send_str(control(-0.4, 0.3))  # a fresh heartbeat ends the failsafe
        await settle(web, 2)
        assert web.poll(0.0) == UserInput(-0.4, 0.3)
        assert not web.failsafe
    run(web, scenario)
    assert web.stats["failsafe_polls"] == 1


# ---------------------------------------------------------------------------- requests


def test_one_shot_requests_are_delivered_once(web: WebController) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        for msg in ({"type": "mode", "mode": "local"}, {"type": "record", "on": True},
                    {"type": "erase"}, {"type": "throttle_limit", "value": 0.4},
                    {"type": "estop"}, {"type": "clear_estop"},
                    {"type": "mode", "mode": "local_angle"}):
            await ws.send_str(json.dumps(msg))
        await settle(web, 7)
    run(web, scenario)
    assert web.poll(0.0) == UserInput(mode=Mode.LOCAL, recording=True, erase_last=42,
                                      throttle_limit=0.4, estop=True)
    assert web.poll(0.0) == UserInput(clear_estop=True, mode=Mode.LOCAL_ANGLE)
    assert web.poll(0.0) == UserInput()


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
        await owner.send_str(control(0.2, 0.1))
        for _ in range(3):
            await viewer.send_str(control(-1, 1))
        await viewer.send_str(json.dumps({"type": "mode", "mode": "local"}))
        await settle(web, 5)
        assert web.poll(0.0) == UserInput(0.2, 0.1)
        await viewer.send_str(json.dumps({"type": "estop"}))  # anyone may stop the car
        await settle(web, 6)
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


def test_owner_leaving_is_neutral_at_once_and_hands_over(web: WebController,
                                                         clock: FakeClock) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        owner = await open_ws(session, base)
        viewer = await open_ws(session, base)
        await owner.send_str(control(0.6, 0.7))
        await settle(web, 1)
        assert web.poll(0.0) == UserInput(0.6, 0.7)
        await owner.close()  # the clock stands still: this is not the failsafe timer
        hello = await next_text(viewer, "hello")
        assert hello["owner"] is True and "you are driving" in hello["message"]
        assert web.poll(0.0) == UserInput()
        assert web.failsafe
        await viewer.send_str(control(-0.1, 0.2))
        await settle(web, 2)
        assert web.poll(0.0) == UserInput(-0.1, 0.2)
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
    run(web, scenario)
    assert web.stats["frames_encoded"] == 1
    assert web.stats["frames_sent"] == 6


def test_close_ends_the_sockets_and_the_thread(clock: FakeClock) -> None:
    web = WebController(WebConfig(host="127.0.0.1", port=0, token=TOKEN), clock=clock)
    web.start()

    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        ws = await open_ws(session, base)
        received = asyncio.ensure_future(ws.receive())  # answers the server's close
        started = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, web.close)
        assert time.monotonic() - started < 0.5
        msg = await asyncio.wait_for(received, 3)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert msg.extra == "the car is stopping"
    run(web, scenario)
    assert not any(t.name == "web-server" for t in threading.enumerate())
    web.close()  # twice is harmless
