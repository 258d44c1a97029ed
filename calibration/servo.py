"""Steering servo and ESC calibration through the MCU or a PCA9685 board: step a pulse with
keys, mark the ends and the middle, and get the values for ``[steering]`` or ``[throttle]``
in car.toml.

A session holds one channel at the pulse being tried (the other at its neutral), setting
both every 50 ms from a heartbeat thread so the MCU's watchdog never trips while the user
thinks (``calibration.outputs`` holds the two kinds of ``PulseOutput``). The MCU is configured with
the calibrated channel's limits opened to 500–2500 µs for the session; the pulse never
leaves that range.

Keys (one character each; arrow keys work in a terminal):

- ``a`` / ``d`` (← / →): -10 / +10 µs; ``A`` / ``D``: -50 / +50 µs; ``0``: back to the middle;
- steering: ``l`` marks full left, ``r`` full right, ``c`` the centre (straight ahead);
- throttle: ``b`` marks full reverse, ``f`` full forward, ``n`` neutral (stopped); ``x`` plays
  the reverse double-tap most car ESCs need (reverse, neutral, reverse) at the current pulse;
- ``w`` writes the marks and ends; ``q`` ends without writing; ``?`` shows the keys.

While the output is down (the MCU link reconnects by itself; the PCA9685 is set up again at
the next transfer that succeeds) the pulse goes back to the middle and stepping and marking
keys are refused, so a mark is always a pulse the servo really had.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TextIO

from car.config import ActuatorConfig, SteeringConfig, ThrottleConfig
from car.errors import CarError
from car.mcu import protocol as p
from car.mcu.pulses import PulseMap

PULSE_MIN_US, PULSE_MAX_US = 500, 2500
HEARTBEAT_S = 0.05
DOUBLE_TAP_S = 0.15
STEPS = {"a": -10, "d": 10, "A": -50, "D": 50}


@dataclass(frozen=True)
class ChannelSpec:
    """What a session calibrates: the config section, its three keys (the -1 end, the middle,
    the +1 end) and the mark key for each."""

    section: str
    keys: tuple[str, str, str]
    marks: dict[str, str]  # key press -> config key
    words: dict[str, str]  # config key -> what it means, for the prompt


STEERING = ChannelSpec(
    "steering", ("left_us", "center_us", "right_us"),
    {"l": "left_us", "c": "center_us", "r": "right_us"},
    {"left_us": "full left", "center_us": "straight ahead", "right_us": "full right"})
THROTTLE = ChannelSpec(
    "throttle", ("reverse_us", "neutral_us", "forward_us"),
    {"b": "reverse_us", "n": "neutral_us", "f": "forward_us"},
    {"reverse_us": "full reverse", "neutral_us": "stopped", "forward_us": "full forward"})
SPECS = {"steering": STEERING, "throttle": THROTTLE}


def check_marks(spec: ChannelSpec, values: dict[str, int]) -> None:
    """Raise CarError unless the three pulses are in 500–2500 µs with the middle strictly
    between the ends (which also refuses left == right)."""
    low, mid, high = (values[k] for k in spec.keys)
    for key in spec.keys:
        if not PULSE_MIN_US <= values[key] <= PULSE_MAX_US:
            raise CarError(f"{spec.section}.{key} = {values[key]} µs is outside "
                           f"{PULSE_MIN_US}-{PULSE_MAX_US} µs")
    if low == high:
        raise CarError(f"{spec.section}.{spec.keys[0]} and {spec.keys[2]} are both {low} µs; "
                       "the two ends must differ")
    if not (low < mid < high or low > mid > high):
        raise CarError(f"{spec.section}.{spec.keys[1]} = {mid} µs must lie strictly between "
                       f"{spec.keys[0]} = {low} and {spec.keys[2]} = {high}")


class PulseOutput(Protocol):
    """Where a session's pulses go: ``drive`` sets both channels; ``fault`` says why the
    output cannot be trusted now (or None); ``heartbeat_s`` is how often to repeat."""

    @property
    def fault(self) -> str | None: ...

    @property
    def heartbeat_s(self) -> float: ...

    def drive(self, steering_us: int, throttle_us: int) -> None: ...


class ServoSession:
    """One interactive calibration of one channel over an open ``PulseOutput``."""

    def __init__(self, link: PulseOutput, spec: ChannelSpec,
                 start: SteeringConfig | ThrottleConfig, other_neutral_us: int,
                 out: TextIO):
        self.link = link
        self.spec = spec
        self.values = {k: int(getattr(start, k)) for k in spec.keys}
        self.pulse = self.values[spec.keys[1]]
        self.other_neutral_us = other_neutral_us
        self.out = out
        self._lock = threading.Lock()
        self._faulted = False  # the link was down at the last heartbeat
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="calibrate", daemon=True)

    def _drive(self, pulse: int) -> None:
        if self.spec is STEERING:
            self.link.drive(pulse, self.other_neutral_us)
        else:
            self.link.drive(self.other_neutral_us, pulse)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.link.heartbeat_s):
            fault = self.link.fault
            with self._lock:
                if fault is not None and not self._faulted:
                    self._faulted = True  # back to the middle: no surprise on reconnect
                    self.pulse = self.values[self.spec.keys[1]]
                    self._say(f"{fault}; the pulse is back at the middle ({self.pulse} µs) "
                              "and keys wait until the output is back")
                elif fault is None and self._faulted:
                    self._faulted = False
                    self._say(f"the output is back; pulse {self.pulse} µs")
                self._drive(self.pulse)

    def run(self, keys: Iterable[str]) -> dict[str, int] | None:
        """Apply key presses until ``w`` (returns the marks) or ``q`` / the end of input
        (returns None). The output goes neutral when it ends."""
        self._say(f"{self.spec.section}: pulse {self.pulse} µs. " + self.help())
        self._beat.start()
        try:
            for key in keys:
                done, result = self.press(key)
                if done:
                    return result
            self._say("input ended without `w`: nothing written")
            return None
        finally:
            self._stop.set()
            self._beat.join(timeout=1.0)
            self._drive(self.values[self.spec.keys[1]])

    def press(self, key: str) -> tuple[bool, dict[str, int] | None]:
        """One key; (finished, marks to write)."""
        spec = self.spec
        if (key in STEPS or key in spec.marks or key in "0x") and self.link.fault is not None:
            self._say(f"ignored {key!r}: {self.link.fault}")
            return False, None
        if key in STEPS:
            self._set(self.pulse + STEPS[key])
        elif key == "0":
            self._set(self.values[spec.keys[1]])
        elif key in spec.marks:
            name = spec.marks[key]
            self.values[name] = self.pulse
            self._say(f"marked {spec.section}.{name} = {self.pulse} µs ({spec.words[name]})")
        elif key == "x" and spec is THROTTLE:
            self._double_tap()
        elif key == "w":
            try:
                check_marks(spec, self.values)
            except CarError as exc:
                self._say(f"not written: {exc}; mark again, or `q` to quit")
                return False, None
            return True, dict(self.values)
        elif key == "q":
            self._say("quit: nothing written")
            return True, None
        elif key == "?":
            self._say(self.help())
        elif not key.isspace():
            self._say(f"unknown key {key!r}; `?` shows the keys")
        return False, None

    def _set(self, pulse: int) -> None:
        with self._lock:
            self.pulse = max(PULSE_MIN_US, min(PULSE_MAX_US, pulse))
            self._drive(self.pulse)
        self._say(f"pulse {self.pulse} µs")

    def _double_tap(self) -> None:
        """Reverse, neutral, reverse: most car ESCs brake on the first reverse pulse and
        only reverse after a pause at neutral."""
        neutral = self.values["neutral_us"]
        with self._lock:
            for pulse in (self.pulse, neutral, self.pulse):
                self._drive(pulse)
                time.sleep(DOUBLE_TAP_S)
        self._say(f"double tap: {self.pulse} / {neutral} / {self.pulse} µs")

    def help(self) -> str:
        marks = ", ".join(f"{k} = {self.spec.words[v]}" for k, v in self.spec.marks.items())
        extra = ", x = reverse double-tap" if self.spec is THROTTLE else ""
        return (f"keys: a/d = -/+10 µs, A/D = -/+50 µs, 0 = middle, {marks}{extra}, "
                "w = write, q = quit")

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def session_config(actuator: ActuatorConfig, spec: ChannelSpec,
                   steering: SteeringConfig, throttle: ThrottleConfig) -> p.Config:
    """The CONFIG for a session: the calibrated channel opened to 500–2500 µs around its
    current middle; the other channel at its calibrated limits."""
    pulses = PulseMap.from_sections(steering, throttle)
    s, t = pulses.steering.limits, pulses.throttle.limits
    if spec is STEERING:
        s = (PULSE_MIN_US, s[1], PULSE_MAX_US)
    else:
        t = (PULSE_MIN_US, t[1], PULSE_MAX_US)
    return p.Config(actuator.timeout_ms, *s, *t, 0)


def read_keys(stream: TextIO) -> Iterable[str]:
    """Key presses from a terminal (one at a time, arrow keys as ``a``/``d``) or, from a
    pipe or file, every character of every line (so a script can type ``dddl``)."""
    if not stream.isatty():
        for line in stream:
            yield from line.strip()
        return
    import termios
    import tty

    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        while True:
            key = stream.read(1)
            if not key:
                return
            if key == "\x1b" and stream.read(1) == "[":
                key = {"D": "a", "C": "d"}.get(stream.read(1), "")
            yield key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
