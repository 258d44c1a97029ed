"""``WebController``: the page on the car as a Controller, plus the video and status feed.

The loop calls ``poll`` once per tick (the owner's input, or neutral when it is stale) and
``publish`` once per tick (the newest frame and the loop's status for the page).
"""

from __future__ import annotations

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
from car.frames import Frame, Mode, UserInput

ANY_ADDRESS = ("0.0.0.0", "", "::")


class WebController:
    """Serves the page (``start``), reads its input (``poll``), feeds it (``publish``).

    ``clock`` times the failsafe: ``poll`` reads neutral once the owner's last control
    message is ``config.failsafe_ms`` old, or at once when the owner leaves. A config port
    of 0 picks a free port (``port`` is the actual one after ``start``).
    """

    def __init__(self, config: WebConfig, *, start_mode: Mode | None = Mode.USER,
                 erase_count: int = 100, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.clock = clock
        self.token = config.token or secrets.token_urlsafe(12)
        self.port = config.port
        self.url = ""
        self._state = ControlState(config.failsafe_ms, clock, start_mode)
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
        """The owner's input, or neutral when stale; queued requests once each."""
        return self._state.poll()

    def publish(self, frame: Frame | None, status: dict[str, Any]) -> None:
        """The newest frame and the loop's status, for every connected page (cheap when none
        is connected; never blocks on the network)."""
        self._server.publish(frame, status)

    def close(self) -> None:
        """Close every page's socket and stop the server and its thread."""
        self._server.close()

    @property
    def failsafe(self) -> bool:
        """True when the last poll read neutral for want of a fresh control message."""
        return self._state.failsafe

    @property
    def owner_connected(self) -> bool:
        return self._server.owner is not None

    @property
    def stats(self) -> dict[str, int]:
        """Counters: connections, messages, malformed, clamped, refused (bad token),
        viewers_refused_control, frames encoded/sent/dropped, failsafe_polls."""
        return {**self._server.stats, "viewers": max(0, len(self._server.clients) - 1),
                "failsafe_polls": self._state.failsafe_polls}

    def __enter__(self) -> WebController:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def lan_address() -> str:
    """This machine's address on its default route (no packet is sent), else 127.0.0.1."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    return address if address not in ANY_ADDRESS else "127.0.0.1"
