"""The owner's latest input, its age, and the one-shot requests waiting for the loop.

The server thread writes it; the loop's thread reads it once per tick (``poll``). The
failsafe: no control message for ``failsafe_ms`` (by the injectable clock) reads neutral.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from car.frames import Mode, UserInput

EPSILON_S = 1e-9  # float rounding of a simulated clock must not move the failsafe edge
_SLOT = {"estop": "stop", "clear_estop": "stop"}  # requests that may not share one tick


class ControlState:
    """Thread-safe: the owner's steering and throttle, and the queued one-shot requests."""

    def __init__(self, failsafe_ms: int, clock: Callable[[], float],
                 start_mode: Mode | None = None):
        self.failsafe_s = failsafe_ms / 1000.0
        self.clock = clock
        self.failsafe = True  # as of the last poll: the input read neutral for want of control
        self.failsafe_polls = 0
        self._lock = threading.Lock()
        self._steering = 0.0
        self._throttle = 0.0
        self._last_s: float | None = None  # clock time of the owner's last control message
        self._requests: deque[tuple[str, Any]] = deque()
        if start_mode is not None:
            self._requests.append(("mode", Mode(start_mode)))

    def control(self, steering: float, throttle: float) -> None:
        """The owner's input (already checked), stamped now: the heartbeat."""
        now = self.clock()
        with self._lock:
            self._steering, self._throttle, self._last_s = steering, throttle, now

    def neutral(self) -> None:
        """Zero the input and forget the heartbeat: the car reads neutral from the next poll
        until the (next) owner sends control again."""
        with self._lock:
            self._steering, self._throttle, self._last_s = 0.0, 0.0, None

    def request(self, name: str, value: Any) -> None:
        """Queue a one-shot request (a UserInput field name and its value)."""
        with self._lock:
            self._requests.append((name, value))

    def poll(self) -> UserInput:
        """The input for this tick: neutral when stale; each queued request exactly once (two
        of the same kind go out on successive polls, in order)."""
        now = self.clock()
        with self._lock:
            fresh = self._last_s is not None and now - self._last_s < self.failsafe_s - EPSILON_S
            steering, throttle = (self._steering, self._throttle) if fresh else (0.0, 0.0)
            fields: dict[str, Any] = {}
            taken: set[str] = set()
            while self._requests:
                name, value = self._requests[0]
                slot = _SLOT.get(name, name)
                if slot in taken:
                    break
                taken.add(slot)
                fields[name] = value
                self._requests.popleft()
        self.failsafe = not fresh
        self.failsafe_polls += not fresh
        return UserInput(steering, throttle, **fields)
