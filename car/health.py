"""A device's health report for the run summary: plain data under a key, and one line for
people. Devices give one through their Protocol (``Actuator.health()``, ``World.health()``),
so the summary never asks which kind of device it has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Health:
    """``key`` names the summary section (``mcu``, ``donkey``), ``data`` fills it, and
    ``line`` says it in one line for the text summary."""

    key: str
    data: dict[str, Any]
    line: str
