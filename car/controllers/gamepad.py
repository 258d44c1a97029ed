"""The ``gamepad`` controller: a gamepad on the Linux joystick interface (``/dev/input/js*``).

``joystick.py`` reads the device's events; ``gamepad_layout.py`` maps axes and buttons to
steering, throttle and actions (the default controls are listed there and in
``docs/gamepad.md``). ``gamepad.*`` numbers ≥ 0 in car.toml override the layout's; ``layout =
"custom"`` takes them all from there. Buttons act once per press. Axes go through the
deadzone, then expo.

A gamepad unplugged reads neutral, and a pilot mode drops back to user, since the e-stop
button went with it; a reader thread reopens the device every 0.5 s and carries on when it
is back, the throttle counting once the stick has read neutral. Idle sticks send nothing,
so silence is not a fault: a Bluetooth pad out of range is only seen when the kernel drops
it (its supervision timeout, 5 to 20 s).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections import Counter
from collections.abc import Callable
from typing import IO

from car.config import GamepadConfig
from car.controllers.gamepad_layout import Controls, resolve_layout, shape
from car.controllers.joystick import (
    EVENT,
    JoystickState,
    device_name,
    open_joystick,
    open_problem,
)
from car.frames import Mode, UserInput

__all__ = [  # the layout's and the device's names are importable from here too
    "EVENT", "READ_WAIT_S", "RETRY_S", "Controls", "GamepadController", "JoystickState",
    "device_name", "open_joystick", "open_problem", "resolve_layout", "shape",
]

log = logging.getLogger(__name__)
RETRY_S = 0.5  # how often a lost or missing gamepad is looked for
READ_WAIT_S = 0.1  # the longest wait in select, so a stop request is seen promptly
MODE_CYCLE = (Mode.USER, Mode.LOCAL_ANGLE, Mode.LOCAL)


class GamepadController:
    """``poll`` → the sticks' steering and throttle and the buttons' requests, each press
    delivered once. ``start_mode`` is requested on the first poll and starts the mode cycle;
    ``recording`` starts the record toggle (the loop records from the start when it has a
    recorder). A reader thread follows the device; ``connected`` and ``fault`` say whether
    it is there."""

    def __init__(self, config: GamepadConfig, *, erase_count: int = 100,
                 start_mode: Mode | None = None, recording: bool = True,
                 open_device: Callable[[str], IO[bytes]] | None = None,
                 retry_s: float = RETRY_S):
        self.controls = Controls.from_config(config)
        self.path = config.device
        self.erase_count = erase_count
        self.retry_s = retry_s
        self._open = open_device or open_joystick
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()  # close() wakes the reader's select with it
        self._state = JoystickState()
        self._presses: Counter[str] = Counter()
        self._mode = Mode(start_mode or Mode.USER)
        self._mode_request = None if start_mode is None else Mode(start_mode)
        self._recording = recording
        self._file: IO[bytes] | None = None
        self.connected = False
        self._armed = False  # throttle counts once the stick has read neutral
        self.fault: str | None = None
        self.name: str | None = None
        self.events = 0
        self.disconnects = 0
        self.reconnects = 0
        self._ever_connected = self._connect()
        if not self._ever_connected:
            log.warning("%s", self.fault)
        self._thread = threading.Thread(target=self._run, name="gamepad", daemon=True)
        self._thread.start()

    def poll(self, now_s: float) -> UserInput:
        with self._lock:
            presses, self._presses = self._presses, Counter()
            for _ in range(presses["mode"]):
                self._mode = MODE_CYCLE[(MODE_CYCLE.index(self._mode) + 1) % len(MODE_CYCLE)]
                self._mode_request = self._mode
            mode, self._mode_request = self._mode_request, None
            if presses["record"] % 2:
                self._recording = not self._recording
            steering = throttle = 0.0
            if self.connected:
                steering = self.controls.steering(self._state)
                throttle = self.controls.throttle(self._state) if self._armed else 0.0
        return UserInput(steering, throttle, mode=mode, estop=presses["estop"] > 0,
                         clear_estop=presses["clear_estop"] > 0 and not presses["estop"],
                         recording=self._recording if presses["record"] else None,
                         erase_last=presses["erase"] * self.erase_count)

    def close(self) -> None:
        """Stop the reader thread (it closes the device)."""
        if self._stop.is_set():
            return
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def __enter__(self) -> GamepadController:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the reader thread

    def _connect(self) -> bool:
        try:
            file = self._open(self.path)
        except OSError as exc:
            if self.fault is None:  # the first problem stands (a loss keeps its reason)
                self.fault = open_problem(self.path, exc)
            return False
        name = device_name(file)
        with self._lock:
            self._file, self._state, self.name = file, JoystickState(), name
            self.connected, self.fault = True, None
            self._armed = False
        return True

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._file is not None:
                    self._read(self._file)
                elif self._connect():
                    what = "reconnected" if self._ever_connected else "connected"
                    self._ever_connected = True
                    self.reconnects += 1
                    log.warning("gamepad %s: %s at %s", what, self.name or "unnamed", self.path)
                else:
                    self._stop.wait(self.retry_s)
        finally:
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()

    def _read(self, file: IO[bytes]) -> None:
        fd = file.fileno()
        try:
            if fd not in select.select([fd, self._wake_r], [], [], READ_WAIT_S)[0]:
                return
            data = os.read(fd, 64 * EVENT.size)
        except OSError as exc:
            self._lose(exc.strerror or str(exc))
            return
        if not data:
            self._lose("the device closed")
            return
        with self._lock:
            before = self._state.events
            for number in self._state.feed(data):
                action = self.controls.actions.get(number)
                if action is not None:
                    self._presses[action] += 1
            self.events += self._state.events - before
            if not self._armed:  # (re)connected: the throttle counts once the stick has read
                self._armed = self.controls.throttle(self._state) == 0.0  # neutral, so one
                # held when the pad comes back cannot drive off

    def _lose(self, reason: str) -> None:
        with self._lock:
            file, self._file = self._file, None
            self.connected = False
            self.fault = f"gamepad at {self.path} lost ({reason})"
            self.disconnects += 1
            dropped = self._mode != Mode.USER
            if dropped:  # its e-stop button is gone: the pilot must not keep driving
                self._mode = self._mode_request = Mode.USER
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()
        log.warning("%s: steering and throttle neutral%s until it is back", self.fault,
                    ", mode back to user," if dropped else "")
