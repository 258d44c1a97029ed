"""Vehicle physics, scoring primitives and determinism of the simulator."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from car.config import SimConfig
from car.errors import SimError
from car.sim.expert import DartNoise, Expert
from car.sim.scoring import Progress
from car.sim.tracks import load_track
from car.sim.vehicle import Vehicle, VehicleParams
from car.sim.world import Simulator, variation_for_lap
from tests.sim_helpers import TURN_RADIUS_M, circle_track

PARAMS = VehicleParams.from_config()


def test_defaults_are_a_1_16_donkey_car() -> None:
    assert PARAMS.wheelbase_m == pytest.approx(0.18)
    assert math.degrees(PARAMS.max_steering_rad) == pytest.approx(25.0)
    assert PARAMS.turn_radius_m == pytest.approx(0.18 / math.tan(math.radians(25)))


def test_full_throttle_settles_at_top_speed_and_coasting_stops() -> None:
    car = Vehicle(PARAMS)
    car.command(0.0, 1.0)
    car.advance(int(8 * PARAMS.physics_hz))
    assert car.state.speed_mps == pytest.approx(4.0, rel=0.01)
    assert car.state.y == 0.0 and car.state.x > 20
    car.command(0.0, 0.0)
    car.advance(int(30 * PARAMS.physics_hz))
    assert car.state.speed_mps == 0.0  # rolling resistance, never reversing by itself


def test_brake_stops_without_reversing_then_reverse_needs_a_new_push() -> None:
    car = Vehicle(PARAMS)
    car.command(0.0, 1.0)
    car.advance(400)
    car.command(0.0, -1.0)
    car.advance(int(2 * PARAMS.physics_hz))
    assert car.state.speed_mps <= 0.0  # stopped, then reversing under continued -1
    car.command(0.0, 0.0)
    car.advance(int(10 * PARAMS.physics_hz))
    assert car.state.speed_mps == 0.0


def test_steering_plus_one_turns_right_on_the_tightest_circle() -> None:
    car = Vehicle(PARAMS)
    car.command(1.0, 0.2)
    car.advance(int(20 * PARAMS.physics_hz))
    speed = car.state.speed_mps
    yaw_rate = -speed * math.tan(car.state.wheel_angle_rad) / PARAMS.wheelbase_m
    assert yaw_rate < 0  # clockwise: a right turn
    car_before = dataclasses.replace(car.state)
    car.advance(100)
    assert math.remainder(car.state.yaw - car_before.yaw, math.tau) < 0
    # Circling at full lock: the rear axle stays on a circle of the turning radius.
    xs, ys = [], []
    for _ in range(200):
        car.advance(5)
        xs.append(car.state.x)
        ys.append(car.state.y)
    cx, cy = np.mean(xs), np.mean(ys)
    radii = np.hypot(np.array(xs) - cx, np.array(ys) - cy)
    assert radii.mean() == pytest.approx(TURN_RADIUS_M, rel=0.02)


def test_actuation_delay_then_servo_slew_limit() -> None:
    sim = SimConfig(actuation_delay_s=0.05, steering_rate_dps=250.0, physics_hz=200.0)
    params = VehicleParams.from_config(sim)
    car = Vehicle(params)
    car.command(1.0, 0.0)
    car.advance(params.delay_ticks)  # 10 ticks: nothing has happened yet
    assert car.state.wheel_angle_rad == 0.0
    car.advance(1)
    assert car.state.wheel_angle_rad == pytest.approx(math.radians(250.0) / 200.0)
    ticks_to_lock = math.ceil(25.0 / 250.0 * 200.0)
    car.advance(ticks_to_lock)
    assert car.state.wheel_angle_rad == pytest.approx(math.radians(25.0))


def test_physics_step_is_independent_of_the_control_rate() -> None:
    track = load_track("oval", TURN_RADIUS_M)
    finals = []
    for hz in (10.0, 20.0, 40.0):
        sim = Simulator(track)
        for _ in range(int(2 * hz)):  # the same constant command for 2 s
            status = sim.step(0.3, 0.6, 1.0 / hz)
        finals.append((status.x, status.y, status.yaw, status.speed_mps))
    assert finals[0] == finals[1] == finals[2]


def test_bad_commands_are_refused() -> None:
    car = Vehicle(PARAMS)
    with pytest.raises(SimError, match="finite"):
        car.command(float("nan"), 0.0)
    car.command(5.0, -7.0)  # out of range: clipped, like a servo's end stops
    car.advance(PARAMS.delay_ticks + 1)
    assert car.applied == (1.0, -1.0)
    with pytest.raises(SimError, match="positive time"):
        Simulator(load_track("oval", TURN_RADIUS_M)).step(0.0, 0.0, 0.0)


def _drive_round(progress: Progress, radius: float, start: float, stop: float,
                 t0: float) -> float:
    t = t0
    for angle in np.linspace(start, stop, int(abs(stop - start) / 0.02) + 1):
        t += 0.05
        progress.update(radius * math.cos(angle), radius * math.sin(angle), t)
    return t


def test_laps_count_forward_only_with_lap_times() -> None:
    track = circle_track(radius_m=3.0)
    progress = Progress(track)
    progress.start(0.0, 0.0)
    t = _drive_round(progress, 3.0, 0.0, 2.5 * math.tau, 0.0)
    assert progress.laps == 2
    assert len(progress.lap_times_s) == 2
    assert progress.lap_times_s[0] == pytest.approx(progress.lap_times_s[1], rel=0.01)
    t = _drive_round(progress, 3.0, 2.5 * math.tau, 1.2 * math.tau, t)  # backwards over the line
    assert progress.laps == 2
    _drive_round(progress, 3.0, 1.2 * math.tau, 2.9 * math.tau, t)  # must make it up first
    assert progress.laps == 2
    _drive_round(progress, 3.0, 2.9 * math.tau, 3.05 * math.tau, t)
    assert progress.laps == 3


def test_off_track_events_count_excursions_not_frames() -> None:
    track = circle_track(radius_m=3.0, width_m=1.0)
    progress = Progress(track)
    progress.start(0.0, 0.0)
    for radius in (3.0, 3.4, 3.6, 3.7, 3.2, 3.0, 2.4, 2.4, 3.0):  # out twice (|cte| > 0.5)
        progress.update(radius, 0.0, 0.0)
    assert progress.off_track_events == 2 and not progress.off_track


def test_reset_to_the_nearest_centreline_pose() -> None:
    track = load_track("oval", TURN_RADIUS_M)
    sim = Simulator(track)
    sim.vehicle.place(0.0, -2.5 + 0.8, 2.0)  # off the road, facing the wrong way
    status = sim.reset_to_track()
    assert (status.x, status.y) == pytest.approx((0.0, -2.5), abs=0.01)
    assert status.yaw == pytest.approx(0.0, abs=0.01) and status.speed_mps == 0.0
    assert status.cte_m == pytest.approx(0.0, abs=0.01)


def _run(seed: int, randomize: bool, steps: int = 60,
         vary: bool = False) -> tuple[list[tuple], list[np.ndarray]]:
    track = load_track("technical", TURN_RADIUS_M)
    sim = Simulator(track, seed=seed, randomize=randomize)
    if vary:  # the physics --randomize draws for the first lap, without the new looks
        sim.vehicle.vary(variation_for_lap(seed, 0))
    expert = Expert(track, sim.params, 2.0)
    noise = DartNoise(0.3, sim.streams["noise"])
    states, frames = [], []
    for _ in range(steps):
        frames.append(sim.render())
        status = sim.step(*noise.perturb(*expert.act(sim.vehicle.state, 0.05), 0.05), 0.05)
        states.append((status.x, status.y, status.yaw, status.speed_mps))
    return states, frames


def test_deterministic_for_a_seed() -> None:
    states_a, frames_a = _run(7, randomize=True)
    states_b, frames_b = _run(7, randomize=True)
    assert states_a == states_b
    assert all(np.array_equal(a, b) for a, b in zip(frames_a, frames_b))
    states_c, frames_c = _run(8, randomize=True)
    assert states_c != states_a
    assert not np.array_equal(frames_c[0], frames_a[0])
    # Rendering draws from its own stream: the looks leave the physics alone, which only the
    # lap's drawn variation changes.
    assert _run(7, randomize=False, vary=True)[0] == states_a
    assert _run(7, randomize=False)[0] != states_a


def test_a_shortcut_across_the_infield_gains_nothing() -> None:
    track = load_track("oval", TURN_RADIUS_M)  # straights at y = -2.5 and y = +2.5
    progress = Progress(track)
    progress.start(track.locate(0.0, -2.5).s_m, 0.0)
    t = 0.0
    for y in np.arange(-2.5, 2.51, 0.05):  # straight across the infield, north
        t += 0.05
        progress.update(0.0, float(y), t)
    assert progress.off_track_events == 1
    assert abs(progress.distance_m) < 0.5
    assert progress.laps == 0


def test_locate_ignores_a_hint_from_the_other_side_of_the_track() -> None:
    track = load_track("oval", TURN_RADIUS_M)
    wrong = track.locate(0.0, 2.5).index  # on the far straight
    loc = track.locate(0.0, -2.5, hint=wrong)
    assert loc.cte_m == pytest.approx(0.0, abs=0.01)
