"""The page's server: aiohttp (HTTP and WebSocket in one asyncio library) on its own thread.

Every request must carry the token (``?token=...``); without it: 403 and a one-line page.

Ownership: the first browser connected owns control; later ones watch (view only) and the
oldest of them takes over when the owner leaves. A new owner's input counts only once it
has sent a neutral control (``ControlState``'s consent rule; its requests other than
``estop`` are refused until then) and the page says "center the controls to take over".
Each page sends a random client id (``?client=...``, kept in the tab's sessionStorage):
a browser that reconnects within ``RECLAIM_S`` with the id of the owner that left gets
control back if the slot is free or held by a browser that has not centred its controls
yet (that one goes back to watching). Anyone may send ``estop``.

Floods: a socket that sends more than ``RATE_LIMIT`` messages within ``RATE_WINDOW_S`` is
closed (an owner closing reads neutral at once); requests are coalesced in
``ControlState``, every per-client buffer is bounded and at most ``MAX_BROWSERS`` sockets
are open at once, so memory stays bounded whatever a client sends. At most one erase per
3 s: repeats get "erase ignored: one per 3 s".

Video goes to every browser through a per-client "newest only" slot, so a slow phone drops
frames instead of falling behind.
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
from car.controllers.web.messages import BadMessage, parse_message
from car.controllers.web.state import ControlState
from car.errors import CarError
from car.frames import Frame

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
REFUSED = "wrong or missing token: open the URL that `car record` printed\n"
VIEW_ONLY = "view only: another browser is driving"
DRIVING = "you are driving"
TAKE_OVER = "you are driving: center the controls to take over"
RECLAIMED = "view only: the browser that was driving came back"
ERASE_IGNORED = "erase ignored: one per 3 s"
RECLAIM_S = 10.0  # an owner that reconnects this soon (same client id) may get control back
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
        self.clients: list[Client] = []
        self.owner: Client | None = None
        self.stats = {"connections": 0, "messages": 0, "malformed": 0, "clamped": 0,
                      "refused": 0, "viewers_refused_control": 0, "frames_encoded": 0,
                      "frames_sent": 0, "frames_dropped": 0, "encode_errors": 0,
                      "rate_limited": 0, "reclaimed": 0, "not_centred": 0, "too_many": 0}
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
        self._left: tuple[str, float] | None = None  # the last owner's client id, when it left

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> int:
        """Listen (on its own thread); returns the port. Raises CarError if it cannot."""
        loop = asyncio.new_event_loop()
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
                               shutdown_timeout=CLOSE_TIMEOUT_S)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.config.host, self.config.port).start()
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
        given = request.query.get("token", "").encode("utf-8")
        if not secrets.compare_digest(given, self.token.encode("utf-8")):
            self.stats["refused"] += 1
            if self.stats["refused"] <= 3 or self.stats["refused"] % 100 == 0:
                log.warning("web: refused %s %s from %s: wrong or missing token (%d so far)",
                            request.method, request.path, request.remote, self.stats["refused"])
            return web.Response(status=403, text=REFUSED, headers=HEADERS)
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
        self.clients.append(client)
        self.stats["connections"] += 1
        if self.owner is None:
            self._take_over(client)
        elif self._reclaims(client):
            self._reclaim(client)
        owner = client is self.owner
        log.info("web: browser %d (%s) connected, %s", client.number, client.remote,
                 "driving" if owner else "view only")
        self._hello(client, DRIVING if owner else VIEW_ONLY)
        sender = asyncio.get_running_loop().create_task(self._send_loop(client))
        try:
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
        finally:
            sender.cancel()
            self.clients.remove(client)
            log.info("web: browser %d (%s) left", client.number, client.remote)
            if client is self.owner:
                self._owner_left()
        return ws

    def _hello(self, client: Client, message: str) -> None:
        client.send_text({"type": "hello", "owner": client is self.owner, "message": message,
                          "takeover_pending": client is self.owner and not self.state.consented,
                          "erase_count": self.erase_count,
                          "failsafe_ms": self.config.failsafe_ms})

    def _take_over(self, client: Client) -> None:
        self.owner = client
        self.state.take_over()  # neutral until it has centred its controls

    def _reclaims(self, client: Client) -> bool:
        """The owner that left came back in time, and whoever drives has not centred yet."""
        left = self._left
        return (left is not None and client.client_id != "" and client.client_id == left[0]
                and self.state.clock() - left[1] <= RECLAIM_S and not self.state.consented)

    def _reclaim(self, client: Client) -> None:
        previous = self.owner
        self._left = None
        self.stats["reclaimed"] += 1
        self._take_over(client)
        if previous is not None:
            log.info("web: browser %d came back within %.0f s and drives again; browser %d "
                     "(which had not centred its controls) watches", client.number,
                     RECLAIM_S, previous.number)
            self._hello(previous, RECLAIMED)

    def _owner_left(self) -> None:
        assert self.owner is not None
        gone = self.owner.client_id
        if gone:
            self._left = (gone, self.state.clock())
        self.state.owner_left()  # at once: no waiting for the failsafe
        self.owner = None
        if self.clients and not self._closing:
            # The same page on a new socket (it reconnected before the old one timed out)
            # comes first; else the oldest watcher.
            heir = next((c for c in self.clients if gone and c.client_id == gone),
                        self.clients[0])
            self._take_over(heir)
            log.info("web: browser %d drives now (once it has centred its controls)",
                     heir.number)
            self._hello(heir, "the other browser left: " + TAKE_OVER)

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
        if client is not self.owner and msg.kind != "estop":  # anyone may stop the car
            self.stats["viewers_refused_control"] += 1
            if not client.told_view_only:
                client.told_view_only = True
                self._error(client, VIEW_ONLY)
            return
        if msg.clamped:
            self.stats["clamped"] += 1
            self._error(client, "; ".join(msg.clamped))
        if msg.kind == "control":
            self.state.control(msg.steering, msg.throttle)
        elif msg.kind != "estop" and not self.state.consented:
            self.stats["not_centred"] += 1
            self._error(client, f"{msg.kind.replace('_', ' ')} refused: " + TAKE_OVER)
        elif not self.state.request(msg.kind, msg.value):
            self._error(client, ERASE_IGNORED)

    def _reject(self, client: Client, message: str) -> None:
        self.stats["malformed"] += 1
        if client is self.owner:
            self.state.neutral()
        self._error(client, message)

    def _error(self, client: Client, message: str) -> None:
        client.send_error(message, time.monotonic())

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
                              self.stats)
        for client in self.clients:
            client.status = json.dumps({**base, "owner": client is self.owner})
            if jpeg is not None:
                if client.frame is not None:
                    self.stats["frames_dropped"] += 1
                client.frame = jpeg
            client.wake.set()
