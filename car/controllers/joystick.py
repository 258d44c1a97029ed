"""The Linux joystick interface (``/dev/input/js*``, linux/joystick.h): its events, the
axes and buttons they report, and opening and naming the device."""

from __future__ import annotations

import fcntl
import struct
from dataclasses import dataclass
from typing import IO

# struct js_event (linux/joystick.h): __u32 time (ms), __s16 value, __u8 type, __u8 number
EVENT = struct.Struct("<IhBB")
JS_EVENT_BUTTON = 0x01
JS_EVENT_AXIS = 0x02
JS_EVENT_INIT = 0x80  # or-ed into the synthetic events that report the state at open
AXIS_MAX = 32767
JSIOCGNAME = (2 << 30) | (128 << 16) | (ord("j") << 8) | 0x13  # _IOC(READ, 'j', 0x13, 128)


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
