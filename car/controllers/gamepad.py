"""The ``gamepad`` controller: a gamepad on the Linux joystick interface (``/dev/input/js*``).

Default controls, in the same places on every layout (see ``docs/gamepad.md``):

=================  ==========  ==========  ============================================
control            xbox        ps4, ps5    does
=================  ==========  ==========  ============================================
left stick X       axis 0      axis 0      steering (right = +1)
right stick Y      axis 4      axis 4      throttle (up = forward)
A / cross          button 0    button 0    recording on / off
B / circle         button 1    button 1    emergency stop (latched)
Y / triangle       button 3    button 2    clear the emergency stop
X / square         button 2    button 3    erase the last ``record.erase_count`` records
START / options    button 7    button 9    mode: user → local_angle → local → user
=================  ==========  ==========  ============================================

``gamepad.*`` numbers ≥ 0 in car.toml override the layout's; ``layout = "custom"`` takes
them all from there. Buttons act once per press. Axes go through the deadzone, then expo.

A gamepad unplugged reads neutral, and a pilot mode drops back to user, since the e-stop
button went with it; a reader thread reopens the device every 0.5 s and carries on when it
is back, the throttle counting once the stick has read neutral. Idle sticks send nothing,
so silence is not a fault: a Bluetooth pad out of range is only seen when the kernel drops
it (its supervision timeout, 5 to 20 s).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import select
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import IO

from car.config import GamepadConfig
from car.errors import ConfigError
from car.frames import Mode, UserInput

log = logging.getLogger(__name__)

# struct js_event (linux/joystick.h): __u32 time (ms), __s16 value, __u8 type, __u8 number
EVENT = struct.Struct("<IhBB")
JS_EVENT_BUTTON = 0x01
JS_EVENT_AXIS = 0x02
JS_EVENT_INIT = 0x80  # or-ed into the synthetic events that report the state at open
AXIS_MAX = 32767
JSIOCGNAME = (2 << 30) | (128 << 16) | (ord("j") << 8) | 0x13  # _IOC(READ, 'j', 0x13, 128)
RETRY_S = 0.5  # how often a lost or missing gamepad is looked for
READ_WAIT_S = 0.1  # the longest wait in select, so a stop request is seen promptly
MODE_CYCLE = (Mode.USER, Mode.LOCAL_ANGLE, Mode.LOCAL)
AXIS_KEYS = ("steering_axis", "throttle_axis")
BUTTON_KEYS = ("button_mode", "button_record", "button_erase", "button_estop",
               "button_clear_estop")


@dataclass(frozen=True)
class JsEvent:
    """One kernel joystick event; ``init``: part of the state reported when the device opens."""

    time_ms: int
    value: int
    type: int
    number: int

    @property
    def init(self) -> bool:
        return bool(self.type & JS_EVENT_INIT)

    @property
    def kind(self) -> int:
        return self.type & ~JS_EVENT_INIT


class JoystickState:
    """Axes (raw, ±32767) and buttons as the events say. ``feed`` takes bytes as they come,
    keeping a partial event for the next read."""

    def __init__(self) -> None:
        self.axes: dict[int, int] = {}
        self.buttons: dict[int, bool] = {}
        self.events = 0
        self._partial = b""

    def feed(self, data: bytes) -> list[int]:
        """Apply the whole events in ``data``; return the buttons newly pressed, in order."""
        data = self._partial + data
        whole = len(data) - len(data) % EVENT.size
        self._partial = data[whole:]
        presses = []
        for fields in EVENT.iter_unpack(data[:whole]):
            event = JsEvent(*fields)
            if self.apply(event):
                presses.append(event.number)
        return presses

    def apply(self, event: JsEvent) -> bool:
        """Apply one event; True if it presses a button (the state at open is no press)."""
        self.events += 1
        if event.kind == JS_EVENT_AXIS:
            self.axes[event.number] = event.value
        elif event.kind == JS_EVENT_BUTTON:
            was = self.buttons.get(event.number, False)
            self.buttons[event.number] = event.value != 0
            return event.value != 0 and not was and not event.init
        return False

    def axis(self, number: int) -> float:
        """Axis ``number`` in [-1, 1]; 0 if it never reported."""
        return max(-1.0, min(1.0, self.axes.get(number, 0) / AXIS_MAX))

    def pressed(self) -> list[int]:
        return sorted(n for n, down in self.buttons.items() if down)


def shape(x: float, deadzone: float, expo: float) -> float:
    """0 within ``deadzone``, then rising continuously from its edge to ±1; then expo,
    ``(1 - expo)·x + expo·x³``: the same ends, softer around the centre."""
    magnitude = min(1.0, abs(x))
    if magnitude <= deadzone:
        return 0.0
    magnitude = (magnitude - deadzone) / (1.0 - deadzone)
    return math.copysign((1.0 - expo) * magnitude + expo * magnitude ** 3, x)


@dataclass(frozen=True)
class Layout:
    """Axis and button numbers as a kernel driver reports them, and what each one does.
    ``invert_throttle``: js reports a stick pushed up as negative, and up is forward."""

    name: str
    steering_axis: int
    throttle_axis: int
    invert_steering: bool
    invert_throttle: bool
    button_mode: int
    button_record: int
    button_erase: int
    button_estop: int
    button_clear_estop: int
    axis_names: tuple[str, ...] = ()
    button_names: tuple[str, ...] = ()

    def axis_label(self, number: int) -> str:
        names = self.axis_names
        return f"{number} ({names[number]})" if number < len(names) else str(number)

    def button_label(self, number: int) -> str:
        names = self.button_names
        return f"{number} ({names[number]})" if number < len(names) else str(number)


_STICKS = ("LX", "LY", "LT", "RX", "RY", "RT", "DPAD-X", "DPAD-Y")
_PS_STICKS = ("LX", "LY", "L2", "RX", "RY", "R2", "DPAD-X", "DPAD-Y")
XBOX = Layout("xbox", 0, 4, False, True, button_mode=7, button_record=0, button_erase=2,
              button_estop=1, button_clear_estop=3, axis_names=_STICKS,
              button_names=("A", "B", "X", "Y", "LB", "RB", "BACK", "START", "GUIDE", "LS",
                            "RS"))
PS4 = Layout("ps4", 0, 4, False, True, button_mode=9, button_record=0, button_erase=3,
             button_estop=1, button_clear_estop=2, axis_names=_PS_STICKS,
             button_names=("cross", "circle", "triangle", "square", "L1", "R1", "L2", "R2",
                           "share", "options", "PS", "L3", "R3"))
PS5 = replace(PS4, name="ps5", button_names=(*PS4.button_names[:8], "create",
                                             *PS4.button_names[9:], "touchpad"))
CUSTOM = Layout("custom", -1, -1, False, True, -1, -1, -1, -1, -1)
LAYOUTS = {layout.name: layout for layout in (XBOX, PS4, PS5, CUSTOM)}


def resolve_layout(config: GamepadConfig) -> Layout:
    """The configured layout with car.toml's numbers (≥ 0) over its own, and ``invert_*``
    reversing its directions. A custom layout needs every number."""
    base = LAYOUTS[config.layout]
    numbers = {key: getattr(config, key) for key in (*AXIS_KEYS, *BUTTON_KEYS)
               if getattr(config, key) >= 0}
    missing = [f"gamepad.{key}" for key in (*AXIS_KEYS, *BUTTON_KEYS)
               if getattr(base, key) < 0 and key not in numbers]
    if missing:
        raise ConfigError(f'gamepad.layout = "{base.name}" needs {", ".join(missing)} set '
                          "(each ≥ 0); `car gamepad test` shows your gamepad's numbers")
    layout = replace(base, **numbers,
                     invert_steering=base.invert_steering != config.invert_steering,
                     invert_throttle=base.invert_throttle != config.invert_throttle)
    for kind, keys in (("axis", AXIS_KEYS), ("button", BUTTON_KEYS)):
        taken: dict[int, str] = {}
        for key in keys:
            number = getattr(layout, key)
            if number in taken:
                raise ConfigError(f"gamepad.{taken[number]} and gamepad.{key} are both {kind} "
                                  f"{number} (layout {layout.name}); give one of them another "
                                  "number")
            taken[number] = key
    return layout


class Controls:
    """A layout with the deadzone and expo: joystick state → steering, throttle and actions."""

    def __init__(self, layout: Layout, deadzone: float = 0.05, expo: float = 0.3):
        self.layout = layout
        self.deadzone = deadzone
        self.expo = expo
        self.actions = {getattr(layout, key): key.removeprefix("button_") for key in BUTTON_KEYS}

    @classmethod
    def from_config(cls, config: GamepadConfig) -> Controls:
        return cls(resolve_layout(config), config.deadzone, config.expo)

    def steering(self, state: JoystickState) -> float:
        return self._axis(state, self.layout.steering_axis, self.layout.invert_steering)

    def throttle(self, state: JoystickState) -> float:
        return self._axis(state, self.layout.throttle_axis, self.layout.invert_throttle)

    def _axis(self, state: JoystickState, number: int, invert: bool) -> float:
        x = shape(state.axis(number), self.deadzone, self.expo)
        return -x if invert and x else x

    def describe(self) -> str:
        """The mapping in words, e.g. for `car gamepad test`."""
        layout = self.layout
        buttons = ", ".join(f"{key.removeprefix('button_')} "
                            f"{layout.button_label(getattr(layout, key))}" for key in BUTTON_KEYS)
        return (f"layout {layout.name}: steering axis {layout.axis_label(layout.steering_axis)}, "
                f"right = {'negative' if layout.invert_steering else 'positive'}; throttle axis "
                f"{layout.axis_label(layout.throttle_axis)}, forward = "
                f"{'negative' if layout.invert_throttle else 'positive'}; buttons: {buttons}; "
                f"deadzone {self.deadzone:g}, expo {self.expo:g}")


def open_joystick(path: str) -> IO[bytes]:
    """The joystick device, unbuffered (reads are whole events as the driver delivers them)."""
    return open(path, "rb", buffering=0)


def open_problem(path: str, exc: OSError) -> str:
    """Why ``path`` could not be opened, and what to do, in one line."""
    if isinstance(exc, FileNotFoundError):
        return (f"no gamepad at {path}: plug it in (it will be picked up) or set "
                "gamepad.device")
    if isinstance(exc, PermissionError):
        return (f"no permission to read {path}: add your user to the input group (`sudo "
                "usermod -aG input $USER`, then log in again)")
    return f"cannot open {path}: {exc.strerror or exc}"


def device_name(file: IO[bytes]) -> str | None:
    """The name the driver gives the device (JSIOCGNAME); None if it is not a joystick."""
    buffer = bytearray(128)
    try:
        fcntl.ioctl(file.fileno(), JSIOCGNAME, buffer)
    except (OSError, ValueError, AttributeError):
        return None
    return buffer.split(b"\0", 1)[0].decode("utf-8", "replace") or None


class GamepadController:
    """``poll`` → the sticks' steering and throttle and the buttons' requests, each press
    delivered once. ``start_mode`` is requested on the first poll and starts the mode cycle;
    ``recording`` starts the record toggle (the loop records from the start when it has a
    recorder). A reader thread follows the device; ``connected`` and ``fault`` say whether
    it is there."""

    def __init__(self, config: GamepadConfig, *, erase_count: int = 100,
                 start_mode: Mode | None = None, recording: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 open_device: Callable[[str], IO[bytes]] | None = None,
                 retry_s: float = RETRY_S):
        self.controls = Controls.from_config(config)
        self.path = config.device
        self.erase_count = erase_count
        self.retry_s = retry_s
        self._clock = clock
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
        self.last_event_s: float | None = None
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
        now = self._clock()
        with self._lock:
            before = self._state.events
            for number in self._state.feed(data):
                action = self.controls.actions.get(number)
                if action is not None:
                    self._presses[action] += 1
            self.events += self._state.events - before
            self.last_event_s = now
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
