"""The dynamic single-track chassis: the grip limit, the understeer gradient, the low-speed
blend to the kinematic bicycle, determinism, stability, and per-lap physics randomisation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from car.config import SimConfig
from car.sim.tracks import load_track
from car.sim.tyres import GRAVITY_MPS2
from car.sim.vehicle import Variation, Vehicle, VehicleParams
from car.sim.world import Simulator, variation_for_lap
from tests.sim_helpers import TURN_RADIUS_M


def params(**changes: object) -> VehicleParams:
    return VehicleParams.from_config(dataclasses.replace(SimConfig(), **changes))


def steady(p: VehicleParams, steering: float, throttle: float, seconds: float = 20.0) -> Vehicle:
    car = Vehicle(p)
    car.command(steering, throttle)
    car.advance(int(seconds * p.physics_hz))
    return car


def test_the_default_car_is_dynamic_with_a_grip_limit() -> None:
    p = VehicleParams.from_config()
    assert p.model == "dynamic" and p.mu == pytest.approx(0.8)
    assert p.grip_mps2 == pytest.approx(0.8 * GRAVITY_MPS2)


@pytest.mark.parametrize("steering, throttle", [(0.1, 0.5), (0.1, 0.7), (0.2, 0.5)])
def test_steady_cornering_matches_the_understeer_gradient(steering: float,
                                                          throttle: float) -> None:
    """δ = L/R + K·a_y with K = (1/C_f − 1/C_r)/g, in the linear range of the tyres."""
    p = params(mu=3.0)  # grip to spare: the tyres stay linear
    car = steady(p, steering, throttle)
    st = car.state
    radius = st.speed_mps / abs(st.yaw_rate_rps)
    lateral = st.speed_mps * abs(st.yaw_rate_rps)
    gradient = p.chassis().understeer_gradient()
    assert gradient > 0  # the default car understeers: the rear tyres are stiffer
    extra = abs(st.wheel_angle_rad) - math.atan(p.wheelbase_m / radius)
    assert extra == pytest.approx(gradient * lateral, rel=0.12), (extra, gradient * lateral)
    assert abs(st.lateral_accel_mps2) == pytest.approx(lateral, rel=0.02)


def test_a_neutral_car_turns_on_the_geometric_radius() -> None:
    p = params(mu=3.0, cornering_front=5.0, cornering_rear=5.0)
    st = steady(p, 0.15, 0.6).state
    radius = st.speed_mps / abs(st.yaw_rate_rps)
    assert math.atan(p.wheelbase_m / radius) == pytest.approx(abs(st.wheel_angle_rad), rel=0.02)


@pytest.mark.parametrize("mu", [0.3, 0.8, 1.2])
def test_lateral_acceleration_never_exceeds_mu_g(mu: float) -> None:
    p = params(mu=mu)
    rng = np.random.default_rng(int(mu * 10))
    car = Vehicle(p)
    worst = 0.0
    for _ in range(40):  # 20 s of random commands, each held for half a second
        car.command(float(rng.uniform(-1, 1)), float(rng.uniform(0.2, 1)))
        for _ in range(100):
            car.advance(1)
            worst = max(worst, abs(car.state.lateral_accel_mps2))
    assert worst <= mu * GRAVITY_MPS2 + 1e-9
    assert worst > 0.6 * mu * GRAVITY_MPS2  # the limit was approached, not avoided


def test_too_fast_into_a_corner_slides_wide_and_less_grip_slides_wider() -> None:
    radii = {}
    for mu in (0.4, 0.8):
        p = params(mu=mu)
        car = Vehicle(p)
        car.command(0.0, 1.0)
        car.advance(int(3 * p.physics_hz))  # 3.7 m/s down the straight
        car.command(1.0, 1.0)  # full lock, foot down
        car.advance(int(2 * p.physics_hz))
        st = car.state
        radii[mu] = math.hypot(st.speed_mps, st.lateral_mps) / abs(st.yaw_rate_rps)
        assert abs(st.lateral_accel_mps2) <= mu * GRAVITY_MPS2 + 1e-9
        assert radii[mu] > 1.5 * p.turn_radius_m  # far wider than the wheels point
    assert radii[0.4] > 1.5 * radii[0.8]


def test_lifting_mid_corner_at_the_limit_spins_a_car_with_a_light_rear() -> None:
    """Braking moves load to the front: a car with little weight on the rear spins."""
    p = params(mu=0.8, front_weight=0.6, cg_height_m=0.08)
    car = Vehicle(p)
    car.command(0.0, 1.0)
    car.advance(int(3 * p.physics_hz))
    car.command(0.6, -1.0)  # turn in on the brakes
    car.advance(int(0.6 * p.physics_hz))
    st = car.state
    slip = math.degrees(math.atan2(st.lateral_mps, max(st.speed_mps, 1e-6)))
    assert abs(slip) > 15 or st.speed_mps <= 0.0, slip  # sideways: a spin


@pytest.mark.parametrize("top_speed", [0.3, 0.6])
def test_at_low_speed_it_drives_like_the_kinematic_bicycle(top_speed: float) -> None:
    """Below 0.25 m/s it is the kinematic bicycle; just above 0.5 m/s the tyres barely slip."""
    tracks = {}
    for model in ("kinematic", "dynamic"):
        p = params(model=model, top_speed_mps=top_speed, max_accel_mps2=0.6)
        car = Vehicle(p)
        car.command(0.8, 1.0)
        car.advance(int(6 * p.physics_hz))
        tracks[model] = (car.state.x, car.state.y, car.state.yaw)
    kx, ky, kyaw = tracks["kinematic"]
    dx, dy, dyaw = tracks["dynamic"]
    assert math.hypot(kx - dx, ky - dy) < 0.05
    assert abs(math.remainder(kyaw - dyaw, math.tau)) < 0.05


def test_it_stays_at_rest_and_starts_smoothly() -> None:
    p = params()
    car = Vehicle(p)
    car.command(1.0, 0.0)
    car.advance(400)
    assert (car.state.x, car.state.y, car.state.speed_mps) == (0.0, 0.0, 0.0)
    car.command(1.0, 0.3)
    car.advance(400)
    assert 0.0 < car.state.speed_mps < 1.5 and abs(car.state.lateral_mps) < 0.2


@pytest.mark.parametrize("hz", [50.0, 200.0, 1000.0])
def test_stable_at_any_physics_rate_and_converging(hz: float) -> None:
    def run(physics_hz: float) -> tuple[float, ...]:
        p = params(physics_hz=physics_hz)
        car = Vehicle(p)
        for steering, throttle, seconds in ((0.0, 1.0, 1.0), (0.5, 1.0, 1.5), (-1.0, 0.2, 1.0),
                                            (0.3, -1.0, 0.5)):
            car.command(steering, throttle)
            car.advance(int(seconds * physics_hz))
        st = car.state
        return st.x, st.y, st.speed_mps, st.lateral_mps, st.yaw_rate_rps

    state = run(hz)
    assert all(math.isfinite(v) for v in state)
    assert abs(state[2]) < 4.5 and abs(state[3]) < 4.5 and abs(state[4]) < 30
    reference = run(2000.0)
    assert math.hypot(state[0] - reference[0], state[1] - reference[1]) < 0.3


def test_deterministic() -> None:
    def run() -> tuple[float, ...]:
        p = params()
        car = Vehicle(p)
        rng = np.random.default_rng(5)
        for _ in range(200):
            car.command(float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)))
            car.advance(10)
        st = car.state
        return st.x, st.y, st.yaw, st.speed_mps, st.lateral_mps, st.yaw_rate_rps

    assert run() == run()


def test_a_variation_changes_grip_motor_trim_and_delay() -> None:
    p = params()
    base = steady(p, 0.0, 1.0, 1.0).state
    strong = Vehicle(p)
    strong.vary(Variation(motor_scale=1.15))
    strong.command(0.0, 1.0)
    strong.advance(200)
    assert strong.state.speed_mps > base.speed_mps
    trimmed = Vehicle(p)
    trimmed.vary(Variation(steering_trim=0.05))
    trimmed.command(0.0, 0.5)
    trimmed.advance(400)
    assert trimmed.state.wheel_angle_rad == pytest.approx(0.05 * p.max_steering_rad)
    late = Vehicle(p)
    late.vary(Variation(extra_delay_s=0.03))
    late.command(1.0, 0.0)
    late.advance(p.delay_ticks + 3)
    assert late.state.wheel_angle_rad == 0.0  # still waiting out the extra 30 ms
    late.advance(7)
    assert late.state.wheel_angle_rad > 0.0


def test_randomize_draws_physics_per_lap_within_the_ranges() -> None:
    draws = [variation_for_lap(3, k) for k in range(200)]
    assert draws[0] == variation_for_lap(3, 0) != variation_for_lap(4, 0)
    mu = [d.mu_scale for d in draws]
    assert 0.8 <= min(mu) < 0.85 and 1.15 < max(mu) <= 1.2
    assert all(0.85 <= d.motor_scale <= 1.15 and abs(d.steering_trim) <= 0.05
               and 0.0 <= d.extra_delay_s <= 0.03 for d in draws)
    sim = Simulator(load_track("oval", TURN_RADIUS_M), seed=3, randomize=True)
    assert sim.variations == [draws[0]] and sim.vehicle.variation == draws[0]
    sim.new_lap()
    assert sim.variations == draws[:2] and sim.vehicle.variation == draws[1]
    plain = Simulator(load_track("oval", TURN_RADIUS_M), seed=3)
    plain.new_lap()
    assert plain.variations == [] and plain.vehicle.variation == Variation()
