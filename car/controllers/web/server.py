"""The page's server: aiohttp (HTTP and WebSocket in one asyncio library) on its own thread.

Every request must carry the token (``?token=...``); without it: 403 and a one-line page.
Connections, wrong tokens and cross-site sockets are ``guard.py``'s; who drives is
``owners.py``'s (the first browser, the one that left coming back within 10 s, or a watcher
that presses Take control after that). Anyone may send ``estop``.

Floods: a socket that sends more than ``RATE_LIMIT`` messages within ``RATE_WINDOW_S`` is
closed (an owner closing reads neutral at once); requests are coalesced in
``ControlState``, every per-client buffer is bounded and at most ``MAX_BROWSERS`` sockets
are open at once, so memory stays bounded whatever a client sends. At most one erase per
3 s: repeats get "erase ignored: one per 3 s".

Video goes to every browser through a per-client "newest only" slot, so a slow phone drops
frames instead of falling behind. The loop's thread only stores the newest frame and status
(``publish``): nothing the network does can block it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import html
import json
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import WSCloseCode, WSMsgType, web

from car.config import WebConfig
from car.controllers.web.client import RATE_LIMIT, RATE_WINDOW_S, Client
from car.controllers.web.feed import JpegEncoder, status_message
from car.controllers.web.guard import (
    ACCEPT_BACKLOG,
    KEEPALIVE_S,
    ConnectionGuard,
    LoopErrors,
    TokenLimiter,
    connection_budget,
    origin_allowed,
)
from car.controllers.web.messages import BadMessage, parse_message
from car.controllers.web.owners import FREE, OWNER_LEFT, TAKE_OVER, VIEW_ONLY, Owners
from car.controllers.web.state import ControlState
from car.errors import CarError
from car.frames import Frame

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
REFUSED = "wrong or missing token: open the URL that `car record` printed\n"
LIMITED = "too many wrong tokens from this address: wait {s} s\n"
CROSS_ORIGIN = ("cross-origin WebSocket refused: open the page from the address `car` "
                "printed\n")
ERASE_IGNORED = "erase ignored: one per 3 s"
MAX_BROWSERS = 16  # connected at once; more are refused (503)
MAX_MESSAGE_BYTES = 4096
CLOSE_TIMEOUT_S = 1.0  # how long a closing socket may take to answer
HEARTBEAT_S = 2.0  # WebSocket ping: a vanished phone is dropped (and loses control) after ~2x
HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
           "X-Content-Type-Options": "nosniff"}


class WebServer:
    """Serves the page and the WebSocket; feeds ``state`` from the owner's messages."""

    def __init__(self, config: WebConfig, token: str, state: ControlState, erase_count: int):
        self.config = config
        self.token = token
        self.state = state
        self.erase_count = erase_count
        self.stats = {"connections": 0, "messages": 0, "malformed": 0, "clamped": 0,
                      "refused": 0, "token_limited": 0, "cross_origin": 0,
                      "viewers_refused_control": 0, "frames_encoded": 0,
                      "frames_sent": 0, "frames_dropped": 0, "encode_errors": 0,
                      "rate_limited": 0, "not_centred": 0, "too_many": 0, "loop_errors": 0}
        self.owners = Owners(state, self.stats)
        self.limiter = TokenLimiter()
        self.connections = ConnectionGuard(self.stats)
        self.loop_errors = LoopErrors(self.stats)
        self._assets = {name: (STATIC / name).read_bytes() for name in ASSETS}
        query = html.escape(quote(token, safe=""))
        self._index = (STATIC / "index.html").read_text(encoding="utf-8") \
            .replace("__TOKEN__", query).encode("utf-8")
        self._lock = threading.Lock()
        self._latest: tuple[Frame | None, dict[str, Any]] | None = None
        self._pending = False
        self._jpeg = JpegEncoder(config.jpeg_quality, self.stats)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._numbers = 0
        self._closing = False

    @property
    def clients(self) -> list[Client]:
        return self.owners.clients

    @property
    def owner(self) -> Client | None:
        return self.owners.owner

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> int:
        """Listen (on its own thread); returns the port. Raises CarError if it cannot."""
        self.connections.max_open = connection_budget()
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self.loop_errors)
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="web-server", daemon=True)
        self._thread.start()
        try:
            return asyncio.run_coroutine_threadsafe(self._listen(), loop).result(timeout=15)
        except OSError as exc:
            self._stop_thread()
            raise CarError(self._listen_error(exc)) from None

    def _run(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _listen(self) -> int:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._page)
        app.router.add_get("/ws", self._socket)
        app.router.add_get("/static/{name}", self._asset)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               shutdown_timeout=CLOSE_TIMEOUT_S,
                               keepalive_timeout=KEEPALIVE_S)
        await runner.setup()
        assert runner.server is not None
        self.connections.install(runner.server)
        try:
            await web.TCPSite(runner, self.config.host, self.config.port,
                              backlog=ACCEPT_BACKLOG).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        return int(runner.addresses[0][1])

    def _listen_error(self, exc: OSError) -> str:
        where = f"{self.config.host}:{self.config.port}"
        if exc.errno == errno.EADDRINUSE:
            return (f"port {self.config.port} is in use: another program (or another `car`) "
                    "listens there; stop it, or pick another port with --set web.port=N (or "
                    "web.port in car.toml; 0 picks a free one)")
        if exc.errno == errno.EACCES:
            return f"cannot listen on {where}: permission denied; use a port above 1023"
        return (f"cannot listen on {where}: {exc.strerror or exc}; set web.host "
                "(0.0.0.0 for every network, 127.0.0.1 for this computer only)")

    def close(self) -> None:
        """Close every socket, stop listening and end the thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if self._runner is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=5)
            except Exception as exc:  # a hung socket must not stop the car from exiting
                log.warning("web server did not stop cleanly: %s", exc)
        self._stop_thread()

    async def _shutdown(self) -> None:
        self._closing = True
        await asyncio.gather(*(c.ws.close(code=1001, message=b"the car is stopping")
                               for c in list(self.clients)), return_exceptions=True)
        assert self._runner is not None
        await self._runner.cleanup()
        self._runner = None

    def _stop_thread(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------------ HTTP

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        address, now = str(request.remote), time.monotonic()
        if self.limiter.blocked(address, now):
            self.stats["token_limited"] += 1
            wait_s = self.limiter.retry_after_s(address, now)
            return web.Response(status=429, text=LIMITED.format(s=wait_s),
                                headers={**HEADERS, "Retry-After": str(wait_s)})
        given = request.query.get("token", "").encode("utf-8")
        if not secrets.compare_digest(given, self.token.encode("utf-8")):
            self.stats["refused"] += 1
            self.limiter.failed(address, now)
            if self.stats["refused"] <= 3 or self.stats["refused"] % 100 == 0:
                log.warning("web: refused %s %s from %s: wrong or missing token (%d so far)",
                            request.method, request.path[:80], address,
                            self.stats["refused"])
            return web.Response(status=403, text=REFUSED, headers=HEADERS)
        self.connections.trust(request)
        response = await handler(request)
        if not isinstance(response, web.WebSocketResponse):
            response.headers.update(HEADERS)
        return response

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(body=self._index, content_type="text/html", charset="utf-8")

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound(text=f"no such file: {name}\n")
        return web.Response(body=self._assets[name], content_type=ASSETS[name],
                            charset="utf-8")

    # ------------------------------------------------------------------ WebSocket

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        if not origin_allowed(request):
            self.stats["cross_origin"] += 1
            log.warning("web: refused a WebSocket from %s opened by the page of another "
                        "site (Origin %s)", request.remote,
                        request.headers.get("Origin", "")[:80])
            raise web.HTTPForbidden(text=CROSS_ORIGIN, headers=HEADERS)
        if len(self.clients) >= MAX_BROWSERS:
            self.stats["too_many"] += 1
            log.warning("web: refused a browser from %s: %d are connected already (the most)",
                        request.remote, MAX_BROWSERS)
            raise web.HTTPServiceUnavailable(text=f"too many browsers: {MAX_BROWSERS} are "
                                             "connected already\n")
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_MESSAGE_BYTES,
                                   compress=False, timeout=CLOSE_TIMEOUT_S)
        await ws.prepare(request)
        self._numbers += 1
        client = Client(ws, self._numbers, str(request.remote),
                        request.query.get("client", ""))
        self.stats["connections"] += 1
        hello = self.owners.connect(client)
        log.info("web: browser %d (%s) connected, %s", client.number, client.remote, hello)
        self._hello(client, hello)
        sender = asyncio.get_running_loop().create_task(self._send_loop(client))
        try:
            await self._read(client)
        except ConnectionError as exc:  # reset mid-answer (a pong to a ping flood, say)
            log.info("web: browser %d (%s): connection lost: %s", client.number,
                     client.remote, exc)
        finally:
            sender.cancel()
            was_owner = client is self.owner
            heir = self.owners.leave(client)
            log.info("web: browser %d (%s) left", client.number, client.remote)
            if heir is not None:
                self._hello(heir, "the page reconnected: " + TAKE_OVER)
            elif was_owner and not self._closing:
                for other in self.clients:
                    self._hello(other, OWNER_LEFT)
        return ws

    async def _read(self, client: Client) -> None:
        ws = client.ws
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            if self._flooding(client):
                await ws.close(code=WSCloseCode.POLICY_VIOLATION,
                               message=b"too many messages: at most 200 per second")
                break
            if msg.type == WSMsgType.TEXT:
                self._receive(client, msg.data)
            else:
                self._reject(client, "binary messages are not accepted: send JSON text")

    def _hello(self, client: Client, message: str) -> None:
        client.send_text({"type": "hello", "owner": client is self.owner, "message": message,
                          "takeover_pending": client is self.owner and not self.state.consented,
                          "erase_count": self.erase_count,
                          "failsafe_ms": self.config.failsafe_ms})

    def _flooding(self, client: Client) -> bool:
        """True when this message is one too many for the rate limit (logged)."""
        if not client.flooding(time.monotonic()):
            return False
        self.stats["rate_limited"] += 1
        log.warning("web: browser %d (%s) sent more than %d messages within %.0f s: closing "
                    "its socket%s", client.number, client.remote, RATE_LIMIT, RATE_WINDOW_S,
                    " (it was driving: neutral now)" if client is self.owner else "")
        return True

    def _receive(self, client: Client, text: str) -> None:
        self.stats["messages"] += 1
        try:
            msg = parse_message(text, self.erase_count)
        except BadMessage as exc:
            self._reject(client, str(exc))
            return
        if msg.kind == "take_over":
            refused = self.owners.take_over(client)
            if refused is not None:
                self._error(client, refused)
            else:
                self._hello(client, TAKE_OVER)
            return
        if client is not self.owner and msg.kind != "estop":  # anyone may stop the car
            self.stats["viewers_refused_control"] += 1
            if not client.told_view_only:
                client.told_view_only = True
                self._error(client, VIEW_ONLY if self.owner is not None else FREE)
            return
        if msg.clamped:
            self.stats["clamped"] += 1
            self._error(client, "; ".join(msg.clamped))
        if msg.kind == "control":
            self.state.control(msg.steering, msg.throttle)
        elif msg.kind != "estop" and not self.state.consented:
            self.stats["not_centred"] += 1
            self._error(client, f"{msg.kind.replace('_', ' ')} refused: " + TAKE_OVER,
                        about=msg.kind)
        elif not self.state.request(msg.kind, msg.value):
            self._error(client, ERASE_IGNORED)

    def _reject(self, client: Client, message: str) -> None:
        self.stats["malformed"] += 1
        if client is self.owner:
            self.state.neutral()
        self._error(client, message)

    def _error(self, client: Client, message: str, about: str | None = None) -> None:
        client.send_error(message, time.monotonic(), about)

    async def _send_loop(self, client: Client) -> None:
        ws = client.ws
        try:
            while not ws.closed:
                await client.wake.wait()
                client.wake.clear()
                while client.outbox:
                    await ws.send_str(client.outbox.popleft())
                status, client.status = client.status, None
                if status is not None:
                    await ws.send_str(status)
                frame, client.frame = client.frame, None
                if frame is not None:
                    await ws.send_bytes(frame)
                    self.stats["frames_sent"] += 1
        except (ConnectionError, RuntimeError) as exc:  # the socket closed under us
            log.debug("web: browser %d: send failed: %s", client.number, exc)

    # ------------------------------------------------------------------ video and status

    def publish(self, frame: Frame | None, status: dict[str, Any]) -> None:
        """Keep the newest frame and status; the server thread sends them (from any thread)."""
        loop = self._loop
        if not self.clients or loop is None or loop.is_closed():
            return
        with self._lock:
            self._latest = (frame, status)
            if self._pending:
                return
            self._pending = True
        with contextlib.suppress(RuntimeError):  # the loop closed in between
            loop.call_soon_threadsafe(self._fan_out)

    def _fan_out(self) -> None:
        with self._lock:
            latest, self._latest, self._pending = self._latest, None, False
        if latest is None or not self.clients:
            return
        frame, status = latest
        jpeg = self._jpeg.encode(frame)
        base = status_message(status, self.state, self.owner is not None, len(self.clients),
                              self.stats, self.owners.reclaim_left_s())
        for client in self.clients:
            client.status = json.dumps({**base, "owner": client is self.owner})
            if jpeg is not None:
                if client.frame is not None:
                    self.stats["frames_dropped"] += 1
                client.frame = jpeg
            client.wake.set()
