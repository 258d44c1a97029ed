"""Shared builders for the simulator tests."""

from __future__ import annotations

import math

import numpy as np
import pytest

from car.cli import main
from car.sim.track import Track, build_track
from car.sim.vehicle import VehicleParams

TURN_RADIUS_M = VehicleParams.from_config().turn_radius_m


def circle_points(radius_m: float, count: int = 36, clockwise: bool = False) -> list[list[float]]:
    angles = np.linspace(0, math.tau, count, endpoint=False)
    if clockwise:
        angles = -angles
    return [[radius_m * math.cos(a), radius_m * math.sin(a)] for a in angles]


def circle_track(radius_m: float = 3.0, width_m: float = 1.0, clockwise: bool = False) -> Track:
    return build_track("circle", width_m, circle_points(radius_m, clockwise=clockwise),
                       min_turn_radius_m=TURN_RADIUS_M, where="test circle")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`car ARGV` in this process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
