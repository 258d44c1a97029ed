"""Who drives: one owner among the connected browsers, the others watch.

- The first browser of the run owns control as it connects.
- When the owner leaves, nobody drives (``ControlState`` reads neutral at once). For
  ``RECLAIM_S`` the control is kept for it: the same page (its client id, kept in the tab's
  sessionStorage) gets it back when it reconnects, or at once if it is already connected on
  a newer socket. Nobody else may take over in that window.
- After the window, a watcher takes over only by a deliberate action: the page's "Take
  control" button (a ``take_over`` message). Nobody takes control from a connected owner.
- A new owner's input counts once it has centred its controls (``ControlState``'s consent).
"""

from __future__ import annotations

import logging

from car.controllers.web.client import Client
from car.controllers.web.state import ControlState

log = logging.getLogger(__name__)
RECLAIM_S = 10.0  # the control is kept this long for an owner that left
VIEW_ONLY = "view only: another browser is driving"
DRIVING = "you are driving"
TAKE_OVER = "you are driving: center the controls to take over"
OWNER_LEFT = ("the driving browser left: nobody drives (the car is neutral); it may "
              f"come back within {RECLAIM_S:.0f} s, then Take control is yours to press")
FREE = "nobody drives: press Take control to drive"


class Owners:
    """The connected browsers and which one owns control; ``state`` gets told of changes."""

    def __init__(self, state: ControlState, stats: dict[str, int]):
        self.state = state
        self.stats = stats
        self.clients: list[Client] = []
        self.owner: Client | None = None
        self.ever_owned = False
        self._left: tuple[str, float] | None = None  # the owner that left: id, clock time
        for key in ("reclaimed", "takeovers", "takeovers_refused"):
            stats.setdefault(key, 0)

    def connect(self, client: Client) -> str:
        """A browser connected; returns what its hello says."""
        self.clients.append(client)
        if not self.ever_owned and self.owner is None:
            self._give(client)
            return DRIVING
        if self.owner is None and self.reclaims(client):
            self.stats["reclaimed"] += 1
            self._give(client)
            log.info("web: browser %d came back within %.0f s and drives again",
                     client.number, RECLAIM_S)
            return DRIVING
        return VIEW_ONLY if self.owner is not None else FREE

    def leave(self, client: Client) -> Client | None:
        """A browser's socket closed; returns the browser that drives now because it is
        the same page on a newer socket, if any."""
        self.clients.remove(client)
        if client is not self.owner:
            return None
        gone = client.client_id
        self.owner = None
        self.state.owner_left()  # neutral at once: no waiting for the failsafe
        self._left = (gone, self.state.clock()) if gone else None
        same = next((c for c in self.clients if gone and c.client_id == gone), None)
        if same is not None:  # it reconnected before the old socket timed out
            self._left = None
            self._give(same)
            log.info("web: browser %d (the same page) drives now", same.number)
        return same

    def take_over(self, client: Client) -> str | None:
        """A watcher pressed Take control: None when it drives now, else why not."""
        if client is self.owner:
            return None
        if self.owner is not None:
            self.stats["takeovers_refused"] += 1
            return "take over refused: " + VIEW_ONLY
        wait_s = self.reclaim_left_s()
        if wait_s > 0 and not self.reclaims(client):
            self.stats["takeovers_refused"] += 1
            return (f"take over refused: the driving browser may come back for "
                    f"{wait_s:.0f} s more")
        self.stats["takeovers"] += 1
        self._give(client)
        log.info("web: browser %d (%s) took control", client.number, client.remote)
        return None

    def reclaims(self, client: Client) -> bool:
        """The owner that left, back within the window."""
        left = self._left
        return (left is not None and client.client_id != "" and client.client_id == left[0]
                and self.state.clock() - left[1] <= RECLAIM_S)

    def reclaim_left_s(self) -> float:
        """Seconds the control is still kept for the owner that left (0 when none)."""
        if self._left is None or self.owner is not None:
            return 0.0
        return max(0.0, RECLAIM_S - (self.state.clock() - self._left[1]))

    def _give(self, client: Client) -> None:
        self.owner = client
        self.ever_owned = True
        self._left = None
        self.state.take_over()  # neutral until it has centred its controls
