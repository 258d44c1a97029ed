"""Tracks: geometry on hand-computed shapes, loading, and the errors for undrivable tracks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from car.errors import TrackError
from car.sim.tracks import builtin_names, load_track, parse_track, random_track, track_json
from tests.sim_helpers import TURN_RADIUS_M, circle_points, circle_track


def test_circle_geometry_matches_hand_computation() -> None:
    track = circle_track(radius_m=3.0)
    assert track.length_m == pytest.approx(math.tau * 3.0, rel=1e-4)
    assert np.abs(track.curve.curvature).mean() == pytest.approx(1 / 3.0, rel=1e-3)
    assert track.curve.curvature.min() > 0  # counter-clockwise: always turning left
    # A point 0.2 m outside the circle at 90°: right of a CCW car, a quarter of the way round.
    loc = track.locate(0.0, 3.2)
    assert loc.cte_m == pytest.approx(0.2, abs=2e-3)
    assert loc.s_m == pytest.approx(math.tau * 3.0 / 4, abs=0.01)
    loc = track.locate(-2.9, 0.0)  # inside, half way round: left of the car
    assert loc.cte_m == pytest.approx(-0.1, abs=2e-3)
    assert loc.s_m == pytest.approx(math.pi * 3.0, abs=0.01)


def test_clockwise_circle_flips_the_sides() -> None:
    track = circle_track(radius_m=3.0, clockwise=True)
    assert track.curve.curvature.max() < 0
    assert track.locate(0.0, 3.2).cte_m == pytest.approx(-0.2, abs=2e-3)  # outside is left


def test_straight_of_the_oval() -> None:
    track = load_track("oval", TURN_RADIUS_M)
    x, y, yaw = track.pose_at(2.0)  # the first straight runs east along y = -2.5 from x = -4
    assert (x, y) == pytest.approx((-2.0, -2.5), abs=0.01)
    assert yaw == pytest.approx(0.0, abs=0.01)
    loc = track.locate(0.0, -2.5 + 0.3)  # 0.3 m north of the centreline: the car's left
    assert loc.cte_m == pytest.approx(-0.3, abs=0.01)
    assert loc.s_m == pytest.approx(4.0, abs=0.01)
    assert track.locate(1.0, -2.5 - 0.45).cte_m == pytest.approx(0.45, abs=0.01)


def test_pose_at_wraps_and_interpolates_across_the_seam() -> None:
    track = circle_track(radius_m=3.0)
    length = track.length_m
    a = track.pose_at(length - 0.01)
    b = track.pose_at(-0.01)
    assert a == pytest.approx(b, abs=1e-9)
    x, y, yaw = track.pose_at(0.0)
    assert (x, y) == pytest.approx((3.0, 0.0), abs=1e-3)
    assert yaw == pytest.approx(math.pi / 2, abs=1e-3)


def test_locate_with_a_stale_hint_falls_back_to_a_global_search() -> None:
    track = circle_track(radius_m=3.0)
    far_hint = track.locate(-3.0, 0.0).index
    assert track.locate(3.0, 0.0, hint=far_hint).s_m == pytest.approx(0.0, abs=0.02) or \
        track.locate(3.0, 0.0, hint=far_hint).s_m == pytest.approx(track.length_m, abs=0.02)


@pytest.mark.parametrize("count", [8, 12, 16, 24, 36, 100, 500, 2000])
def test_any_point_density_gives_the_same_curve(count: int) -> None:
    """A tight circle (radius 0.6 m, allowed down to 0.46 m) at any density: accepted, with
    its radius and length kept within a few percent."""
    track = parse_track(json.dumps({"name": "c", "width_m": 0.8,
                                    "centerline": circle_points(0.6, count)}),
                        "circle", TURN_RADIUS_M)
    radius = 1 / np.abs(track.curve.curvature)
    assert radius.min() == pytest.approx(0.6, rel=0.06)
    assert radius.max() == pytest.approx(0.6, rel=0.06)
    assert track.length_m == pytest.approx(math.tau * 0.6, rel=0.01)


def test_builtins_load_and_round_trip_through_json(tmp_path: Path) -> None:
    assert set(builtin_names()) >= {"oval", "technical", "diyrobocars"}
    for name in builtin_names():
        track = load_track(name, TURN_RADIUS_M)
        assert track.min_radius_m >= 1.2 * TURN_RADIUS_M
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(track_json(track, points_every_m=0.25)))
        again = load_track(str(path), TURN_RADIUS_M)
        assert again.length_m == pytest.approx(track.length_m, rel=2e-3)
        assert again.style == track.style


def test_random_tracks_are_deterministic_and_differ_by_seed() -> None:
    a, b, c = (random_track(s, TURN_RADIUS_M) for s in (5, 5, 6))
    assert np.array_equal(a.curve.xy, b.curve.xy)
    assert a.length_m != c.length_m
    assert load_track("random:5", TURN_RADIUS_M).length_m == a.length_m


def _track_file(tmp_path: Path, data: object) -> str:
    path = tmp_path / "t.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


FIGURE_EIGHT = [[3 * math.sin(t), 1.5 * math.sin(2 * t)] for t in np.linspace(0, math.tau, 40,
                                                                             endpoint=False)]
# A dumbbell whose waist brings two parts of the road 0.6 m apart: the roads overlap.
PINCHED = [[6 * math.cos(t), (0.3 + 3 * math.cos(t) ** 2) * math.sin(t)]
           for t in np.linspace(0, math.tau, 60, endpoint=False)]
HAIRPIN = [[0, 0], [4, 0], [4.3, 0.15], [4.3, 0.45], [4, 0.6], [0, 0.6], [-0.3, 0.45],
           [-0.3, 0.15]]


@pytest.mark.parametrize(("data", "message"), [
    ("{not json", "bad JSON at line 1"),
    ([1, 2], "a track file is a JSON object"),
    ({"name": "x", "width_m": 1.0}, "missing \"centerline\""),
    ({"name": "x", "width_m": 1.0, "centreline": []}, "did you mean 'centerline'"),
    ({"name": "x", "width_m": 1.0, "centerline": [[0, 0], [5, 0], [5, 5]]}, "at least 4"),
    ({"name": "x", "width_m": 1.0, "centerline": [[0, 0], [5, 0], [5, 0], [0, 0]]},
     "fewer than 4 distinct points"),
    ({"name": "x", "width_m": 1.0, "centerline": [[0, 0], [1, "a"], [2, 2], [0, 3]]},
     "[x, y] number pairs"),
    ({"name": "x", "width_m": "wide", "centerline": circle_points(3)}, "width_m"),
    ({"name": "x", "width_m": 1.0, "centerline": [[x, 0.0] for x in range(0, 40, 2)]},
     "not closed"),
    ({"name": "x", "width_m": 1.0, "centerline": [[0, 0], [10, 0], [10, 10], [0, 10], [0, 20]]},
     "not closed"),
    ('{"name": "x", "name": "y", "width_m": 1.0, "centerline": []}', "appears twice"),
    ({"name": "x", "width_m": 1.0, "centerline": circle_points(3),
      "style": {"edge_line_width_m": 0.5}}, "does not fit"),
    ({"name": "x", "width_m": 1.0, "centerline": circle_points(3),
      "style": {"flor_rgb": [1, 2, 3]}}, "did you mean 'floor_rgb'"),
    ({"name": "x", "width_m": 1.0, "centerline": FIGURE_EIGHT}, "self-intersecting"),
    ({"name": "x", "width_m": 1.0, "centerline": PINCHED}, "self-intersecting"),
    ({"name": "x", "width_m": 0.5, "centerline": HAIRPIN}, "too tight"),
    ({"name": "x", "width_m": 1.0, "centerline": circle_points(3), "style": {"floor": 1}},
     "unknown style key 'floor'"),
    ({"name": "x", "width_m": 1.0, "centerline": circle_points(3),
      "style": {"texture_seed": -5}}, "whole number ≥ 0"),
    ({"name": "x", "width_m": 1.0, "centerline": [[True, 0], [4, 0], [4, 4], [0, 4]]},
     "[x, y] number pairs"),
    ('{"name": "x", "width_m": 1.0, "centerline": [[1' + "0" * 400 + ', 0], [4, 0], [4, 4], '
     '[0, 4]]}', 'line 1 (key "centerline"): a number of 401 digits is too long'),
    ('{"name": "x", "width_m": ' + "1" * 5000 + ', "centerline": []}',
     'line 1 (key "width_m"): a number of 5000 digits is too long'),
    ("[" * 100_000 + "]" * 100_000, "line 1: arrays or objects nested too deeply"),
    ('{"name": "x",\n "centerline": ' + "[" * 5000 + "]" * 5000 + "}",
     'line 2 (key "centerline"): arrays or objects nested too deeply'),
    ({"name": "x", "width_m": 1.0, "centerline": circle_points(3),
      "style": {"floor_rgb": [1, 2]}}, "[R, G, B]"),
])
def test_bad_tracks_are_rejected_with_the_problem_named(tmp_path: Path, data: object,
                                                        message: str) -> None:
    with pytest.raises(TrackError) as info:
        load_track(_track_file(tmp_path, data), TURN_RADIUS_M)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_unknown_track_names_suggest_a_builtin() -> None:
    with pytest.raises(TrackError, match="did you mean 'oval'"):
        load_track("ovl", TURN_RADIUS_M)
    for spec in ("random:x", "random:²", "random:-1"):
        with pytest.raises(TrackError, match="whole number"):
            load_track(spec, TURN_RADIUS_M)
