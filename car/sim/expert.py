"""The expert driver the simulator records: pure pursuit on the centreline with a speed
profile from the curvature, plus DART-style noise on the executed action.

The expert sees the true pose (it is a teacher, not a pilot). Its clean action is the label
a tub records; with noise on, the car executes a perturbed action and drifts, so the data
holds recoveries labelled with what the expert would do there.
"""

from __future__ import annotations

import math

import numpy as np

from car.errors import SimError
from car.sim.track import Track
from car.sim.vehicle import ROLLING_MPS2, VehicleParams, VehicleState

LATERAL_ACCEL_MPS2 = 3.0  # grip budget the speed profile plans with (about 0.3 g)
PLAN_BRAKE_MPS2 = 2.5  # deceleration it plans for ahead of a curve


class Expert:
    """Pure pursuit with delay compensation and a curvature-based speed profile."""

    def __init__(self, track: Track, params: VehicleParams, max_speed_mps: float,
                 lateral_accel_mps2: float = LATERAL_ACCEL_MPS2, line_m: float = 0.0):
        if abs(line_m) >= track.width_m / 2:
            raise SimError(f"an expert line {line_m:g} m off the centreline is off the "
                           f"{track.width_m:g} m wide track {track.name}")
        self.track = track
        self.params = params
        self.line_m = line_m  # the driving line, metres right of the centreline
        self.max_speed_mps = min(max_speed_mps, params.top_speed_mps * 0.95)
        self.speed_profile = speed_profile(track, self.max_speed_mps, lateral_accel_mps2,
                                           PLAN_BRAKE_MPS2)
        self._hint: int | None = None

    def act(self, state: VehicleState, period_s: float) -> tuple[float, float]:
        """The clean (steering, throttle) for the car in ``state``, driven every ``period_s``."""
        p = self.params
        v = max(0.0, state.speed_mps)
        # Aim from where the car will be when this command reaches the wheels.
        lead_s = p.delay_ticks * p.dt_s + 0.5 * period_s
        x = state.x + v * lead_s * math.cos(state.yaw)
        y = state.y + v * lead_s * math.sin(state.yaw)
        loc = self.track.locate(x, y, self._hint)
        self._hint = loc.index
        lookahead = max(0.45, 0.25 + 0.35 * v)
        tx, ty, heading = self.track.pose_at(loc.s_m + lookahead)
        tx += self.line_m * math.sin(heading)  # right of the direction of travel
        ty -= self.line_m * math.cos(heading)
        dx, dy = tx - x, ty - y
        # The target in the car's frame (forward, left), then the pure-pursuit arc through it.
        fwd = dx * math.cos(state.yaw) + dy * math.sin(state.yaw)
        left = -dx * math.sin(state.yaw) + dy * math.cos(state.yaw)
        dist2 = max(fwd * fwd + left * left, 1e-6)
        curvature = 2.0 * left / dist2
        wheel_left = math.atan(curvature * p.wheelbase_m)
        steering = max(-1.0, min(1.0, -wheel_left / p.max_steering_rad))

        n = len(self.speed_profile)
        ahead = round((loc.s_m + 0.15 * v) / self.track.curve.ds) % n
        target_v = float(self.speed_profile[ahead])
        drag = (p.max_accel_mps2 - ROLLING_MPS2) / p.top_speed_mps
        feedforward = (drag * target_v + ROLLING_MPS2) / p.max_accel_mps2
        throttle = max(-1.0, min(1.0, feedforward + 0.6 * (target_v - v)))
        return steering, throttle

    def reset(self) -> None:
        self._hint = None

    def planned_lap_s(self) -> float:
        """The lap time of the speed profile (on the centreline)."""
        return float(np.sum(self.track.curve.ds / np.maximum(self.speed_profile, 0.05)))


def speed_profile(track: Track, max_speed_mps: float, lateral_accel_mps2: float,
                  brake_mps2: float) -> np.ndarray:
    """Target speed at each centreline sample: limited by grip in curves, and by braking
    distance before them (a backward pass, twice round the loop)."""
    curvature = np.abs(track.curve.curvature)
    v = np.minimum(max_speed_mps, np.sqrt(lateral_accel_mps2 / np.maximum(curvature, 1e-6)))
    ds = track.curve.ds
    limit = v.tolist()
    n = len(limit)
    for k in range(2 * n - 1, -1, -1):
        i, j = k % n, (k + 1) % n
        allowed = math.sqrt(limit[j] ** 2 + 2.0 * brake_mps2 * ds)
        if allowed < limit[i]:
            limit[i] = allowed
    return np.array(limit)


class DartNoise:
    """Steering noise with std ``sigma`` and correlation time ``tau_s`` (an AR(1) process).

    White noise at 20 Hz is mostly filtered out by the servo's slew limit; correlated noise
    pushes the car off the line for a moment, which is what makes recoveries.
    """

    def __init__(self, sigma: float, rng: np.random.Generator, tau_s: float = 0.3):
        self.sigma = sigma
        self.rng = rng
        self.tau_s = tau_s
        self.value = 0.0

    def perturb(self, steering: float, throttle: float, period_s: float) -> tuple[float, float]:
        if self.sigma <= 0.0:
            return steering, throttle
        a = math.exp(-period_s / self.tau_s)
        self.value = a * self.value + math.sqrt(1.0 - a * a) * self.sigma * self.rng.normal()
        return max(-1.0, min(1.0, steering + self.value)), throttle
