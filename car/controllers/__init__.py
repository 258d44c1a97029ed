"""Controllers: where the user's input comes from. One protocol; the loop never asks which.

The web page, gamepad and RC transmitter arrive with their own issues; ``ScriptedController``
stands in for a person in `car drive` without one, and in tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from car.frames import Mode, UserInput


class Controller(Protocol):
    """``poll(now_s)`` → the user's input at loop time ``now_s``; called once per tick.
    ``close()`` releases what it holds (a device, a server) and is safe to call twice."""

    def poll(self, now_s: float) -> UserInput: ...

    def close(self) -> None: ...


class ScriptedController:
    """A fixed user input, or one computed from the loop time by ``script(now_s)``.

    The mode is requested on the first poll only, so a later change (by the loop's API)
    sticks; the script can request one at any tick.
    """

    def __init__(self, mode: Mode = Mode.USER, steering: float = 0.0, throttle: float = 0.0,
                 script: Callable[[float], UserInput] | None = None):
        self._first = UserInput(steering, throttle, mode=mode)
        self._steady = UserInput(steering, throttle)
        self._script = script
        self._polled = False

    def poll(self, now_s: float) -> UserInput:
        if self._script is not None:
            return self._script(now_s)
        if not self._polled:
            self._polled = True
            return self._first
        return self._steady

    def close(self) -> None:
        """Nothing to release."""
