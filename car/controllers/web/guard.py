"""The page server's defences against the network, before any request is handled.

- **Connections.** Every TCP connection is "pending" until a request on it carries the
  token. A pending connection is closed ``HEADER_TIMEOUT_S`` after it opened (a client
  that never finishes its headers holds nothing for long); at most ``MAX_PENDING`` are
  pending at once, and ``PENDING_PER_ADDRESS`` per address: one more closes the oldest
  pending one (of that address first), so a flood of idle connections never keeps the
  driver's browser out. All connections together stay under a budget of file descriptors
  (``connection_budget``) that leaves ``RESERVED_FDS`` for the recorder, the camera and the
  serial port (plus two accept bursts of ``ACCEPT_BACKLOG``, accepted before they can be
  counted), raising the soft open-file limit at start when it is too low.
- **Wrong tokens.** More than ``TOKEN_FAILURES`` wrong or missing tokens from one address
  within ``TOKEN_WINDOW_S`` answer 429 to that address (right token or not) until the
  window has passed.
- **Origin.** A WebSocket opened by a browser carries ``Origin``; it must name the page's
  own host, so another site open in the driver's browser cannot drive the car.
- **Errors.** The event loop's own error reports (``socket.accept()`` out of resources, a
  peer that reset mid-send) are one log line each, at most one per kind per
  ``REPORT_EVERY_S`` with a count of the rest: never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from car.modes import LimitedLog

log = logging.getLogger(__name__)
HEADER_TIMEOUT_S = 5.0  # a connection must send a request with the token within this
KEEPALIVE_S = 15.0  # an idle keep-alive connection (after a response) is closed after this
MAX_PENDING = 64  # connections without the token yet, at once
PENDING_PER_ADDRESS = 16  # ... from one address
MAX_OPEN = 256  # every connection at once (within the file descriptor budget)
MIN_OPEN = 24  # never budget fewer (16 browsers and a few page loads)
RESERVED_FDS = 64  # kept free for the recorder, the camera, the serial port, logs
ACCEPT_BACKLOG = 64  # the listen backlog: asyncio accepts up to this many at once, and
# two such bursts can come before the first's connections are counted (budgeted for)
TOKEN_FAILURES = 10  # wrong tokens from one address within TOKEN_WINDOW_S, then 429
TOKEN_WINDOW_S = 60.0
MAX_ADDRESSES = 4096  # addresses remembered for the token limit
REPORT_EVERY_S = 10.0


class ConnectionGuard:
    """Tracks every connection of an aiohttp ``web.Server``; see the module's rules."""

    def __init__(self, stats: dict[str, int], max_open: int = MAX_OPEN):
        self.stats = stats
        self.max_open = max_open
        self._open: dict[Any, asyncio.Transport] = {}  # handler -> transport
        # transport -> (address, its header timer, handler): insertion order is age
        self._pending: dict[asyncio.Transport, tuple[str, asyncio.TimerHandle, Any]] = {}
        self._per_address: dict[str, int] = {}
        for key in ("pending_closed", "header_timeouts", "over_budget"):
            stats.setdefault(key, 0)

    def install(self, server: web.Server) -> None:
        """Hook the server's connection bookkeeping (called once, after runner setup)."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self._arrived(handler, transport)

        def connection_lost(handler: Any, exc: BaseException | None) -> None:
            transport = self._open.pop(handler, None)
            if transport is not None:
                self._forget(transport)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    @property
    def open(self) -> int:
        return len(self._open)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def trust(self, request: web.Request) -> None:
        """The request carried the token: its connection is no longer pending."""
        transport = request.transport
        if transport is not None:
            self._forget(transport)  # type: ignore[arg-type]

    def _arrived(self, handler: Any, transport: asyncio.Transport) -> None:
        self._open[handler] = transport
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else "?"
        timer = asyncio.get_running_loop().call_later(HEADER_TIMEOUT_S, self._expire,
                                                      transport)
        self._pending[transport] = (address, timer, handler)
        self._per_address[address] = self._per_address.get(address, 0) + 1
        if self._per_address[address] > PENDING_PER_ADDRESS:
            self._close_oldest(address)
        if len(self._pending) > MAX_PENDING:
            self._close_oldest(None)
        if len(self._open) > self.max_open:  # (the new one is pending: there is one to close)
            self.stats["over_budget"] += 1
            self._close_oldest(None)

    def _close_oldest(self, address: str | None) -> None:
        """Close the oldest pending connection (of ``address``, when given)."""
        for transport, (where, _, _) in self._pending.items():
            if address is None or where == address:
                self.stats["pending_closed"] += 1
                self._drop(transport)
                return

    def _expire(self, transport: asyncio.Transport) -> None:
        if transport in self._pending:
            self.stats["header_timeouts"] += 1
            self._drop(transport)

    def _drop(self, transport: asyncio.Transport) -> None:
        """Close a pending connection now (its descriptor is freed at once)."""
        self._open.pop(self._pending[transport][2], None)
        self._forget(transport)
        transport.abort()

    def _forget(self, transport: asyncio.Transport) -> None:
        entry = self._pending.pop(transport, None)
        if entry is None:
            return
        address, timer, _ = entry
        timer.cancel()
        left = self._per_address.get(address, 1) - 1
        if left > 0:
            self._per_address[address] = left
        else:
            self._per_address.pop(address, None)


class TokenLimiter:
    """Counts wrong tokens per address; ``blocked`` once there are too many."""

    def __init__(self, failures: int = TOKEN_FAILURES, window_s: float = TOKEN_WINDOW_S):
        self.failures = failures
        self.window_s = window_s
        self._seen: dict[str, deque[float]] = {}

    def blocked(self, address: str, now: float) -> bool:
        times = self._seen.get(address)
        if times is None:
            return False
        while times and now - times[0] > self.window_s:
            times.popleft()
        if not times:
            del self._seen[address]
        return len(times) >= self.failures

    def failed(self, address: str, now: float) -> None:
        times = self._seen.pop(address, None) or deque(maxlen=self.failures)
        times.append(now)
        self._seen[address] = times  # most recent last: the oldest go first when full
        while len(self._seen) > MAX_ADDRESSES:
            del self._seen[next(iter(self._seen))]

    def retry_after_s(self, address: str, now: float) -> int:
        times = self._seen.get(address)
        return max(1, int(self.window_s - (now - times[0])) + 1) if times else 1


def origin_allowed(request: web.Request) -> bool:
    """True when the request has no ``Origin`` (not a browser) or one naming this host and
    port (the ``Host`` it was sent to). The scheme is not compared: one port serves one
    scheme, and behind a TLS proxy the page is https while the request reaching us is http
    (the proxy must pass the browser's ``Host`` on; see docs/security.md)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()


def connection_budget(reserve: int = RESERVED_FDS, want: int = MAX_OPEN) -> int:
    """How many connections the server may hold, leaving ``reserve`` file descriptors for
    the rest of the car. Raises the soft open-file limit (to at most the hard one) when it
    is too low, with a warning; warns when even that leaves less than ``want``."""
    try:
        import resource
    except ImportError:  # not a POSIX system: no limit to read
        return want
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = _open_fds() + 2 * ACCEPT_BACKLOG
    need = in_use + reserve + want
    if soft != resource.RLIM_INFINITY and soft < need:
        raised = need if hard == resource.RLIM_INFINITY else min(hard, need)
        if raised > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
                log.warning("web: raised the open-file limit from %d to %d so the page's "
                            "connections cannot starve the recorder", soft, raised)
                soft = raised
            except (ValueError, OSError) as exc:
                log.warning("web: cannot raise the open-file limit (%d): %s", soft, exc)
    if soft == resource.RLIM_INFINITY:
        return want
    budget = max(MIN_OPEN, min(want, soft - in_use - reserve))
    if budget < want:
        log.warning("web: the open-file limit (ulimit -n %d) leaves room for %d connections "
                    "to the page; raise it (ulimit -n %d) for more", soft, budget, need)
    return budget


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 16


class LoopErrors:
    """The server's event loop's exception handler: one line per report, rate-limited per
    kind, no traceback (``--debug`` logging shows it)."""

    def __init__(self, stats: dict[str, int], logger: logging.Logger = log,
                 every_s: float = REPORT_EVERY_S):
        self.stats = stats
        self.logger = logger
        self._log = LimitedLog(logger, every_s, count_held=True)
        stats.setdefault("loop_errors", 0)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.stats["loop_errors"] += 1
        exc = context.get("exception")
        message = str(context.get("message") or "error in the web server")
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        debug = self.logger.isEnabledFor(logging.DEBUG)
        kind = message + (type(exc).__name__ if exc is not None else "")
        self._log.log(logging.WARNING, kind, time.monotonic(), "web: %s%s",
                      message, detail, exc_info=exc if debug else None)
