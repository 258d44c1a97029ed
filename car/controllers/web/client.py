"""One connected browser: its socket, what waits to be sent to it (texts in order, the newest
status and frame only), and its own limits (the message rate, repeated errors)."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections import deque
from typing import Any

from aiohttp import web

RATE_LIMIT = 200  # more messages than this within RATE_WINDOW_S closes the socket
RATE_WINDOW_S = 1.0
ERROR_REPEAT_S = 1.0  # the same error goes back to one client at most this often
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


class Client:
    """One connected browser: its socket, queued texts, and the newest status and frame."""

    def __init__(self, ws: web.WebSocketResponse, number: int, remote: str,
                 client_id: str = ""):
        self.ws = ws
        self.number = number
        self.remote = remote
        # the page's random id ("" when it sent none or a bad one)
        self.client_id = client_id if CLIENT_ID.fullmatch(client_id) else ""
        self.arrivals: deque[float] = deque(maxlen=RATE_LIMIT + 1)  # for the rate limit
        self.outbox: deque[str] = deque(maxlen=64)  # hello and error messages, in order
        self.status: str | None = None  # newest only
        self.frame: bytes | None = None  # newest only
        self.wake = asyncio.Event()
        self.told_view_only = False
        self.errors_sent: dict[str, float] = {}

    def send_text(self, payload: dict[str, Any]) -> None:
        self.outbox.append(json.dumps(payload))
        self.wake.set()

    def flooding(self, now: float) -> bool:
        """Count a message arriving at ``now``; True when it is one too many for the rate
        limit (more than RATE_LIMIT within RATE_WINDOW_S)."""
        arrivals = self.arrivals
        arrivals.append(now)
        return len(arrivals) > RATE_LIMIT and now - arrivals[0] <= RATE_WINDOW_S

    def send_error(self, message: str, now: float, about: str | None = None) -> None:
        """Queue an error message, unless the same one went out less than ERROR_REPEAT_S ago.
        ``about``: the request it refuses ("mode": the page shows it by the mode selector)."""
        if now - self.errors_sent.get(message, -math.inf) < ERROR_REPEAT_S:
            return
        if len(self.errors_sent) > 100:
            self.errors_sent.clear()
        self.errors_sent[message] = now
        payload = {"type": "error", "message": message}
        if about is not None:
            payload["about"] = about
        self.send_text(payload)
