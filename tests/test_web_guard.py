"""The page server against a hostile network (loopback only, bounded): idle connections
that never send their headers, wrong tokens, another site's page, a ping flood and reset.

The attacker connects from 127.0.0.2 (any 127.x address is this machine on Linux), the
driver from 127.0.0.1, so the per-address limits can be seen to tell them apart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import time
from collections.abc import Iterator

import aiohttp
import pytest

from car.config import WebConfig
from car.controllers.web import WebController
from car.frames import UserInput
from tests.test_web_controller import TOKEN, FakeClock, control, next_text, open_ws, run, settle

ATTACKER = "127.0.0.2"


@pytest.fixture
def web() -> Iterator[WebController]:
    controller = WebController(WebConfig(host="127.0.0.1", port=0, token=TOKEN),
                               start_mode=None, clock=FakeClock())
    controller.start()
    yield controller
    controller.close()


def idle_sockets(port: int, count: int, partial: bytes = b"") -> list[socket.socket]:
    """``count`` connections from ATTACKER that send ``partial`` and then nothing."""
    out = []
    for _ in range(count):
        s = socket.socket()
        s.bind((ATTACKER, 0))
        s.connect(("127.0.0.1", port))
        if partial:
            s.sendall(partial)
        out.append(s)
    return out


def wait_for(condition, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_idle_connections_never_lock_the_driver_out(web: WebController,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("car.controllers.web.guard.HEADER_TIMEOUT_S", 1.0)
    server = web._server
    attack = idle_sockets(web.port, 150, b"GET / HTTP/1.1\r\nHost: x\r\n")  # never ends
    attack += idle_sockets(web.port, 150)  # says nothing at all
    try:
        closed = ("pending_closed", "header_timeouts")  # which, depends on the machine's pace
        wait_for(lambda: sum(server.stats[k] for k in closed) >= 284)
        assert server.connections.pending <= 16  # one address's share

        async def scenario(session: aiohttp.ClientSession, base: str) -> None:
            page = await session.get(f"{base}/?token={TOKEN}")
            assert page.status == 200
            ws = await open_ws(session, base)
            await ws.send_str(control(0, 0))
            await ws.send_str(control(0.2, 0.3))
            await settle(web, 2)
            assert web.poll(0.0) == UserInput(0.2, 0.3)
        run(web, scenario)
        wait_for(lambda: server.connections.pending == 0)  # the rest timed out
        assert server.stats["header_timeouts"] >= 1
    finally:
        for s in attack:
            s.close()


def test_connections_stay_within_the_budget(web: WebController) -> None:
    server = web._server
    server.connections.max_open = 40
    attack = []
    for n in range(4):  # four "hosts", each under its own share of pending connections
        for _ in range(15):
            s = socket.socket()
            s.bind((f"127.0.0.{n + 3}", 0))
            s.connect(("127.0.0.1", web.port))
            attack.append(s)
    try:
        wait_for(lambda: server.stats["connections"] == 0 and
                 server.stats["pending_closed"] >= 20)
        assert server.connections.open <= 40

        async def scenario(session: aiohttp.ClientSession, base: str) -> None:
            await open_ws(session, base)
        run(web, scenario)
    finally:
        for s in attack:
            s.close()


def test_wrong_tokens_are_limited_per_address(web: WebController) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        attacker = aiohttp.TCPConnector(local_addr=(ATTACKER, 0))
        async with aiohttp.ClientSession(connector=attacker) as other:
            for n in range(10):
                assert (await other.get(f"{base}/?token=guess{n}")).status == 403
            refused = await other.get(f"{base}/?token={TOKEN}")  # even the right one now
            assert refused.status == 429 and int(refused.headers["Retry-After"]) > 50
            assert "too many wrong tokens from this address" in await refused.text()
        assert (await session.get(f"{base}/?token={TOKEN}")).status == 200  # the driver
        await open_ws(session, base)
    run(web, scenario)
    assert web.stats["refused"] == 10 and web.stats["token_limited"] == 1


@pytest.mark.parametrize(("origin", "allowed"), [
    ("http://evil.example", False), ("http://127.0.0.1:1", False),
    ("https://127.0.0.1:{port}", True), ("null", False), (None, True),
    ("http://127.0.0.1:{port}", True)])
def test_a_socket_from_another_sites_page_is_refused(web: WebController, origin: str | None,
                                                     allowed: bool) -> None:
    async def scenario(session: aiohttp.ClientSession, base: str) -> None:
        headers = {"Origin": origin.format(port=web.port)} if origin else {}
        url = f"{base}/ws?token={TOKEN}"
        if allowed:
            ws = await session.ws_connect(url, headers=headers)
            assert (await next_text(ws, "hello"))["owner"] is True
            return
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(url, headers=headers)
        assert info.value.status == 403
    run(web, scenario)
    assert web.stats["cross_origin"] == (0 if allowed else 1)
    assert web.owner_connected is False or allowed


def test_a_ping_flood_then_a_reset_prints_no_traceback(
        web: WebController, caplog: pytest.LogCaptureFixture) -> None:
    """A raw WebSocket client floods pings, then resets the connection (SO_LINGER 0)."""
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", web.port))
            s.sendall((f"GET /ws?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
                       f"{key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            assert b"101" in s.recv(4096).split(b"\r\n")[0]
            ping = bytes([0x89, 0x80 | 4]) + b"mask" + bytes(4)  # masked, 4 bytes
            s.sendall(ping * 5000)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # RST with pongs still going out
        wait_for(lambda: not web._server.clients)
        time.sleep(0.3)
    tracebacks = [r for r in caplog.records if r.exc_info or r.stack_info]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    assert "Traceback" not in caplog.text


def test_the_server_reports_its_loop_errors_in_one_line(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    from car.controllers.web.guard import LoopErrors

    stats: dict[str, int] = {}
    errors = LoopErrors(stats)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING, "car.controllers.web"):
            for _ in range(1000):
                errors(loop, {"message": "socket.accept() out of system resource",
                              "exception": OSError(24, "Too many open files")})
    finally:
        loop.close()
    lines = [r for r in caplog.records if "socket.accept()" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert lines[0].getMessage() == ("web: socket.accept() out of system resource: OSError: "
                                     "[Errno 24] Too many open files")
    assert stats["loop_errors"] == 1000
    assert json.dumps(stats)
