"""What flows through the drive loop: camera Frames in, Commands out, the user's input
beside them, and the driving mode that decides who owns the actuators.

Normalised steering and throttle are in [-1, 1]; steering +1 is full right, throttle +1 is
full forward. Times are ``time.monotonic()`` seconds (or a simulator's clock in lock-step).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


class Mode(str, Enum):
    """Who drives: the user, the pilot steering with the user's throttle, or the pilot."""

    USER = "user"
    LOCAL_ANGLE = "local_angle"
    LOCAL = "local"


@dataclass(frozen=True)
class Frame:
    """One camera image, (H, W, 3) uint8 RGB, with its capture time and sequence number.
    A frame replayed from a tub also carries its record ``index`` and ``session`` id (where
    they break, a temporal pilot starts afresh: ``car.temporal``)."""

    image: np.ndarray
    time_s: float
    seq: int
    index: int | None = None
    session: str | None = None


@dataclass(frozen=True)
class Command:
    """What the actuators are told to do, normalised. ``estop``: the outputs are neutral
    because of an emergency stop (the MCU latches it)."""

    steering: float = 0.0
    throttle: float = 0.0
    estop: bool = False


NEUTRAL = Command()
ESTOP = Command(estop=True)


@dataclass(frozen=True)
class UserInput:
    """What a controller (web page, gamepad, RC transmitter, script) says this tick.

    ``mode``, ``recording`` and ``throttle_limit`` are requests (None: no change); ``estop``
    latches the emergency stop, ``clear_estop`` releases it; ``erase_last`` > 0 soft-deletes
    that many of the last records.
    """

    steering: float = 0.0
    throttle: float = 0.0
    mode: Mode | None = None
    estop: bool = False
    clear_estop: bool = False
    recording: bool | None = None
    erase_last: int = 0
    throttle_limit: float | None = None
