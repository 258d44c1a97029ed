"""The cleaner's page server: aiohttp on its own thread, with the drive page's token rules.

Every request carries the token (``?token=...``); a wrong or missing one is 403, and an
address sending too many wrong ones is refused for a while (429). Pending connections,
wrong-token limits, the origin rule and the event loop's error reports are the drive page's
own (``car.controllers.web.guard``); an edit (a POST) from a browser must come from the
page's own origin.

Routes: ``/`` the page, ``/static/{name}``, ``/api/tub`` (the tub, its series, the pilot's,
the deleted flags), ``/frame/{index}`` (JPEG), ``POST /api/delete`` and ``/api/restore``
(``{"start": S, "end": E}``, index ranges half-open like `car tub delete S:E`) and
``POST /api/undo``. Edits run one at a time, off the event loop, so frames keep flowing.
"""

from __future__ import annotations

import asyncio
import errno
import html
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from car.config import WebConfig
from car.controllers.web.controller import ANY_ADDRESS, check_token, lan_address
from car.controllers.web.guard import (
    ACCEPT_BACKLOG,
    KEEPALIVE_S,
    ConnectionGuard,
    LoopErrors,
    TokenLimiter,
    connection_budget,
    origin_allowed,
)
from car.errors import CarError, TubError
from car.tubclean.edits import BadRange, CleanSession
from car.tubclean.frames import frame_jpeg

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
REFUSED = "wrong or missing token: open the URL that `car tub clean` printed\n"
LIMITED = "too many wrong tokens from this address: wait {s} s\n"
CROSS_ORIGIN = "cross-origin edit refused: open the page from the address `car` printed"
HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
           "X-Content-Type-Options": "nosniff"}
FRAME_CACHE = "private, max-age=600"  # a record's picture never changes while we serve it
MAX_BODY_BYTES = 4096
CLOSE_TIMEOUT_S = 1.0


class CleanServer:
    """Serves one ``CleanSession``; ``start`` returns the URL to open, ``close`` stops."""

    def __init__(self, session: CleanSession, config: WebConfig,
                 pilot: dict[str, Any] | None = None):
        check_token(config.token)
        self.session = session
        self.config = config
        self.pilot = pilot
        self.token = config.token or secrets.token_urlsafe(18)
        self.port = config.port
        self.url = ""
        self.stats: dict[str, int] = {"refused": 0, "token_limited": 0, "cross_origin": 0,
                                      "edits": 0}
        self.limiter = TokenLimiter()
        self.connections = ConnectionGuard(self.stats)
        self.loop_errors = LoopErrors(self.stats)
        self._assets = {name: (STATIC / name).read_bytes() for name in ASSETS}
        query = html.escape(quote(self.token, safe=""))
        self._index = (STATIC / "index.html").read_text(encoding="utf-8") \
            .replace("__TOKEN__", query).encode("utf-8")
        self._edit_lock = threading.Lock()  # one edit at a time; the state read beside it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Listen on its own thread; returns the URL (with the token). CarError if the
        address cannot be listened on."""
        self.connections.max_open = connection_budget()
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self.loop_errors)
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="tubclean-server", daemon=True)
        self._thread.start()
        try:
            self.port = asyncio.run_coroutine_threadsafe(self._listen(), loop).result(15)
        except OSError as exc:
            self._stop_thread()
            raise CarError(self._listen_error(exc)) from None
        host = self.config.host
        host = lan_address() if host in ANY_ADDRESS else host
        host = f"[{host}]" if ":" in host else host
        self.url = f"http://{host}:{self.port}/?token={quote(self.token, safe='')}"
        return self.url

    def _run(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _listen(self) -> int:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._asset)
        app.router.add_get("/api/tub", self._tub)
        app.router.add_get("/frame/{index}", self._frame)
        app.router.add_post("/api/delete", self._delete)
        app.router.add_post("/api/restore", self._restore)
        app.router.add_post("/api/undo", self._undo)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               shutdown_timeout=CLOSE_TIMEOUT_S, keepalive_timeout=KEEPALIVE_S)
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
            return (f"port {self.config.port} is in use (another `car` serving a page?); "
                    "pick another with --port N (0 picks a free one)")
        if exc.errno == errno.EACCES:
            return f"cannot listen on {where}: permission denied; use a port above 1023"
        return (f"cannot listen on {where}: {exc.strerror or exc}; pick another --host "
                "(0.0.0.0 for every network, 127.0.0.1 for this computer only)")

    def close(self) -> None:
        """Stop listening, close the connections and end the thread (idempotent)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if self._runner is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(5)
            except Exception as exc:  # a hung socket must not keep the command alive
                log.warning("tub clean: the server did not stop cleanly: %s", exc)
            self._runner = None
        self._stop_thread()

    def _stop_thread(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------------ guard

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
                log.warning("tub clean: refused %s %s from %s: wrong or missing token",
                            request.method, request.path[:80], address)
            return web.Response(status=403, text=REFUSED, headers=HEADERS)
        self.connections.trust(request)
        if request.method == "POST" and not origin_allowed(request):
            self.stats["cross_origin"] += 1
            return _json({"error": CROSS_ORIGIN}, 403)
        response = await handler(request)
        if "Cache-Control" not in response.headers:
            response.headers.update(HEADERS)
        return response

    # ------------------------------------------------------------------ routes

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(body=self._index, content_type="text/html", charset="utf-8")

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound(text=f"no such file: {name}\n", headers=HEADERS)
        return web.Response(body=self._assets[name], content_type=ASSETS[name],
                            charset="utf-8")

    async def _tub(self, request: web.Request) -> web.Response:
        summary = await asyncio.to_thread(self._locked, self.session.summary)
        return _json({**summary, "pilot": self.pilot})

    async def _frame(self, request: web.Request) -> web.Response:
        text = request.match_info["index"]
        if not (text.isascii() and text.isdigit() and len(text) <= 18):
            raise web.HTTPNotFound(text=f"no frame {text[:20]!r}: an index is a whole "
                                        "number\n", headers=HEADERS)
        try:
            jpeg = await asyncio.to_thread(frame_jpeg, self.session, int(text))
        except TubError as exc:
            raise web.HTTPNotFound(text=f"{exc}\n", headers=HEADERS) from None
        return web.Response(body=jpeg, content_type="image/jpeg",
                            headers={**HEADERS, "Cache-Control": FRAME_CACHE})

    async def _delete(self, request: web.Request) -> web.Response:
        return await self._range_edit(request, deleted=True)

    async def _restore(self, request: web.Request) -> web.Response:
        return await self._range_edit(request, deleted=False)

    async def _range_edit(self, request: web.Request, deleted: bool) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return self._refuse("send JSON like {\"start\": 100, \"end\": 200}", 400)
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(f"request too large: at most {MAX_BODY_BYTES} bytes", 413)
        if not isinstance(body, dict):
            return self._refuse("send a JSON object like {\"start\": 100, \"end\": 200}", 400)
        return await self._edit(lambda: self.session.apply(body.get("start"),
                                                            body.get("end"), deleted))

    async def _undo(self, request: web.Request) -> web.Response:
        return await self._edit(self.session.undo)

    async def _edit(self, action: Callable[[], str]) -> web.Response:
        def run() -> tuple[str, dict[str, Any]]:
            message = action()
            self.stats["edits"] += 1
            return message, self.session.state()

        try:
            message, state = await asyncio.to_thread(self._locked, run)
        except BadRange as exc:
            return self._refuse(str(exc), 400)
        except CarError as exc:  # the tub cannot be changed now (a recorder holds it, ...)
            return self._refuse(str(exc), 409)
        except OSError as exc:
            return self._refuse(f"the tub could not be written: {exc}", 500)
        log.info("tub clean: %s", message)
        return _json({"message": message, **state})

    def _refuse(self, error: str, status: int) -> web.Response:
        """An edit not made: why, with the state as it is (the page redraws from it)."""
        return _json({"error": error, **self._locked(self.session.state)}, status)

    def _locked(self, action: Callable[[], Any]) -> Any:
        with self._edit_lock:
            return action()


def _json(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data, separators=(",", ":")),
                        content_type="application/json", headers=HEADERS)
