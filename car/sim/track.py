"""A track: a closed centreline with a width and a look, and the queries the sim needs on it
(where is the car along it, how far off it, what pose is on it)."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from car.errors import TrackError
from car.sim.geometry import Curve, closest_approach, periodic_spline, segments_cross, thin_points

SAMPLE_M = 0.02  # spacing of the resampled centreline
THIN_M = 0.25  # denser input is averaged down to this spacing before the spline
MAX_EXTENT_M = 300.0
MAX_KNOTS = 1000  # the spline's knots; a long dense centreline is averaged down to this


@dataclass(frozen=True)
class TrackStyle:
    """How a track looks. Every field can be set in a track file's ``"style"`` object."""

    floor_rgb: tuple[int, int, int] = (98, 96, 60)  # the shared real tub's olive-grey floor
    edge_line_rgb: tuple[int, int, int] = (240, 240, 205)
    center_line_rgb: tuple[int, int, int] = (190, 178, 70)
    edge_line_width_m: float = 0.05
    center_line_width_m: float = 0.05
    dash_length_m: float = 0.30
    dash_gap_m: float = 0.30
    floor_texture: str = "concrete"  # concrete | carpet | plain
    reflectivity: float = 0.5  # 0 = matte; polished concrete reflects the lights
    background: str = "warehouse"  # warehouse | plain
    texture_seed: int = 0

    FLOOR_TEXTURES = ("concrete", "carpet", "plain")
    BACKGROUNDS = ("warehouse", "plain")

    @classmethod
    def from_json(cls, data: Any, where: str) -> TrackStyle:
        if not isinstance(data, dict):
            raise TrackError(f"{where}: \"style\" must be an object of style keys")
        names = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in names:
                close = difflib.get_close_matches(key, list(names), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise TrackError(f"{where}: unknown style key '{key}'{hint}; known: "
                                 f"{', '.join(sorted(names))}")
            default = names[key].default
            values[key] = _style_value(key, value, default, where)
        style = cls(**values)
        if style.floor_texture not in cls.FLOOR_TEXTURES:
            raise TrackError(f"{where}: style floor_texture '{style.floor_texture}' is not one "
                             f"of {', '.join(cls.FLOOR_TEXTURES)}")
        if style.background not in cls.BACKGROUNDS:
            raise TrackError(f"{where}: style background '{style.background}' is not one of "
                             f"{', '.join(cls.BACKGROUNDS)}")
        return style


def _style_value(key: str, value: Any, default: Any, where: str) -> Any:
    bad = f"{where}: style {key} = {value!r} is not "
    if isinstance(default, tuple):
        ok = (isinstance(value, list) and len(value) == 3
              and all(isinstance(v, int) and 0 <= v <= 255 for v in value))
        if not ok:
            raise TrackError(bad + "an [R, G, B] list of integers 0-255")
        return tuple(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise TrackError(bad + "a string")
        return value
    if isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
            raise TrackError(bad + "a whole number ≥ 0")
        return value
    limits = (0.0, 1.0) if key == "reflectivity" else (0.005, 2.0)
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not limits[0] <= value <= limits[1]):
        raise TrackError(bad + f"a number in [{limits[0]}, {limits[1]}]")
    return float(value)


@dataclass(frozen=True)
class Location:
    """Where a point is relative to the centreline."""

    index: int  # nearest centreline sample
    s_m: float  # progress along the centreline, in [0, length)
    cte_m: float  # signed cross-track error, positive right of the direction of travel


@dataclass(frozen=True)
class Track:
    name: str
    width_m: float
    curve: Curve
    style: TrackStyle = field(default_factory=TrackStyle)
    source: str = ""
    description: str = ""

    @property
    def length_m(self) -> float:
        return self.curve.length_m

    @property
    def min_radius_m(self) -> float:
        return 1.0 / float(np.max(np.abs(self.curve.curvature)))

    def bounds(self, margin_m: float = 0.0) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the centreline, grown by half the width and a margin."""
        grow = self.width_m / 2 + margin_m
        lo = self.curve.xy.min(axis=0) - grow
        hi = self.curve.xy.max(axis=0) + grow
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    def pose_at(self, s_m: float) -> tuple[float, float, float]:
        """(x, y, yaw) on the centreline at progress ``s_m``, facing the direction of travel."""
        c = self.curve
        pos = (s_m % c.length_m) / c.ds
        i = int(pos)
        frac = pos - i
        j = (i + 1) % len(c.s)
        x, y = c.xy[i] * (1 - frac) + c.xy[j] * frac
        dyaw = math.remainder(float(c.heading[j] - c.heading[i]), math.tau)
        return float(x), float(y), math.remainder(float(c.heading[i]) + frac * dyaw, math.tau)

    def locate(self, x: float, y: float, hint: int | None = None) -> Location:
        """The car's place on the track. ``hint`` (the last index) makes it a local search."""
        c = self.curve
        n = len(c.s)
        if hint is None:
            i = int(np.argmin(np.sum((c.xy - (x, y)) ** 2, axis=1)))
        else:
            half = int(1.5 / c.ds)
            window = np.arange(hint - half, hint + half + 1) % n
            k = int(np.argmin(np.sum((c.xy[window] - (x, y)) ** 2, axis=1)))
            i = int(window[k])
            far = (x - c.xy[i, 0]) ** 2 + (y - c.xy[i, 1]) ** 2 > self.width_m**2
            if k in (0, len(window) - 1) or far:  # the hint is stale: search everywhere
                return self.locate(x, y, None)
        cx, cy = c.xy[i]
        h = float(c.heading[i])
        tx, ty = math.cos(h), math.sin(h)
        dx, dy = x - float(cx), y - float(cy)
        s = (float(c.s[i]) + dx * tx + dy * ty) % c.length_m
        return Location(index=i, s_m=s, cte_m=-(tx * dy - ty * dx))

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) edge polylines, each (N, 2), at half the width from the centreline."""
        h = self.curve.heading
        normal_left = np.stack([-np.sin(h), np.cos(h)], axis=1)
        half = self.width_m / 2
        return self.curve.xy + half * normal_left, self.curve.xy - half * normal_left


def build_track(name: str, width_m: float, points: Any, *, style: TrackStyle | None = None,
                min_turn_radius_m: float, where: str, description: str = "") -> Track:
    """Validate a centreline and make the track, or raise a TrackError naming the problem.

    ``min_turn_radius_m`` is the tightest radius the car can follow; curves must be a margin
    wider than that, and wider than half the track so the inner edge does not fold.
    """
    pts = _check_points(points, width_m, where)
    perimeter = float(np.linalg.norm(np.diff(pts, axis=0, append=pts[:1]), axis=1).sum())
    pts = thin_points(pts, max(THIN_M, perimeter / MAX_KNOTS))
    if len(pts) < 4:
        raise TrackError(f"{where}: the centreline has fewer than 4 distinct points")
    style = style or TrackStyle()
    widest = max(style.edge_line_width_m, style.center_line_width_m)
    if widest > width_m / 4:
        raise TrackError(f"{where}: a style line width of {widest:g} m does not fit a "
                         f"{width_m:g} m wide track; keep lines under a quarter of the width")
    curve = periodic_spline(pts, SAMPLE_M)
    track = Track(name=name, width_m=float(width_m), curve=curve, style=style,
                  source=where, description=description)
    _check_drivable(track, min_turn_radius_m, where)
    return track


def _check_points(points: Any, width_m: Any, where: str) -> np.ndarray:
    if (not isinstance(width_m, (int, float)) or isinstance(width_m, bool)
            or not 0.2 <= width_m <= 10):
        raise TrackError(f"{where}: width_m = {width_m!r} must be a number of metres in [0.2, 10]")
    if not isinstance(points, (list, tuple, np.ndarray)) or len(points) < 4:
        count = len(points) if isinstance(points, (list, tuple, np.ndarray)) else 0
        raise TrackError(f"{where}: the centreline needs at least 4 [x, y] points, got {count}")
    pair_error = TrackError(f"{where}: the centreline must be a list of [x, y] number pairs")
    for point in points:
        if (not isinstance(point, (list, tuple, np.ndarray)) or len(point) != 2
                or any(isinstance(v, bool) or not isinstance(v, (int, float, np.number))
                       for v in point)):
            raise pair_error
    try:
        pts = np.array(points, dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise pair_error from None
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise TrackError(f"{where}: the centreline must be a list of [x, y] number pairs")
    if not np.isfinite(pts).all():
        raise TrackError(f"{where}: the centreline holds a NaN or infinite coordinate")
    if np.abs(pts).max() > MAX_EXTENT_M:
        raise TrackError(f"{where}: the centreline reaches beyond ±{MAX_EXTENT_M:.0f} m; "
                         "coordinates are metres")
    # Drop repeated consecutive points, including a last point that repeats the first.
    step = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    pts = np.concatenate([pts[:1], pts[1:][step > 1e-6]])
    if len(pts) > 1 and np.linalg.norm(pts[-1] - pts[0]) <= 1e-6:
        pts = pts[:-1]
    if len(pts) < 4:
        raise TrackError(f"{where}: the centreline has fewer than 4 distinct points")
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    gap = float(np.linalg.norm(pts[-1] - pts[0]))
    # The closing segment is implicit; one much longer than the rest means an open path.
    if gap > float(width_m) and (gap > 3.0 * float(np.median(seg)) or gap > 1.5 * seg.max()):
        raise TrackError(
            f"{where}: the track is not closed: its last point ({pts[-1][0]:.2f}, "
            f"{pts[-1][1]:.2f}) is {gap:.2f} m from its first ({pts[0][0]:.2f}, {pts[0][1]:.2f}); "
            "a centreline is a loop, so end it near where it starts")
    return pts


def _check_drivable(track: Track, min_turn_radius_m: float, where: str) -> None:
    c = track.curve
    k = int(np.argmax(np.abs(c.curvature)))
    radius = 1.0 / max(abs(float(c.curvature[k])), 1e-9)
    x, y = c.xy[k]
    need = 1.2 * min_turn_radius_m
    if radius < need:
        raise TrackError(
            f"{where}: a curve is too tight: radius {radius:.2f} m near ({x:.2f}, {y:.2f}), but "
            f"the car turns no tighter than {min_turn_radius_m:.2f} m and needs {need:.2f} m "
            "with margin; open up that curve")
    if radius < track.width_m / 2:
        raise TrackError(
            f"{where}: a curve is tighter than half the track width: radius {radius:.2f} m near "
            f"({x:.2f}, {y:.2f}) with width_m {track.width_m:g}, so the inner edge folds over "
            "itself; open up the curve or narrow the track")
    step = max(1, int(0.1 / c.ds), len(c.s) // 4000)
    crossing = segments_cross(c.xy, step)
    if crossing is not None:
        px, py = c.xy[crossing[0]]
        raise TrackError(f"{where}: the track is self-intersecting: the centreline crosses itself "
                         f"near ({px:.2f}, {py:.2f})")
    near = closest_approach(c.xy[::step], c.s[::step], c.length_m, 1.65 * track.width_m)
    if near is not None and near.distance_m < track.width_m:
        (ax, ay), (bx, by) = c.xy[::step][near.i], c.xy[::step][near.j]
        if near.distance_m < 0.05:
            raise TrackError(f"{where}: the track is self-intersecting: the centreline crosses "
                             f"or doubles back on itself near ({ax:.2f}, {ay:.2f})")
        raise TrackError(
            f"{where}: the track is self-intersecting: its road near ({ax:.2f}, {ay:.2f}) and "
            f"near ({bx:.2f}, {by:.2f}) is {near.distance_m:.2f} m apart, less than the width "
            f"{track.width_m:g} m, so the two parts overlap; move them apart")
