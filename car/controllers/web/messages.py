"""The page's messages to the car: JSON text over the WebSocket, checked and clamped here.

Every message is an object with a ``type``:

- ``control``: ``steering`` and ``throttle`` in [-1, 1] (steering +1 = full right); the page
  sends one every 40 ms while it is visible (one neutral one when it is hidden, then none),
  and it doubles as the heartbeat the failsafe watches: the input counts once two arrive
  within ``failsafe_ms`` of each other, and for a new owner only after one neutral one
  (|steering| and |throttle| < 0.05);
- ``mode`` (``mode``: user, local_angle or local), ``record`` (``on``: true or false),
  ``erase`` (the last ``record.erase_count`` records; at most one per 3 s),
  ``throttle_limit`` (``value`` in [0, 1]), ``estop`` and ``clear_estop``: one-shot
  requests, coalesced per kind until the loop's next poll (the latest mode, recording and
  limit win; an e-stop is delivered with the very next poll and wins over a clear);
- ``take_over``: a watcher asks to drive (the page's Take control button); see
  ``owners.py`` for when it is granted.

A number outside its range is clamped (and reported); anything else that is wrong raises
BadMessage with a message that says what was expected. More than 200 messages within 1 s
close the socket.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from car.frames import Mode

TYPES = ("control", "mode", "record", "erase", "throttle_limit", "estop", "clear_estop",
         "take_over")
MODES = ", ".join(m.value for m in Mode)


class BadMessage(ValueError):
    """A message that cannot be used: not JSON, an unknown type, a missing or bad field."""


@dataclass(frozen=True)
class Message:
    """A checked message. ``kind``: "control", "take_over", or the UserInput field it
    requests (mode, recording, erase_last, throttle_limit, estop, clear_estop) with its
    ``value``."""

    kind: str
    steering: float = 0.0
    throttle: float = 0.0
    value: Any = None
    clamped: tuple[str, ...] = ()  # what was clamped, for the sender


def parse_message(text: str, erase_count: int) -> Message:
    """Check one message from the page; raises BadMessage."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise BadMessage('not JSON: send an object like {"type": "control", "steering": 0, '
                         '"throttle": 0}') from None
    if not isinstance(data, dict):
        raise BadMessage(f"expected a JSON object with a 'type', got {_show(data)}")
    kind = data.get("type")
    if kind == "control":
        steering, c1 = _number(data, kind, "steering", -1.0, 1.0)
        throttle, c2 = _number(data, kind, "throttle", -1.0, 1.0)
        return Message("control", steering, throttle, clamped=c1 + c2)
    if kind == "mode":
        try:
            return Message("mode", value=Mode(data.get("mode")))
        except ValueError:
            raise BadMessage(f"'mode' must be one of {MODES}, got "
                             f"{_show(data.get('mode'))}") from None
    if kind == "record":
        on = data.get("on")
        if not isinstance(on, bool):
            raise BadMessage(f"record message: 'on' must be true or false, got {_show(on)}")
        return Message("recording", value=on)
    if kind == "erase":
        return Message("erase_last", value=erase_count)
    if kind == "throttle_limit":
        value, clamped = _number(data, kind, "value", 0.0, 1.0)
        return Message("throttle_limit", value=value, clamped=clamped)
    if kind in ("estop", "clear_estop", "take_over"):
        return Message(kind, value=True)
    raise BadMessage(f"unknown message type {_show(kind)}: expected one of {', '.join(TYPES)}")


def _number(data: dict[str, Any], kind: str, key: str, lo: float, hi: float
            ) -> tuple[float, tuple[str, ...]]:
    if key not in data:
        raise BadMessage(f"{kind} message without '{key}' (a number in [{lo:g}, {hi:g}])")
    raw = data[key]
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise BadMessage(f"{kind} message: '{key}' must be a number, got {_show(raw)}")
    try:
        value = float(raw)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise BadMessage(f"{kind} message: '{key}' must be a finite number, got {value}")
    if lo <= value <= hi:
        return value, ()
    clamped = min(hi, max(lo, value))
    return clamped, (f"{key} {value:g} is outside [{lo:g}, {hi:g}]: clamped to {clamped:g}",)


def _show(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
