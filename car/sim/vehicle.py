"""The simulated car: its servo and ESC behaving like real ones, and one of two chassis
models (``[sim] model``).

- **dynamic** (the default): the single-track ("ST") model of CommonRoad and f1tenth_gym, with
  tyres that grip up to a friction circle (``car.sim.tyres``): a car that enters a corner too
  fast slides wide or spins.
- **kinematic**: the bicycle that goes where its wheels point at any speed.

The car integrates at a fixed physics rate whatever the control rate. Commands reach the
wheels after an actuation delay; the steering then slews at the servo's rate limit. Throttle
maps to a drive force against linear drag, so full throttle settles at the top speed.
Reference point: the rear axle. Pure float arithmetic, so it is fast and deterministic.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from car.config import SimConfig
from car.errors import SimError
from car.sim.tyres import GRAVITY_MPS2, SUBSTEP_S, Chassis, dynamic_step

ROLLING_MPS2 = 0.3  # rolling resistance: a coasting car stops


@dataclass(frozen=True)
class VehicleParams:
    physics_hz: float
    wheelbase_m: float
    max_steering_rad: float
    top_speed_mps: float
    max_accel_mps2: float
    brake_mps2: float
    steering_rate_rad_s: float
    delay_ticks: int
    model: str = "kinematic"  # or "dynamic": single-track with tyre slip
    mu: float = 0.8  # tyre-floor friction: the grip limit is mu * g
    mass_kg: float = 1.4
    yaw_inertia_kgm2: float = 0.008
    front_weight: float = 0.5  # share of the weight on the front axle at rest
    cg_height_m: float = 0.05
    cornering_front: float = 4.7  # lateral force per unit load per radian of slip
    cornering_rear: float = 5.5

    @classmethod
    def from_config(cls, sim: SimConfig | None = None) -> VehicleParams:
        sim = sim or SimConfig()
        return cls(physics_hz=sim.physics_hz, wheelbase_m=sim.wheelbase_m,
                   max_steering_rad=math.radians(sim.max_steering_deg),
                   top_speed_mps=sim.top_speed_mps, max_accel_mps2=sim.max_accel_mps2,
                   brake_mps2=sim.brake_mps2,
                   steering_rate_rad_s=math.radians(sim.steering_rate_dps),
                   delay_ticks=round(sim.actuation_delay_s * sim.physics_hz),
                   model=sim.model, mu=sim.mu, mass_kg=sim.mass_kg,
                   yaw_inertia_kgm2=sim.yaw_inertia_kgm2, front_weight=sim.front_weight,
                   cg_height_m=sim.cg_height_m, cornering_front=sim.cornering_front,
                   cornering_rear=sim.cornering_rear)

    @property
    def drag_per_s(self) -> float:
        """Linear drag of the ESC model, set so that full throttle settles at the top speed."""
        return (self.max_accel_mps2 - ROLLING_MPS2) / self.top_speed_mps

    def chassis(self, mu_scale: float = 1.0) -> Chassis:
        """The dynamic chassis of these parameters (``mu_scale`` varies the grip)."""
        rear = self.front_weight * self.wheelbase_m  # the front's share of the load is rear/L
        substeps = max(1, math.ceil(self.dt_s / SUBSTEP_S - 1e-9))
        return Chassis(mass_kg=self.mass_kg, inertia_kgm2=self.yaw_inertia_kgm2,
                       front_m=self.wheelbase_m - rear, rear_m=rear,
                       cg_height_m=self.cg_height_m, mu=self.mu * mu_scale,
                       cornering_front=self.cornering_front,
                       cornering_rear=self.cornering_rear, substeps=substeps,
                       substep_s=self.dt_s / substeps)

    @property
    def grip_mps2(self) -> float:
        """The largest acceleration the tyres can give, in any direction: mu * g."""
        return self.mu * GRAVITY_MPS2

    @property
    def turn_radius_m(self) -> float:
        """The tightest radius the car can drive (rear axle)."""
        return self.wheelbase_m / math.tan(self.max_steering_rad)

    @property
    def dt_s(self) -> float:
        return 1.0 / self.physics_hz


@dataclass
class VehicleState:
    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0  # radians CCW from +x
    speed_mps: float = 0.0  # longitudinal velocity, forward positive
    wheel_angle_rad: float = 0.0  # positive turns right, like normalised steering
    tick: int = 0
    lateral_mps: float = 0.0  # lateral velocity of the centre of mass, left positive
    yaw_rate_rps: float = 0.0  # CCW positive
    lateral_accel_mps2: float = 0.0  # in the car's frame, left positive


@dataclass(frozen=True)
class Variation:
    """How this car differs from its parameters (``--randomize`` draws one per lap)."""

    mu_scale: float = 1.0
    motor_scale: float = 1.0  # drive force (and so the top speed)
    steering_trim: float = 0.0  # added to the normalised steering before the servo
    extra_delay_s: float = 0.0  # actuation latency on top of ``actuation_delay_s``

    def to_json(self) -> dict[str, float]:
        return {"mu_scale": round(self.mu_scale, 4), "motor_scale": round(self.motor_scale, 4),
                "steering_trim": round(self.steering_trim, 4),
                "extra_delay_ms": round(self.extra_delay_s * 1000.0, 2)}


class Vehicle:
    """Integrates the car. ``command()`` sets the actuators; ``advance(ticks)`` moves time."""

    def __init__(self, params: VehicleParams, x: float = 0.0, y: float = 0.0, yaw: float = 0.0):
        self.params = params
        self.state = VehicleState(x=x, y=y, yaw=yaw)
        self._pending: deque[tuple[int, float, float, float]] = deque()
        self._steering = 0.0  # commands the actuators are acting on now
        self._throttle = 0.0
        self._brake = 0.0
        self.variation = Variation()
        self._chassis = params.chassis()

    def vary(self, variation: Variation) -> None:
        """Use a varied car from now on (commands already in flight keep their timing)."""
        self.variation = variation
        self._chassis = self.params.chassis(variation.mu_scale)

    def place(self, x: float, y: float, yaw: float) -> None:
        """Put the car at rest at a pose, wheels straight, with no commands in flight."""
        tick = self.state.tick
        self.state = VehicleState(x=x, y=y, yaw=yaw, tick=tick)
        self._pending.clear()
        self._steering = self._throttle = self._brake = 0.0

    def command(self, steering: float, throttle: float, extra_delay_s: float = 0.0,
                brake: float = 0.0) -> None:
        """Normalised steering (+1 full right) and throttle in [-1, 1]; clipped to that range.
        ``brake`` in [0, 1] (the donkey simulator's foot brake) decelerates at up to
        ``brake_mps2`` whatever the direction, and holds the car at rest against the motor.

        It takes effect after the actuation delay plus ``extra_delay_s`` (the time a pilot
        took to compute it) plus the variation's extra delay, and never before a command
        sent earlier.
        """
        if not (math.isfinite(steering) and math.isfinite(throttle) and math.isfinite(brake)):
            raise SimError(f"the simulator was sent steering={steering}, throttle={throttle}, "
                           f"brake={brake}; commands must be finite numbers in [-1, 1]")
        steering = min(1.0, max(-1.0, float(steering)))
        throttle = min(1.0, max(-1.0, float(throttle)))
        brake = min(1.0, max(0.0, float(brake)))
        tick = self.state.tick + self.params.delay_ticks
        extra_delay_s += self.variation.extra_delay_s
        if extra_delay_s > 0.0:
            tick += round(extra_delay_s * self.params.physics_hz)
        if self._pending:
            tick = max(tick, self._pending[-1][0])
        self._pending.append((tick, steering, throttle, brake))

    @property
    def applied(self) -> tuple[float, float]:
        """The (steering, throttle) the servo and ESC act on now, after the delay."""
        return self._steering, self._throttle

    def advance(self, ticks: int) -> None:
        p = self.params
        st = self.state
        dt = p.dt_s
        max_turn = p.steering_rate_rad_s * dt
        drag = p.drag_per_s
        drive = p.max_accel_mps2 * self.variation.motor_scale
        trim = self.variation.steering_trim
        dynamic = p.model == "dynamic"
        chassis = self._chassis
        pending = self._pending
        x, y, yaw, v, wheel = st.x, st.y, st.yaw, st.speed_mps, st.wheel_angle_rad
        vy, r, ay = st.lateral_mps, st.yaw_rate_rps, st.lateral_accel_mps2
        tick = st.tick
        for _ in range(ticks):
            while pending and pending[0][0] <= tick:
                _, self._steering, self._throttle, self._brake = pending.popleft()
            # Servo: slew toward the commanded angle (trim shifts it, the end stops hold).
            target = min(1.0, max(-1.0, self._steering + trim)) * p.max_steering_rad
            wheel += min(max_turn, max(-max_turn, target - wheel))
            # ESC: drive force, brake, drag and rolling resistance.
            thr = self._throttle
            if thr < 0.0 and v > 0.0:
                accel = p.brake_mps2 * thr - drag * v
            else:
                accel = drive * thr - drag * v
            brake = self._brake
            resist = ROLLING_MPS2 + p.brake_mps2 * brake
            if v > 0.0:
                accel -= resist
            elif v < 0.0:
                accel += resist
            if v == 0.0 and abs(drive * thr) <= resist:  # too little to start rolling
                new_v = vy = r = ay = 0.0  # (or held by the brake): the car stays put
            elif dynamic:
                x, y, yaw, new_v, vy, r, ay = dynamic_step(chassis, x, y, yaw, v, vy, r,
                                                           -wheel, accel, dt)
            else:
                new_v = v + accel * dt
            if (v > 0.0 >= new_v and (thr <= 0.0 or brake > 0.0)) or \
                    (v < 0.0 <= new_v and (thr >= 0.0 or brake > 0.0)):
                new_v = 0.0  # brakes and rolling resistance stop the car; they don't reverse it
            if not dynamic:
                # Kinematic bicycle at the rear axle, midpoint rule.
                mean_v = 0.5 * (v + new_v)
                r = -mean_v * math.tan(wheel) / p.wheelbase_m
                mid = yaw + 0.5 * r * dt
                x += mean_v * math.cos(mid) * dt
                y += mean_v * math.sin(mid) * dt
                yaw = math.remainder(yaw + r * dt, math.tau)
                vy = r * chassis.rear_m
                ay = r * mean_v
            v = new_v
            tick += 1
        st.x, st.y, st.yaw, st.speed_mps, st.wheel_angle_rad, st.tick = x, y, yaw, v, wheel, tick
        st.lateral_mps, st.yaw_rate_rps, st.lateral_accel_mps2 = vy, r, ay
