"""``WebController``: the page on the car as a Controller, plus the video and status feed.

The loop calls ``poll`` once per tick (the owner's input, or neutral when it is stale) and
``publish`` once per tick (the newest frame and the loop's status for the page). The safety
rules (failsafe, arming after two controls in time, a new owner's consent, user mode when
the watcher is lost, coalesced requests with a latched e-stop) are ``state.py``'s; who
owns control, and the flood limits, ``server.py``'s.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import quote

from car.config import WebConfig
from car.controllers.web.server import WebServer
from car.controllers.web.state import ControlState
from car.errors import CarError
from car.frames import Frame, Mode, UserInput

log = logging.getLogger(__name__)
ANY_ADDRESS = ("0.0.0.0", "", "::")
MIN_TOKEN_CHARS = 16
SHORT_TOKEN = ("web.token is {n} characters: anyone on the network could guess it; set 16 "
               "or more random characters (e.g. `python -c \"import secrets; "
               "print(secrets.token_urlsafe(16))\"`), or leave it empty for a new random "
               "token every run")


class WebController:
    """Serves the page (``start``), reads its input (``poll``), feeds it (``publish``).

    ``clock`` times the failsafe: ``poll`` reads neutral once the owner's last control
    message is ``config.failsafe_ms`` old, or at once when the owner leaves, and stays
    neutral until the owner has centred its controls (a new owner) and sent two controls
    within ``failsafe_ms`` of each other. ``period_s`` is the loop's period: an input polled
    now stays in force until the next poll, so it must still be fresh then. Once an owner
    has connected, losing it (it left, or the failsafe began) while the mode the loop
    published is not ``user`` requests ``Mode.USER`` with the next poll. A config port of 0
    picks a free port (``port`` is the actual one after ``start``). A configured token
    shorter than 16 characters is refused (CarError).
    """

    def __init__(self, config: WebConfig, *, start_mode: Mode | None = Mode.USER,
                 erase_count: int = 100, clock: Callable[[], float] = time.monotonic,
                 period_s: float = 0.0):
        check_token(config.token)
        self.config = config
        self.clock = clock
        self.token = config.token or secrets.token_urlsafe(18)
        self.port = config.port
        self.url = ""
        self._state = ControlState(config.failsafe_ms, clock, start_mode, horizon_s=period_s)
        self._server = WebServer(config, self.token, self._state, erase_count)

    def start(self) -> str:
        """Listen on its own thread; returns the URL to open. CarError if the port is busy."""
        self.port = self._server.start()
        host = self.config.host
        host = lan_address() if host in ANY_ADDRESS else host
        if ":" in host:
            host = f"[{host}]"  # an IPv6 literal
        self.url = f"http://{host}:{self.port}/?token={quote(self.token, safe='')}"
        return self.url

    def poll(self, now_s: float) -> UserInput:
        """The owner's input, or neutral when stale or not armed; pending requests once
        each (an e-stop always with the very next poll)."""
        return self._state.poll()

    def publish(self, frame: Frame | None, status: dict[str, Any]) -> None:
        """The newest frame and the loop's status, for every connected page (cheap when none
        is connected; never blocks on the network). Its ``mode`` is what the failsafe's
        switch to user mode looks at."""
        if "mode" in status:
            self._state.loop_mode(status["mode"])
        self._server.publish(frame, status)

    def close(self) -> None:
        """Close every page's socket and stop the server and its thread."""
        self._server.close()

    @property
    def failsafe(self) -> bool:
        """True when the last poll read neutral for want of live control: none for
        ``failsafe_ms``, not yet two controls in time since the last failsafe, or a new owner
        that has not centred its controls yet."""
        return self._state.failsafe

    @property
    def owner_connected(self) -> bool:
        return self._server.owner is not None

    @property
    def stats(self) -> dict[str, int]:
        """Counters: connections, messages, malformed, clamped, refused (bad token),
        token_limited (answered 429 after too many bad tokens), cross_origin (sockets of
        another site's page), pending_closed / header_timeouts / over_budget (connections
        closed before sending the token), loop_errors, viewers_refused_control, frames
        encoded/sent/dropped, rate_limited (sockets closed for flooding), too_many
        (browsers refused over the limit), reclaimed (owners back within 10 s), takeovers
        (Take control pressed) and takeovers_refused, not_centred (requests refused before
        the owner centred), failsafe_polls, erase_ignored, mode_switches (to user, for a
        lost watcher)."""
        state = self._state
        return {**self._server.stats, "viewers": max(0, len(self._server.clients) - 1),
                "failsafe_polls": state.failsafe_polls, "erase_ignored": state.erase_ignored,
                "mode_switches": state.mode_switches}

    def __enter__(self) -> WebController:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def check_token(token: str) -> None:
    """CarError for a configured token shorter than MIN_TOKEN_CHARS (empty: a random one)."""
    if token and len(token) < MIN_TOKEN_CHARS:
        raise CarError(SHORT_TOKEN.format(n=len(token)))


def lan_address() -> str:
    """This machine's address on its default route (no packet is sent), else 127.0.0.1."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    return address if address not in ANY_ADDRESS else "127.0.0.1"
