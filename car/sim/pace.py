"""The two paces of the embedded simulator's expert, and what each changes.

- **cruise** (the default): the expert follows its line at ``sim.expert_speed_mps`` with a
  gentle grip budget, and the autopilot's throttle is capped by ``drive.max_throttle``.
- **race**: the expert drives the racing line at the car's grip limit (``car.sim.raceline``),
  and the throttle cap is lifted to 1 for the model and the expert alike.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from car.config import Config
from car.errors import SimError
from car.sim.track import Track
from car.sim.vehicle import VehicleParams, VehicleState

PACES = ("cruise", "race")
DEFAULT_PACE = "cruise"


class Driver(Protocol):
    """An expert: the clean (steering, throttle) for the car's true state."""

    def act(self, state: VehicleState, period_s: float) -> tuple[float, float]: ...

    def reset(self) -> None: ...

    def planned_lap_s(self) -> float: ...


def check_pace(pace: str) -> str:
    if pace not in PACES:
        raise SimError(f"pace '{pace}' is not one of {', '.join(PACES)}")
    return pace


def pace_config(config: Config, pace: str) -> Config:
    """The configuration a run at ``pace`` uses: at race pace the throttle is uncapped."""
    if check_pace(pace) == "race" and config.drive.max_throttle < 1.0:
        return dataclasses.replace(config, drive=dataclasses.replace(config.drive,
                                                                     max_throttle=1.0))
    return config


def make_expert(track: Track, params: VehicleParams, config: Config, pace: str) -> Driver:
    """The expert for ``pace`` on ``track`` with the car ``params``."""
    from car.sim.expert import Expert

    if check_pace(pace) == "cruise":
        return Expert(track, params, config.sim.expert_speed_mps, line_m=config.sim.expert_line_m)
    from car.sim.race_expert import RacingExpert

    return RacingExpert.on_track(track, params, config.sim)
