"""The dynamic single-track ("ST") chassis: two axles with tyres that grip up to a friction
circle, as in CommonRoad's vehicle models and f1tenth_gym.

States: the rear axle's position (x, y), the yaw, the longitudinal velocity ``vx``, the
lateral velocity ``vy`` of the centre of mass, the yaw rate ``r``; the front wheel angle
``delta`` (left positive here) comes from the servo.

- **Loads.** The static front/rear split (``front_weight``), shifted by the longitudinal
  acceleration times ``cg_height / wheelbase`` (braking loads the front).
- **Longitudinal force.** The ESC's demanded acceleration (drive, brake, drag and rolling
  resistance) acts through both axles in proportion to their loads (the four-wheel drive of
  most 1/16 and 1/10 cars), each capped at ``mu · F_z``.
- **Lateral force.** Linear in the slip angle (``cornering_* · F_z`` per radian), capped by
  what the friction circle leaves beside the longitudinal force: a tyre never gives more
  than ``mu · F_z`` in all, so the car's acceleration never exceeds ``mu · g``.
- **Low speed.** Slip angles are singular at rest, so below ``KINEMATIC_MPS`` the lateral
  velocity and yaw rate are the kinematic bicycle's, and between that and ``DYNAMIC_MPS``
  they blend linearly into the dynamic ones. Reverse is kinematic.
- **Integration.** Semi-implicit Euler in substeps of at most ``SUBSTEP_S`` (the lateral
  modes of a small car are fast: about 200/s at 0.25 m/s), so any physics rate is stable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GRAVITY_MPS2 = 9.81
KINEMATIC_MPS = 0.25  # below this, the kinematic bicycle
DYNAMIC_MPS = 0.5  # above this, the full dynamic model
SUBSTEP_S = 0.0025


@dataclass(frozen=True)
class Chassis:
    mass_kg: float
    inertia_kgm2: float
    front_m: float  # centre of mass to the front axle
    rear_m: float  # centre of mass to the rear axle
    cg_height_m: float
    mu: float
    cornering_front: float  # per radian, per unit load
    cornering_rear: float
    substeps: int
    substep_s: float

    @property
    def wheelbase_m(self) -> float:
        return self.front_m + self.rear_m

    def cornering_drag_per_lateral2(self) -> float:
        """Steady cornering drag per (m/s²)² of lateral acceleration: each axle's force
        ``F_y`` acts at its slip angle ``F_y / (C · F_z)`` behind the direction of travel,
        which with the static loads sums to ``a_y² / (C_eff · g)``."""
        share = self.rear_m / self.wheelbase_m  # the front axle's share of the load
        return (share / self.cornering_front + (1.0 - share) / self.cornering_rear) / GRAVITY_MPS2

    def understeer_gradient(self) -> float:
        """Radians of extra steering per m/s² of lateral acceleration in a steady turn:
        (1/C_front − 1/C_rear) / g with stiffnesses per unit load."""
        return (1.0 / self.cornering_front - 1.0 / self.cornering_rear) / GRAVITY_MPS2


def dynamic_step(c: Chassis, x: float, y: float, yaw: float, vx: float, vy: float, r: float,
                 delta: float, accel: float, dt: float
                 ) -> tuple[float, float, float, float, float, float, float]:
    """Advance ``dt`` (one physics tick) with the wheel angle ``delta`` (left positive) and
    the ESC's demanded acceleration ``accel``. Returns (x, y, yaw, vx, vy, r, lateral
    acceleration in the car's frame)."""
    m, g, lf, lr = c.mass_kg, GRAVITY_MPS2, c.front_m, c.rear_m
    wheelbase = lf + lr
    grip = c.mu * g
    sin_d, cos_d, tan_d = math.sin(delta), math.cos(delta), math.tan(delta)
    # Loads, from the demanded acceleration (no more than the tyres can give).
    ax = min(grip, max(-grip, accel))
    fz_front = max(0.0, m * (g * lr - ax * c.cg_height_m) / wheelbase)
    fz_rear = max(0.0, m * g - fz_front)
    cap_front, cap_rear = c.mu * fz_front, c.mu * fz_rear
    fx_total = m * accel
    fx_share = fx_total * fz_front / (m * g)  # the front's part, in proportion to its load
    fx_front = min(cap_front, max(-cap_front, fx_share))
    fx_rear = min(cap_rear, max(-cap_rear, fx_total - fx_share))
    lat_front = math.sqrt(max(0.0, cap_front * cap_front - fx_front * fx_front))
    lat_rear = math.sqrt(max(0.0, cap_rear * cap_rear - fx_rear * fx_rear))
    traction = (fx_front + fx_rear) / m  # what the kinematic regime can use
    h = c.substep_s
    ay = 0.0
    for _ in range(c.substeps):
        w = min(1.0, max(0.0, (vx - KINEMATIC_MPS) / (DYNAMIC_MPS - KINEMATIC_MPS)))
        if w > 0.0:
            slip_front = delta - math.atan2(vy + lf * r, vx)
            slip_rear = -math.atan2(vy - lr * r, vx)
            fy_front = c.cornering_front * fz_front * slip_front
            fy_front = min(lat_front, max(-lat_front, fy_front))
            fy_rear = c.cornering_rear * fz_rear * slip_rear
            fy_rear = min(lat_rear, max(-lat_rear, fy_rear))
            fy_axle_front = fx_front * sin_d + fy_front * cos_d  # across the car
            fx_body = fx_front * cos_d - fy_front * sin_d + fx_rear
            fy_body = fy_axle_front + fy_rear
            vx_dot = w * (fx_body / m + r * vy) + (1.0 - w) * traction
            vy_dyn = vy + (fy_body / m - r * vx) * h
            r_dyn = r + (lf * fy_axle_front - lr * fy_rear) / c.inertia_kgm2 * h
            ay_dyn = fy_body / m
        else:
            vx_dot = traction
            vy_dyn = r_dyn = ay_dyn = 0.0
        vx += vx_dot * h
        if w < 1.0:  # the kinematic bicycle's lateral motion, blended in
            r_kin = vx * tan_d / wheelbase
            vy = w * vy_dyn + (1.0 - w) * r_kin * lr
            r = w * r_dyn + (1.0 - w) * r_kin
            ay = w * ay_dyn + (1.0 - w) * r_kin * vx
        else:
            vy, r, ay = vy_dyn, r_dyn, ay_dyn
        # The rear axle moves with the body's velocity less the yaw rate's share.
        mid = yaw + 0.5 * r * h
        side = vy - r * lr
        cos_m, sin_m = math.cos(mid), math.sin(mid)
        x += (vx * cos_m - side * sin_m) * h
        y += (vx * sin_m + side * cos_m) * h
        yaw = math.remainder(yaw + r * h, math.tau)
    return x, y, yaw, vx, vy, r, ay
