"""What a donkey simulator reports, in our units: one telemetry message as ``Telemetry``, its
camera image as an RGB array, and laps from its start-line messages."""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from car.sim.donkey import messages as m
from car.sim.donkey.wire import number


@dataclass(frozen=True)
class Telemetry:
    """One telemetry message, in our units and frame (positions in the simulator's units)."""

    seq: int
    received_s: float  # time.monotonic() on arrival
    time_s: float  # the simulator's clock (NaN if it sends none)
    x: float
    y: float
    yaw: float  # radians, counter-clockwise from +x
    speed: float
    cte: float
    hit: str
    active_node: int | None
    steering: float
    throttle: float


def read_telemetry(message: dict[str, Any], seq: int, received_s: float) -> Telemetry:
    """A telemetry message's numbers (missing or unreadable ones as 0, or NaN/None where
    the simulator may send none)."""
    node = number(message.get("activeNode"))
    hit = message.get("hit")
    return Telemetry(
        seq=seq, received_s=received_s, time_s=number(message.get("time")),
        x=number(message.get("pos_x"), 0.0), y=number(message.get("pos_z"), 0.0),
        yaw=m.yaw_from_unity(number(message.get("yaw"), 90.0)),
        speed=number(message.get("speed"), 0.0), cte=number(message.get("cte"), 0.0),
        hit=hit if isinstance(hit, str) and hit else "none",
        active_node=None if math.isnan(node) else int(node),
        steering=number(message.get("steering_angle"), 0.0),
        throttle=number(message.get("throttle"), 0.0))


def decode_image(text: Any) -> np.ndarray | None:
    """A telemetry image (base64 of a PNG or JPEG) as BGR, or None if it does not decode."""
    if not isinstance(text, str):
        return None
    try:
        raw = np.frombuffer(base64.b64decode(text, validate=True), np.uint8)
        return cv2.imdecode(raw, cv2.IMREAD_COLOR) if raw.size else None
    except (binascii.Error, ValueError):
        return None


class LapCounter:
    """Laps from the start line. The Unity sim sends ``collision_with_starting_line`` with its
    clock, and a lap is the time between two crossings; sims that send only ``cross_start``
    carry the lap time in it."""

    def __init__(self) -> None:
        self.laps = 0
        self.lap_times_s: list[float] = []
        self._start: float | None = None
        self._line_seen = False  # the sim sends collision_with_starting_line

    def line_crossed(self, stamp: float) -> None:
        """``collision_with_starting_line`` at the simulator's time ``stamp``."""
        self._line_seen = True
        if math.isnan(stamp):
            return
        if self._start is not None and stamp > self._start:
            self._count(stamp - self._start)
        self._start = stamp

    def cross_start(self, lap_s: float) -> None:
        """``cross_start`` with its lap time (ignored when the line's messages come too)."""
        if not self._line_seen and lap_s > 0:
            self._count(lap_s)

    def restart(self) -> None:
        """The car is back behind the line: the next crossing starts a lap."""
        self._start = None

    def reset(self) -> None:
        """A new connection: nothing known about which messages this simulator sends."""
        self._start, self._line_seen = None, False

    def _count(self, lap_s: float) -> None:
        self.laps += 1
        self.lap_times_s.append(lap_s)
