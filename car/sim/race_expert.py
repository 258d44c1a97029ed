"""The racing expert: the racing line (``car.sim.raceline``) at the speed its profile plans,
on the grip limit the profile leaves room for (``sim.race_grip`` of mu · g).

Like the cruise expert it sees the true state and aims from where the car will be when the
command reaches the wheels (the actuation delay and half a period ahead, predicted with the
yaw rate and the sideways slip). Steering is pure pursuit on the line with the understeer
gradient added for the lateral acceleration the arc asks for. Throttle is the profile's
planned acceleration a moment ahead plus a proportional speed correction, turned into a
throttle by inverting the ESC model (drive or brake, with drag and rolling resistance).
"""

from __future__ import annotations

import math

from car.config import SimConfig
from car.sim.raceline import RacingLine, racing_line
from car.sim.track import Track
from car.sim.vehicle import ROLLING_MPS2, VehicleParams, VehicleState

SPEED_GAIN = 2.0  # m/s² of correction per m/s of speed error
LOOKAHEAD_MIN_M = 0.3
LOOKAHEAD_PER_MPS = 0.22  # seconds of travel the pursuit point lies ahead (plus the minimum)
PLAN_AHEAD_S = 0.12  # the speed target is read this far ahead: the ESC takes time to act


class RacingExpert:
    """Drives ``line`` on ``track`` with the car ``params``."""

    def __init__(self, track: Track, params: VehicleParams, line: RacingLine):
        self.track = track
        self.params = params
        self.line = line
        chassis = params.chassis()
        dynamic = params.model == "dynamic"
        self.understeer = chassis.understeer_gradient() if dynamic else 0.0
        self._rear_m = chassis.rear_m
        # Cornering drag: a tyre slipping at angle a behind a lateral force pulls back with it.
        self._drag_per_lateral2 = chassis.cornering_drag_per_lateral2() if dynamic else 0.0
        self._hint: int | None = None

    @classmethod
    def on_track(cls, track: Track, params: VehicleParams, sim: SimConfig) -> RacingExpert:
        return cls(track, params, racing_line(track, params, sim.race_margin_m, sim.race_grip))

    def planned_lap_s(self) -> float:
        """The speed profile's own lap time on the racing line."""
        return self.line.lap_time_s

    def reset(self) -> None:
        self._hint = None

    def act(self, state: VehicleState, period_s: float) -> tuple[float, float]:
        """The clean (steering, throttle) for the car in ``state``, driven every ``period_s``."""
        p = self.params
        line = self.line
        curve = line.curve
        v = max(0.0, state.speed_mps)
        # Where the car will be when this command acts: yaw rate and sideways slip included.
        lead_s = p.delay_ticks * p.dt_s + 0.5 * period_s
        yaw = state.yaw + state.yaw_rate_rps * lead_s
        mid = state.yaw + 0.5 * state.yaw_rate_rps * lead_s
        side = state.lateral_mps - state.yaw_rate_rps * self._rear_m  # at the rear axle
        x = state.x + (v * math.cos(mid) - side * math.sin(mid)) * lead_s
        y = state.y + (v * math.sin(mid) + side * math.cos(mid)) * lead_s
        i = line.locate(x, y, self._hint)
        self._hint = i
        h = float(curve.heading[i])
        s = float(curve.s[i]) + (x - curve.xy[i, 0]) * math.cos(h) + \
            (y - curve.xy[i, 1]) * math.sin(h)
        # Pure pursuit toward a point on the line, with the understeer the arc will cause.
        lookahead = LOOKAHEAD_MIN_M + LOOKAHEAD_PER_MPS * v
        tx, ty, _, _ = line.sample_at(s + lookahead)
        dx, dy = tx - x, ty - y
        fwd = dx * math.cos(yaw) + dy * math.sin(yaw)
        left = -dx * math.sin(yaw) + dy * math.cos(yaw)
        curvature = 2.0 * left / max(fwd * fwd + left * left, 1e-6)
        wheel_left = math.atan(curvature * p.wheelbase_m) + self.understeer * v * v * curvature
        steering = max(-1.0, min(1.0, -wheel_left / p.max_steering_rad))
        # Speed: the profile's plan a moment ahead, and a correction toward its speed.
        ahead = s + v * PLAN_AHEAD_S
        _, _, _, target = line.sample_at(ahead)
        k = round((ahead % curve.length_m) / curve.ds) % len(curve.s)
        lateral = v * v * float(curve.curvature[k])
        wanted = float(line.accel_mps2[k]) + SPEED_GAIN * (target - v) + \
            self._drag_per_lateral2 * lateral * lateral
        return steering, self._throttle_for(wanted, v)

    def _throttle_for(self, accel: float, v: float) -> float:
        """The throttle whose ESC acceleration at speed ``v`` is ``accel``."""
        p = self.params
        force = accel + p.drag_per_s * v + (ROLLING_MPS2 if v > 0.0 else 0.0)
        throttle = force / p.max_accel_mps2 if force >= 0.0 else force / p.brake_mps2
        return max(-1.0, min(1.0, throttle))
