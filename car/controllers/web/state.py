"""The owner's latest input, its age, and the one-shot requests waiting for the loop.

The server thread writes it; the loop's thread reads it once per tick (``poll``). Every
time below is the injectable clock's. The rules:

- **Failsafe.** ``poll`` reads neutral when the owner's last control message would be
  ``failsafe_ms`` old before the loop's next poll (``horizon_s``, one loop period: the
  command polled now stays in force until then), or the owner left, or sent something
  malformed. So the car is neutral no later than ``failsafe_ms`` after the last control,
  and at most one loop period earlier.
- **Arming.** After a failsafe, and at the start of every ownership, the input counts again
  only after two control messages that arrive within ``failsafe_ms`` of each other; until
  then ``poll`` stays neutral (and ``failsafe`` stays True). A background tab whose timers
  run at 1 Hz therefore never drives in 250 ms pulses.
- **Consent.** A new owner's input counts only after it has sent one neutral control
  (|steering| and |throttle| < ``NEUTRAL_BELOW``): a browser that inherits control while
  its stick is pushed must centre it first (``consented``).
- **Losing the watcher.** Once an owner has ever connected, when the owner leaves or the
  failsafe begins while the loop's mode is not ``user``, ``Mode.USER`` is requested once
  (delivered with the next poll): the user's input is neutral, so the car stops. The
  loop's mode is the one it last published in its status (``loop_mode``), or the one last
  delivered to it since, or a mode request still pending. A warning is logged;
  ``switched_to_user`` says so until the input is live again.
- **Requests** are coalesced per kind, so memory stays bounded whatever a client sends:
  the latest mode, recording and throttle limit win; ``estop`` and ``clear_estop`` are
  latched flags, delivered by the very next poll (an e-stop in the same poll wins over a
  clear, which is then dropped); at most one erase per ``ERASE_EVERY_S`` (repeats are
  ignored and counted in ``erase_ignored``). Every poll delivers everything pending, once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from car.frames import Mode, UserInput

log = logging.getLogger(__name__)
EPSILON_S = 1e-9  # float rounding of a simulated clock must not move the failsafe edge
NEUTRAL_BELOW = 0.05  # a control this close to centre is the new owner's consent
ERASE_EVERY_S = 3.0  # at most one erase request this often
LATEST_WINS = ("mode", "recording", "throttle_limit")
FLAGS = ("estop", "clear_estop")


class ControlState:
    """Thread-safe: the owner's steering and throttle, and the pending one-shot requests."""

    def __init__(self, failsafe_ms: int, clock: Callable[[], float],
                 start_mode: Mode | None = None, horizon_s: float = 0.0):
        self.failsafe_s = failsafe_ms / 1000.0
        self.horizon_s = horizon_s  # how long a polled input stays in force: one loop period
        self.clock = clock
        self.failsafe = True  # as of the last poll: the input read neutral for want of control
        self.failsafe_polls = 0
        self.erase_ignored = 0
        self.mode_switches = 0  # times the loss of the watcher requested user mode
        self.switched_to_user = False  # ... and the input has not been live since
        self.supervised = False  # an owner has connected at least once
        self._lock = threading.Lock()
        self._steering = 0.0
        self._throttle = 0.0
        self._last_s: float | None = None  # clock time of the owner's last control message
        self._armed = False  # two controls within failsafe_ms since the last failsafe
        self._consented = False  # the owner has sent a neutral control since taking over
        self._loop_mode: Mode | None = None  # published by the loop, or delivered to it
        self._latest: dict[str, Any] = {}  # mode, recording, throttle_limit
        self._flags: set[str] = set()  # estop, clear_estop
        self._erase = 0
        self._erase_s: float | None = None  # clock time of the last accepted erase
        if start_mode is not None:
            self._latest["mode"] = Mode(start_mode)

    # ------------------------------------------------------------------ the owner's side

    def take_over(self) -> None:
        """A browser became the owner: neutral until it has centred its controls and sent
        two controls in time."""
        with self._lock:
            self.supervised = True
            self._reset_input()
            self._consented = False

    def control(self, steering: float, throttle: float) -> None:
        """The owner's input (already checked), stamped now: the heartbeat."""
        now = self.clock()
        with self._lock:
            in_time = self._last_s is not None and \
                now - self._last_s < self.failsafe_s - EPSILON_S
            if not in_time:
                self._armed = False  # a gap: the failsafe fired, whether polled or not
            elif not self._armed:
                self._armed = True  # the second control in time
            if abs(steering) < NEUTRAL_BELOW and abs(throttle) < NEUTRAL_BELOW:
                self._consented = True
            self._steering, self._throttle, self._last_s = steering, throttle, now

    def neutral(self) -> None:
        """Zero the input and forget the heartbeat (a malformed message): neutral from the
        next poll until the owner has sent two controls in time again."""
        with self._lock:
            self._reset_input()

    def owner_left(self) -> None:
        """The owner's socket closed: neutral at once, and user mode if a pilot drives."""
        with self._lock:
            self._reset_input()
            self._consented = False
            self._lose_watcher("the owner's browser left")

    @property
    def consented(self) -> bool:
        """Whether the current owner has centred its controls since it took over."""
        return self._consented

    def request(self, name: str, value: Any) -> bool:
        """A one-shot request (a UserInput field name and its value), coalesced per kind.
        False when it is ignored (an erase within ``ERASE_EVERY_S`` of the last one)."""
        with self._lock:
            if name in FLAGS:
                self._flags.add(name)
            elif name == "erase_last":
                now = self.clock()
                if self._erase_s is not None and now - self._erase_s < ERASE_EVERY_S:
                    self.erase_ignored += 1
                    return False
                self._erase, self._erase_s = int(value), now
            elif name in LATEST_WINS:
                self._latest[name] = value
            else:
                raise ValueError(f"unknown request {name!r}")
        return True

    # ------------------------------------------------------------------ the loop's side

    def loop_mode(self, mode: Any) -> None:
        """The mode the loop published in its status (a Mode or its value; else ignored)."""
        try:
            mode = Mode(mode)
        except (ValueError, TypeError):
            return
        with self._lock:
            self._loop_mode = mode

    def poll(self) -> UserInput:
        """The input for this tick (neutral unless armed, consented and fresh) and every
        pending request, once."""
        now = self.clock()
        with self._lock:
            fresh = self._last_s is not None and \
                now + self.horizon_s - self._last_s < self.failsafe_s - EPSILON_S
            if not fresh:
                self._armed = False
            live = fresh and self._armed and self._consented
            if live:
                self.switched_to_user = False
            elif not self.failsafe:  # the failsafe begins
                self._lose_watcher(f"no control for {self.failsafe_s * 1000:.0f} ms")
            steering, throttle = (self._steering, self._throttle) if live else (0.0, 0.0)
            fields: dict[str, Any] = dict(self._latest)
            self._latest.clear()
            if "estop" in self._flags:
                fields["estop"] = True  # an e-stop wins over a clear in the same poll
            elif "clear_estop" in self._flags:
                fields["clear_estop"] = True
            self._flags.clear()
            if self._erase:
                fields["erase_last"], self._erase = self._erase, 0
            if "mode" in fields:
                self._loop_mode = fields["mode"]  # the loop applies it this tick
            self.failsafe = not live
            self.failsafe_polls += not live
        return UserInput(steering, throttle, **fields)

    # ------------------------------------------------------------------ under the lock

    def _reset_input(self) -> None:
        self._steering, self._throttle, self._last_s = 0.0, 0.0, None
        self._armed = False

    def _lose_watcher(self, why: str) -> None:
        """Request user mode if a pilot drives and somebody had been watching."""
        mode = self._latest.get("mode", self._loop_mode)  # a pending request counts too
        if not self.supervised or mode is None or mode is Mode.USER:
            return
        self._latest["mode"] = Mode.USER
        self.switched_to_user = True
        self.mode_switches += 1
        log.warning("web: %s while the car was in %s mode: switching to user mode, the car "
                    "stops (choose the mode again on the page)", why, mode.value)
