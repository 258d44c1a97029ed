"""The racing line and its friction-circle speed profile (car.sim.raceline), and the map
`car sim view` draws it on."""

from __future__ import annotations

import dataclasses
import math
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest

from car.cli import main
from car.sim.raceline import (
    GripLimits,
    box_lsq,
    line_offsets,
    min_curvature_line,
    profile_lap_s,
    racing_line,
    speed_profile,
)
from car.sim.track import Track, build_track
from car.sim.tracks import load_track
from car.sim.vehicle import ROLLING_MPS2, VehicleParams
from tests.sim_helpers import TURN_RADIUS_M

PARAMS = VehicleParams.from_config()
LIMITS = GripLimits.from_params(PARAMS, 0.9)
MARGIN_M = 0.15
TRACKS = ["oval", "technical", "diyrobocars", "random:11", "random:3", "random:7"]


@cache
def track(name: str) -> Track:
    return load_track(name, TURN_RADIUS_M)


def sum_k2(curvature: np.ndarray, ds: float) -> float:
    return float(np.sum(curvature**2) * ds)


def test_grip_limits_follow_the_esc_model() -> None:
    assert LIMITS.grip_mps2 == pytest.approx(0.8 * 9.81 * 0.9)
    assert LIMITS.rolling_mps2 == ROLLING_MPS2 and LIMITS.drag_per_s == PARAMS.drag_per_s
    assert LIMITS.drive_accel(0.0) == pytest.approx(PARAMS.max_accel_mps2 - ROLLING_MPS2)
    assert LIMITS.drive_accel(PARAMS.top_speed_mps) == pytest.approx(0.0, abs=1e-12)
    assert LIMITS.drive_accel(2 * PARAMS.top_speed_mps) == 0.0  # never negative
    assert LIMITS.brake_decel(2.0) == pytest.approx(
        PARAMS.brake_mps2 + 2.0 * PARAMS.drag_per_s + ROLLING_MPS2)
    assert LIMITS.brake_decel(0.0) > 0.0


def profile_case() -> tuple[np.ndarray, float]:
    """Straights, sweepers, a hairpin and a kink, at the track's 0.02 m spacing."""
    s = np.arange(1500) * 0.02
    k = 0.9 * np.exp(-((s - 8.0) / 0.6) ** 2) - 2.2 * np.exp(-((s - 17.0) / 0.4) ** 2)
    k += 0.3 * np.sin(s / 3.0) ** 8
    k[1200] = 1.5
    return k, 0.02


def test_speed_profile_keeps_the_friction_circle_and_the_esc_limits() -> None:
    k, ds = profile_case()
    v = speed_profile(k, ds, LIMITS)
    assert np.all(v <= np.sqrt(LIMITS.grip_mps2 / np.abs(k)) + 1e-9)
    assert np.all(v <= 0.98 * PARAMS.top_speed_mps + 1e-12)
    assert v.min() > 0.5 and v.max() > 0.95 * 0.98 * PARAMS.top_speed_mps
    gain = (np.roll(v, -1) ** 2 - v**2) / (2 * ds)  # every step, the wrap (last -> 0) too
    used = {"drive": 0.0, "brake": 0.0}  # the largest share of its limit a step takes
    for i in range(len(v)):
        j = (i + 1) % len(v)
        if gain[i] > 0:
            kind, limit = "drive", min(LIMITS.drive_accel(v[i]) - LIMITS.turn_drag(v[i], k[i]),
                                       LIMITS.friction_room(v[i], k[i]))
        else:
            kind, limit = "brake", min(LIMITS.brake_decel(v[j]) + LIMITS.turn_drag(v[j], k[j]),
                                       LIMITS.friction_room(v[j], k[j]))
        assert abs(gain[i]) <= limit + 1e-9, f"step {i}: {gain[i]:.4f} m/s² > {limit:.4f}"
        if limit > 0.1:
            used[kind] = max(used[kind], abs(gain[i]) / limit)
    # Not timid: somewhere it brakes, and somewhere it accelerates, at the limit.
    assert used["drive"] > 0.999 and used["brake"] > 0.999


def test_speed_profile_is_closed_wherever_the_loop_starts() -> None:
    k, ds = profile_case()
    v = speed_profile(k, ds, LIMITS)
    for shift in (1, 400, 850, 1499):
        rolled = speed_profile(np.roll(k, shift), ds, LIMITS)
        np.testing.assert_allclose(rolled, np.roll(v, shift), atol=1e-9)


@pytest.mark.parametrize("radius_m", [0.8, 1.5, 2.1, 5.0])
def test_speed_profile_on_a_circle_is_the_cornering_speed_or_the_cap(radius_m: float) -> None:
    limits = dataclasses.replace(LIMITS, cornering_drag=0.0)  # tyres that never slip
    for sign in (1.0, -1.0):
        k = np.full(2000, sign / radius_m)
        v = speed_profile(k, 0.02, limits)
        expected = min(math.sqrt(limits.grip_mps2 * radius_m), 0.98 * PARAMS.top_speed_mps)
        np.testing.assert_allclose(v, expected, rtol=1e-12)
        assert profile_lap_s(v, 0.02) == pytest.approx(2000 * 0.02 / expected)


@pytest.mark.parametrize("radius_m", [1.5, 2.1, 5.0])
def test_on_a_circle_the_motor_must_also_beat_the_slipping_tyres_drag(radius_m: float) -> None:
    """The dynamic car's tyres slip in a turn and pull back: the steady speed is where the
    motor's full-throttle push equals that drag, if grip allows more."""
    assert LIMITS.cornering_drag > 0
    k = np.full(2000, 1.0 / radius_m)
    v = speed_profile(k, 0.02, LIMITS)
    lo, hi = 0.0, 0.98 * PARAMS.top_speed_mps
    for _ in range(100):  # bisect drive(v) = turn drag(v)
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if LIMITS.drive_accel(mid) > LIMITS.turn_drag(mid, k[0]) else (lo, mid)
    expected = min(math.sqrt(LIMITS.grip_mps2 * radius_m), lo)
    np.testing.assert_allclose(v, expected, rtol=1e-6)
    assert expected < 0.98 * PARAMS.top_speed_mps  # the drag is felt at these radii


@pytest.mark.parametrize("name", TRACKS)
def test_the_line_keeps_inside_its_bound_and_matches_the_tracks_cte(name: str) -> None:
    t = track(name)
    line = racing_line(t, PARAMS, MARGIN_M, 0.9)
    bound = t.width_m / 2 - MARGIN_M
    assert np.max(np.abs(line.offset_m)) <= bound + 0.005
    c = line.curve
    assert c.ds == pytest.approx(0.02, abs=0.001) and c.s[0] == 0.0
    assert len(line.speed_mps) == len(line.accel_mps2) == len(line.offset_m) == len(c.s)
    hint = None
    for i in range(0, len(c.s), 7):  # the offsets are the track's own cte
        loc = t.locate(float(c.xy[i, 0]), float(c.xy[i, 1]), hint)
        hint = loc.index
        assert line.offset_m[i] == pytest.approx(loc.cte_m, abs=1e-9)
    # The line runs the track's way round: its start faces the track's direction.
    assert math.cos(float(c.heading[0]) - t.pose_at(0.0)[2]) > 0.9


@pytest.mark.parametrize("name", TRACKS)
def test_the_line_is_straighter_and_faster_than_the_centreline(name: str) -> None:
    t = track(name)
    line = racing_line(t, PARAMS, MARGIN_M, 0.9)
    c, centre = line.curve, t.curve
    k_max, k_centre = np.max(np.abs(c.curvature)), np.max(np.abs(centre.curvature))
    assert k_max < k_centre, f"{name}: max |k| {k_max:.3f} vs centreline {k_centre:.3f}"
    k2, k2_centre = sum_k2(c.curvature, c.ds), sum_k2(centre.curvature, centre.ds)
    assert k2 < k2_centre, f"{name}: sum k² ds {k2:.2f} vs centreline {k2_centre:.2f}"
    centre_lap = profile_lap_s(speed_profile(centre.curvature, centre.ds, LIMITS), centre.ds)
    assert line.lap_time_s < centre_lap, \
        f"{name}: race lap {line.lap_time_s:.3f} s vs centreline {centre_lap:.3f} s"
    # The profile the line carries is the one its curvature gives, and its own lap time.
    np.testing.assert_array_equal(line.speed_mps, speed_profile(c.curvature, c.ds, LIMITS))
    np.testing.assert_allclose(
        line.accel_mps2, (np.roll(line.speed_mps, -1) ** 2 - line.speed_mps**2) / (2 * c.ds))
    assert line.lap_time_s == pytest.approx(profile_lap_s(line.speed_mps, c.ds))


@pytest.mark.parametrize("name", ["oval", "technical", "diyrobocars"])
def test_the_minimum_curvature_line_is_smoother_than_the_centreline(name: str) -> None:
    t = track(name)
    curve, offsets = min_curvature_line(t, MARGIN_M)
    assert np.max(np.abs(offsets)) <= t.width_m / 2 - MARGIN_M + 0.005
    assert np.max(np.abs(curve.curvature)) < np.max(np.abs(t.curve.curvature))
    assert sum_k2(curve.curvature, curve.ds) < 0.85 * sum_k2(t.curve.curvature, t.curve.ds)


def test_on_the_oval_the_lines_use_the_width() -> None:
    t = track("oval")
    bound = t.width_m / 2 - MARGIN_M
    _, smooth = min_curvature_line(t, MARGIN_M)
    assert np.max(np.abs(smooth)) > bound - 0.01  # it swings out to the bound
    line = racing_line(t, PARAMS, MARGIN_M, 0.9)
    # The corners are not what limits this oval (the cap is), so the race line cuts them.
    assert np.min(line.offset_m) < -0.4 * bound and line.curve.length_m < t.length_m - 0.5


def test_less_grip_laps_slower_and_a_narrower_margin_no_slower() -> None:
    t = track("technical")
    grippy = racing_line(t, PARAMS, MARGIN_M, 0.9)
    slippery = racing_line(t, dataclasses.replace(PARAMS, mu=0.5), MARGIN_M, 0.9)
    assert slippery.lap_time_s > 1.1 * grippy.lap_time_s
    assert racing_line(t, PARAMS, MARGIN_M, 0.7).lap_time_s > grippy.lap_time_s
    for name in ("technical", "random:11"):
        wide = racing_line(track(name), PARAMS, 0.05, 0.9)
        assert wide.lap_time_s <= racing_line(track(name), PARAMS, MARGIN_M, 0.9).lap_time_s
        assert np.max(np.abs(wide.offset_m)) > track(name).width_m / 2 - MARGIN_M


def test_a_track_too_narrow_for_the_margin_gets_the_centreline() -> None:
    points = [[2 * math.cos(a), 1.5 * math.sin(a)] for a in np.linspace(0, math.tau, 24,
                                                                         endpoint=False)]
    t = build_track("narrow", 0.3, points, min_turn_radius_m=TURN_RADIUS_M, where="test")
    line = racing_line(t, PARAMS, 0.15, 0.9)
    assert line.curve is t.curve and not line.offset_m.any()
    assert line.lap_time_s == pytest.approx(
        profile_lap_s(speed_profile(t.curve.curvature, t.curve.ds, LIMITS), t.curve.ds))


def test_racing_line_is_cached_by_track_car_and_margin() -> None:
    t = track("random:11")
    first = racing_line(t, PARAMS, MARGIN_M, 0.9)
    assert racing_line(t, PARAMS, MARGIN_M, 0.9) is first
    assert racing_line(t, PARAMS, 0.2, 0.9) is not first
    assert racing_line(t, dataclasses.replace(PARAMS, mu=0.6), MARGIN_M, 0.9) is not first


def test_locate_and_sample_at_walk_the_line() -> None:
    line = racing_line(track("technical"), PARAMS, MARGIN_M, 0.9)
    c = line.curve
    for i in (0, 123, len(c.s) - 1):
        x, y, heading, speed = line.sample_at(float(c.s[i]))
        assert (x, y, speed) == pytest.approx((c.xy[i, 0], c.xy[i, 1], line.speed_mps[i]))
        assert math.remainder(heading - float(c.heading[i]), math.tau) == pytest.approx(0.0)
        assert line.sample_at(float(c.s[i]) + 2 * c.length_m) == pytest.approx(
            line.sample_at(float(c.s[i])))
        # A point a little to the side of sample i is found there, with or without a hint.
        side = c.xy[i] + 0.1 * np.array([math.sin(heading), -math.cos(heading)])
        assert line.locate(*side) == i
        assert line.locate(*side, hint=(i + 20) % len(c.s)) == i
        assert line.locate(*side, hint=(i + len(c.s) // 2) % len(c.s)) == i  # stale hint
    mid = line.sample_at(float(c.s[10]) + 0.5 * c.ds)
    assert mid[:2] == pytest.approx(tuple((c.xy[10] + c.xy[11]) / 2))


def test_box_lsq_finds_lsq_linears_optimum() -> None:
    from scipy.optimize import lsq_linear
    from scipy.sparse import eye
    from scipy.sparse import random as sparse_random

    rng = np.random.default_rng(3)
    a = (sparse_random(90, 40, density=0.15, random_state=rng) + eye(90, 40)).tocsr()
    b = rng.normal(size=90)
    lo, hi = np.full(40, -0.2), np.full(40, 0.3)
    x = box_lsq(a, b, lo, hi)
    expected = lsq_linear(a.toarray(), b, bounds=(lo, hi), tol=1e-12).x
    assert np.all((x >= lo) & (x <= hi))
    np.testing.assert_allclose(x, expected, atol=1e-7)
    assert (np.isclose(x, lo) | np.isclose(x, hi)).sum() > 5  # bounds were in play


def test_line_offsets_measure_right_of_the_direction_of_travel() -> None:
    t = track("oval")
    shifted = dataclasses.replace(t.curve, xy=t.curve.xy + 0.2 * np.stack(
        [np.sin(t.curve.heading), -np.cos(t.curve.heading)], axis=1))
    np.testing.assert_allclose(line_offsets(t, shifted), 0.2, atol=1e-6)


def test_sim_view_draws_the_racing_line_by_speed(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    out = tmp_path / "view.png"
    code = main(["sim", "view", "--track", "technical", "--out", str(out), "--frames", "4"])
    stdout = capsys.readouterr().out
    assert code == 0 and "wrote" in stdout
    image = cv2.imread(str(out))
    assert image.shape[0] == 28 + 2 * 120 and image.shape[1] > 4 * 2 * 160
    frames_from = image.shape[1] - 4 * 2 * 160
    map_ = image[28:, :frames_from]
    # The turbo map's blue (slowest) and dark red (fastest) are drawn on the map.
    blue = (map_[:, :, 0] > 150) & (map_[:, :, 2] < 90)
    red = (map_[:, :, 2] > 110) & (map_[:, :, 0] < 40) & (map_[:, :, 1] < 60)
    assert blue.sum() > 20 and red.sum() > 200
