"""The donkey simulator's messages, both sides (docs/donkey-protocol.md): what a client sends,
how a simulator reads it, and how poses map between our world and Unity's.

Our world: x east, y north, yaw counter-clockwise from +x, metres. Unity's: x east, z north,
y up, left-handed, so a positive yaw about y turns clockwise seen from above, in degrees
0..360 from +z. Positions and speeds go over the wire in metres (the newest Unity builds
divide by 8 to approximate metres too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from car.sim.donkey.wire import number

PROTOCOL_VERSION = "2"
DEFAULT_PORT = 9091
IMAGE_SIZE_RANGE = (16, 1280)  # the frame sizes a client may ask for, per side
CAM_IGNORED = ("fov", "fish_eye_x", "fish_eye_y", "offset_x", "offset_y", "offset_z",
               "rot_x", "rot_y", "rot_z")  # the embedded camera's mount comes from [sim]


def unity_yaw_deg(yaw_rad: float) -> float:
    """Our yaw (radians, counter-clockwise from +x) as Unity's (degrees clockwise from +z)."""
    return (90.0 - math.degrees(yaw_rad)) % 360.0


def yaw_from_unity(yaw_deg: float) -> float:
    return math.remainder(math.radians(90.0 - yaw_deg), math.tau)


def quaternion(yaw_rad: float) -> tuple[float, float, float, float]:
    """(Qx, Qy, Qz, Qw) of a rotation about Unity's up axis to our yaw."""
    half = math.radians(unity_yaw_deg(yaw_rad)) / 2.0
    return 0.0, math.sin(half), 0.0, math.cos(half)


def yaw_from_quaternion(qx: float, qy: float, qz: float, qw: float) -> float:
    """Our yaw from a Unity rotation (its heading; pitch and roll are dropped). Any non-zero
    quaternion is normalised first, as Unity does."""
    norm = math.hypot(qx, qy, qz, qw)  # no overflow, even for huge components
    if norm > 0.0:
        qx, qy, qz, qw = qx / norm, qy / norm, qz / norm, qw / norm
    # Unity's forward (0, 0, 1) rotated by the quaternion, projected on the ground.
    fx = 2.0 * (qx * qz + qw * qy)
    fz = 1.0 - 2.0 * (qx * qx + qy * qy)
    return math.atan2(fz, fx)


# -- what a client sends (strings, as gym-donkeycar does: the Unity sim parses strings) ------

def text(value: float) -> str:
    """A number as the simulator parses it: a string with a dot decimal separator."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"the donkey simulator takes finite numbers, not {value}")
    return repr(value)


def control(steering: float, throttle: float, brake: float = 0.0) -> dict[str, Any]:
    return {"msg_type": "control", "steering": text(steering), "throttle": text(throttle),
            "brake": text(brake)}


def car_config(name: str, body_style: str = "donkey",
               rgb: tuple[int, int, int] = (255, 72, 0)) -> dict[str, Any]:
    return {"msg_type": "car_config", "body_style": body_style, "body_r": str(rgb[0]),
            "body_g": str(rgb[1]), "body_b": str(rgb[2]), "car_name": name[:63],
            "font_size": "100"}


def cam_config(width: int, height: int) -> dict[str, Any]:
    """The camera size; every other field 0, which keeps the simulator's default."""
    message: dict[str, Any] = {"msg_type": "cam_config", "fov": "0", "fish_eye_x": "0.0",
                               "fish_eye_y": "0.0", "img_w": str(width), "img_h": str(height),
                               "img_d": "3", "img_enc": "JPG"}
    message.update({k: "0.0" for k in ("offset_x", "offset_y", "offset_z", "rot_x", "rot_y",
                                       "rot_z")})
    return message


def step_mode(synchronous: bool, time_step_s: float) -> dict[str, Any]:
    return {"msg_type": "step_mode", "step_mode": "synchronous" if synchronous else "asynchronous",
            "time_step": text(time_step_s)}


# -- how a simulator reads them ---------------------------------------------------------------

@dataclass(frozen=True)
class Control:
    steering: float
    throttle: float
    brake: float


def parse_control(message: dict[str, Any]) -> Control | str:
    """A control message (strings or numbers, comma decimals accepted), clipped to range; or
    why it cannot be used."""
    values = [number(message.get(k)) for k in ("steering", "throttle")]
    brake = number(message.get("brake", 0.0))
    if any(math.isnan(v) for v in (*values, brake)):
        return ("control needs finite numbers for steering and throttle (and brake, if "
                f"given): {_short(message)}")
    steering, throttle = (min(1.0, max(-1.0, v)) for v in values)
    return Control(steering, throttle, min(1.0, max(0.0, brake)))


@dataclass(frozen=True)
class CamRequest:
    width: int | None  # None: keep the current size
    height: int | None
    encoding: str  # "JPG" or "PNG"
    ignored: tuple[str, ...]  # fields asking for what the embedded camera cannot change


def parse_cam_config(message: dict[str, Any], encoding: str) -> CamRequest | str:
    """A cam_config message; 0 (or absent) keeps the current value, as in the Unity sim."""
    width, height = (number(message.get(k, 0), 0.0) for k in ("img_w", "img_h"))
    low, high = IMAGE_SIZE_RANGE
    size: tuple[int | None, int | None] = (None, None)
    if width and height:
        if width != int(width) or height != int(height) or \
                not (low <= width <= high and low <= height <= high):
            return (f"cam_config img_w x img_h = {message.get('img_w')} x "
                    f"{message.get('img_h')}: each must be a whole number from {low} to "
                    f"{high}; the size is unchanged")
        size = (int(width), int(height))
    enc = str(message.get("img_enc", "0")).upper()
    if len(enc) == 3:  # the Unity sim applies only a 3-letter name
        if enc not in ("JPG", "PNG"):
            return f"cam_config img_enc {enc!r}: this simulator sends JPG or PNG"
        encoding = enc
    ignored = tuple(k for k in CAM_IGNORED if number(message.get(k, 0), 0.0) != 0.0)
    return CamRequest(size[0], size[1], encoding, ignored)


def _short(message: dict[str, Any]) -> str:
    text_ = str(message)
    return text_ if len(text_) <= 120 else text_[:117] + "..."
