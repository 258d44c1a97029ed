"""A racing line for the embedded simulator: a minimum-curvature path inside the track,
blended toward the shortest path where that is faster, and the fastest speed profile the
friction circle and the ESC allow along it.

**Stations.** The centreline is resampled at evenly spaced stations every ``KNOT_M`` (at
most ``MAX_KNOTS``), by interpolation: rounding to the nearest 0.02 m sample spaces them
unevenly, and second differences read that as a zigzag. A line is an offset per station
along the right-hand normal, ``p_i = c_i + alpha_i n_i``, with ``|alpha_i| <= width/2 -
margin``; ``periodic_spline`` through the ``p_i`` gives it every 0.02 m, with analytic
curvature. Stations every 0.2 m gave the fastest laps (sum over 9 tracks: 0.1 m 80.86 s,
0.15 m 80.47 s, 0.2 m 80.24 s, 0.3 m 80.54 s).

**Minimum curvature.** A station's curvature is the second difference of the offsets,
linearised about a reference line: ``k_i = kr_i + d''_i + kr_i² d_i / 2`` (``d`` = offset
to the left, ``d''`` its second difference over the spacing squared); its sum of squares is
``∫ k² ds`` along the line, to first order. The plain sum of squared second differences of
the *points* was measured too: it weighs curvature by the local spacing to the fourth power,
so it bunches points on the inside of corners, and its line turned tighter than the
centreline on oval, technical and random:3. The problem is set up again once about the
first solution, resampled evenly along it (TUM's iterative minimum curvature): that lowered
the minimum-curvature laps by 1.1 % over 9 tracks, a second round by 0.1 % more.

**Solver.** ``scipy.optimize.lsq_linear`` was measured on these problems: its sparse (lsmr)
path stopped unconverged (0.47 m off the optimum), converging only with 10,000 lsmr
iterations (26 s); its dense path took 0.5-1.5 s a solve. ``box_lsq`` (projected Newton,
sparse solves) reaches the same optimum, within 1e-10 m, in 25-45 ms.

**Blend.** A minimum-curvature line is longer, which costs time where corners are no limit:
on oval (corners good for 4.2 m/s, above the cap) it laps in 8.31 s against the centreline's
8.09 s. So, like Braghin et al. (2008), the shortest path (least sum of squared steps, an
exact quadratic) is solved too, and the line is the blend ``(1 - e) mc + e sp`` (inside the
bounds, being convex) whose ``e``, in steps of ``BLEND_STEP``, gives the fastest profile,
among those turning no tighter than the centreline (which the track checks vouch for).
The spline can stray past the bound between stations by a millimetre; the offsets are then
scaled toward the centreline until it does not.

**Speed.** ``speed_profile``: the cap is ``min(0.98 top speed, sqrt(grip/|k|))``; a forward
pass accelerates by ``min(drive_accel(v) − turn drag, sqrt(grip² - (v² k)²))`` and a
backward pass brakes by ``min(brake_decel(v) + turn drag, sqrt(grip² - (v² k)²))``, each
twice round the loop. The turn drag is what slipping tyres cost a cornering car of the
dynamic model (``cornering_drag · (v² k)²``): without it the profile plans corner speeds the
motor cannot hold, and the expert lapped 4–8 % slower than planned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from car.errors import SimError
from car.sim.geometry import Curve, periodic_spline
from car.sim.track import SAMPLE_M, Track
from car.sim.vehicle import ROLLING_MPS2, VehicleParams

KNOT_M = 0.2  # station spacing of the optimisation
MAX_KNOTS = 400  # a long track gets a coarser spacing instead of more stations
RELINEARISE = 1  # re-solves about the previous solution (see the module docstring)
BLEND_STEP = 0.1  # grid of the shortest-path share searched for the fastest lap
TOP_SPEED_SHARE = 0.98  # the profile leaves the expert some throttle authority
STALE_HINT_M = 1.0  # RacingLine.locate searches everywhere when the hint lands this far off
CACHE_SIZE = 16


@dataclass(frozen=True)
class GripLimits:
    """What the car can do: the friction circle and the ESC's drive and brake curves."""

    grip_mps2: float  # usable total acceleration (mu*g*race_grip)
    top_speed_mps: float
    max_accel_mps2: float
    drag_per_s: float
    rolling_mps2: float
    brake_mps2: float
    cornering_drag: float = 0.0  # s²/m: drag = cornering_drag × (lateral acceleration)²

    @classmethod
    def from_params(cls, params: VehicleParams, grip_fraction: float) -> GripLimits:
        drag = params.chassis().cornering_drag_per_lateral2() \
            if params.model == "dynamic" else 0.0  # kinematic tyres never slip
        return cls(grip_mps2=params.grip_mps2 * grip_fraction,
                   top_speed_mps=params.top_speed_mps, max_accel_mps2=params.max_accel_mps2,
                   drag_per_s=params.drag_per_s, rolling_mps2=ROLLING_MPS2,
                   brake_mps2=params.brake_mps2, cornering_drag=drag)

    def turn_drag(self, v: float, curvature: float) -> float:
        """The deceleration slipping tyres cause in a turn of ``curvature`` at ``v``."""
        lateral = v * v * curvature
        return self.cornering_drag * lateral * lateral

    def drive_accel(self, v: float) -> float:
        """Full-throttle acceleration at speed ``v`` (never negative)."""
        return max(0.0, self.max_accel_mps2 - self.drag_per_s * v - self.rolling_mps2)

    def brake_decel(self, v: float) -> float:
        """Full-brake deceleration at forward speed ``v`` (positive)."""
        return self.brake_mps2 + self.drag_per_s * max(v, 0.0) + self.rolling_mps2

    def friction_room(self, v: float, curvature: float) -> float:
        """Longitudinal acceleration the friction circle leaves at ``v`` on ``curvature``."""
        lateral = v * v * abs(curvature)
        return math.sqrt(max(0.0, self.grip_mps2**2 - lateral * lateral))


@dataclass(frozen=True)
class RacingLine:
    """A line round the track and the speed to drive it at."""

    curve: Curve  # closed, every SAMPLE_M, heading and signed curvature (+ left)
    speed_mps: np.ndarray  # (N,) target speed at each sample
    accel_mps2: np.ndarray  # (N,) planned acceleration from sample i to i+1
    offset_m: np.ndarray  # (N,) metres right of the centreline (the track's cte)
    lap_time_s: float  # the profile's own lap time
    margin_m: float
    track_name: str

    def locate(self, x: float, y: float, hint: int | None = None) -> int:
        """The nearest sample; ``hint`` (the last index) makes it a local search."""
        c = self.curve
        if hint is None:
            return int(np.argmin(np.sum((c.xy - (x, y)) ** 2, axis=1)))
        half = int(1.5 / c.ds)
        window = np.arange(hint - half, hint + half + 1) % len(c.s)
        d2 = np.sum((c.xy[window] - (x, y)) ** 2, axis=1)
        k = int(np.argmin(d2))
        if k in (0, len(window) - 1) or d2[k] > STALE_HINT_M**2:  # a stale hint
            return self.locate(x, y, None)
        return int(window[k])

    def sample_at(self, s_m: float) -> tuple[float, float, float, float]:
        """(x, y, heading, speed) at arc length ``s_m`` along the line, wrapping."""
        c = self.curve
        pos = (s_m % c.length_m) / c.ds
        i = int(pos) % len(c.s)
        frac = pos - int(pos)
        j = (i + 1) % len(c.s)
        x, y = c.xy[i] * (1 - frac) + c.xy[j] * frac
        dyaw = math.remainder(float(c.heading[j] - c.heading[i]), math.tau)
        heading = math.remainder(float(c.heading[i]) + frac * dyaw, math.tau)
        speed = float(self.speed_mps[i]) * (1 - frac) + float(self.speed_mps[j]) * frac
        return float(x), float(y), heading, speed


def speed_profile(curvature: np.ndarray, ds: float, limits: GripLimits) -> np.ndarray:
    """The fastest speed at each sample of a closed loop: ``sqrt(grip/|k|)`` capped at
    0.98 top speed, a forward pass limited by ``min(drive_accel(v) − turn drag, friction
    room)`` and a backward pass by ``min(brake_decel(v) + turn drag, friction room)`` (the
    turn drag: slipping tyres slow a cornering car, ``cornering_drag · a_y²``), each twice
    round so that the
    wrap is consistent. Each step's limits are taken at its slower end."""
    k = np.abs(np.asarray(curvature, dtype=float))
    with np.errstate(divide="ignore"):
        corner = np.sqrt(limits.grip_mps2 / k)
    v = np.minimum(TOP_SPEED_SHARE * limits.top_speed_mps, corner).tolist()
    kk = k.tolist()
    n = len(v)
    drive, brake, room = limits.drive_accel, limits.brake_decel, limits.friction_room
    turn = limits.turn_drag
    for step in range(2 * n):  # forward: i -> i+1 (a turn's drag may outweigh the motor)
        i, j = step % n, (step + 1) % n
        accel = min(drive(v[i]) - turn(v[i], kk[i]), room(v[i], kk[i]))
        reach = math.sqrt(max(0.0, v[i] ** 2 + 2.0 * ds * accel))
        if reach < v[j]:
            v[j] = reach
    for step in range(2 * n - 1, -1, -1):  # backward: i <- i+1
        i, j = step % n, (step + 1) % n
        decel = min(brake(v[j]) + turn(v[j], kk[j]), room(v[j], kk[j]))
        reach = math.sqrt(v[j] ** 2 + 2.0 * ds * decel)
        if reach < v[i]:
            v[i] = reach
    return np.array(v)


def profile_lap_s(speed_mps: np.ndarray, ds: float) -> float:
    """A closed profile's lap time: each segment at the mean of its end speeds."""
    mean = 0.5 * (speed_mps + np.roll(speed_mps, -1))
    return float(np.sum(ds / np.maximum(mean, 1e-6)))


@dataclass(frozen=True)
class _Stations:
    """The centreline at the optimisation's evenly spaced stations."""

    s: np.ndarray
    xy: np.ndarray
    normal: np.ndarray  # right-hand unit normals
    bound_m: float

    def line(self, track: Track, alpha: np.ndarray) -> tuple[Curve, np.ndarray]:
        """The spline through the offset stations, scaled in until it keeps the bound."""
        for _ in range(20):
            curve = periodic_spline(self.xy + alpha[:, None] * self.normal, SAMPLE_M)
            offsets = line_offsets(track, curve)
            widest = float(np.max(np.abs(offsets)))
            if widest <= self.bound_m:
                return curve, offsets
            alpha = alpha * (self.bound_m / widest) * 0.999
        raise SimError(f"the racing line on {track.name} keeps leaving its "
                       f"{self.bound_m:.3f} m bound; try a wider race_margin_m")


def _stations(track: Track, bound_m: float) -> _Stations:
    c = track.curve
    n = max(16, min(MAX_KNOTS, round(c.length_m / KNOT_M)))
    s = np.arange(n) * (c.length_m / n)
    xy, heading, _ = _resample(c, s)
    normal = np.stack([np.sin(heading), -np.cos(heading)], axis=1)
    return _Stations(s=s, xy=xy, normal=normal, bound_m=bound_m)


def _resample(c: Curve, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xy, heading, curvature) of a curve at arc lengths ``s``, interpolated."""
    def at(values: np.ndarray) -> np.ndarray:
        return np.interp(s, c.s, values, period=c.length_m)

    xy = np.stack([at(c.xy[:, 0]), at(c.xy[:, 1])], axis=1)
    heading = np.arctan2(at(np.sin(c.heading)), at(np.cos(c.heading)))
    return xy, heading, at(c.curvature)


def min_curvature_line(track: Track, margin_m: float) -> tuple[Curve, np.ndarray]:
    """(line curve, offset_m per sample), with ``|offset| <= width/2 - margin``.

    A track too narrow for the margin gets its centreline back, with zero offsets."""
    bound = track.width_m / 2 - margin_m
    if bound <= 0.0:
        return track.curve, np.zeros(len(track.curve.s))
    st = _stations(track, bound)
    return st.line(track, _min_curvature_alpha(track, st))


def blended_line(track: Track, margin_m: float, limits: GripLimits) -> tuple[Curve, np.ndarray]:
    """The minimum-curvature line blended toward the shortest path by the share that gives
    the fastest speed profile, never turning tighter than the centreline does."""
    bound = track.width_m / 2 - margin_m
    if bound <= 0.0:
        return track.curve, np.zeros(len(track.curve.s))
    st = _stations(track, bound)
    mc = _min_curvature_alpha(track, st)
    sp = _shortest_alpha(st)
    tightest = float(np.max(np.abs(track.curve.curvature)))
    best: tuple[float, np.ndarray] | None = None
    for share in np.arange(0.0, 1.0 + 1e-9, BLEND_STEP):
        alpha = (1.0 - share) * mc + share * sp
        curve = periodic_spline(st.xy + alpha[:, None] * st.normal, SAMPLE_M)
        if share > 0.0 and float(np.max(np.abs(curve.curvature))) > tightest:
            continue
        lap = profile_lap_s(speed_profile(curve.curvature, curve.ds, limits), curve.ds)
        if best is None or lap < best[0]:
            best = (lap, alpha)
    assert best is not None  # share 0 always counts
    return st.line(track, best[1])


def _min_curvature_alpha(track: Track, st: _Stations) -> np.ndarray:
    """Station offsets of the minimum-curvature line: one solve about the centreline,
    then ``RELINEARISE`` more about the last line, resampled evenly along it."""
    c = track.curve
    s = st.s
    ref, heading, kappa = _resample(c, s)
    shift = np.zeros(len(s))  # the reference's own offset from the centreline
    for round_ in range(RELINEARISE + 1):
        normal = np.stack([np.sin(heading), -np.cos(heading)], axis=1)
        h = c.length_m / len(s)
        lo = np.minimum(-st.bound_m - shift, 0.0)
        hi = np.maximum(st.bound_m - shift, 0.0)
        alpha = _curvature_lsq(kappa, h, lo, hi)
        c = periodic_spline(ref + alpha[:, None] * normal, SAMPLE_M)
        if round_ < RELINEARISE:
            s = np.arange(len(s)) * (c.length_m / len(s))
            ref, heading, kappa = _resample(c, s)
            shift = np.interp(s, c.s, line_offsets(track, c), period=c.length_m)
    return _station_offsets(track, c, st.s)


def _curvature_lsq(kappa: np.ndarray, h: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Right offsets minimising the squared linearised curvature about a reference of
    curvature ``kappa`` and station spacing ``h`` (see the module docstring)."""
    from scipy.sparse import diags

    n = len(kappa)
    # Curvature as a function of the left offset d = -alpha: k + k² d / 2 + d''.
    main = -(0.5 * kappa**2 - 2.0 / h**2)
    side = np.full(n - 1, -1.0 / h**2)
    corner = np.array([-1.0 / h**2])
    a = diags([main, side, side, corner, corner], [0, 1, -1, n - 1, -(n - 1)])
    return box_lsq(a, -kappa, lo, hi)


def _shortest_alpha(st: _Stations) -> np.ndarray:
    """Station offsets of the shortest path: the least sum of squared steps."""
    from scipy.sparse import coo_matrix

    n = len(st.s)
    rows = np.arange(2 * n)
    here, ahead = np.repeat(np.arange(n), 2), np.repeat((np.arange(n) + 1) % n, 2)
    axis = np.tile([0, 1], n)
    a = coo_matrix((np.concatenate([st.normal[ahead, axis], -st.normal[here, axis]]),
                    (np.concatenate([rows, rows]), np.concatenate([ahead, here]))),
                   shape=(2 * n, n))
    step = (np.roll(st.xy, -1, axis=0) - st.xy).reshape(-1)
    bound = np.full(n, st.bound_m)
    return box_lsq(a, -step, -bound, bound)


def box_lsq(a: Any, b: np.ndarray, lo: np.ndarray, hi: np.ndarray,
            max_iter: int = 200) -> np.ndarray:
    """``argmin |a x - b|²`` subject to ``lo <= x <= hi``, for a sparse ``a`` of full column
    rank: Bertsekas' projected Newton method, a sparse solve on the free variables per step.
    """
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import spsolve

    a = csc_matrix(a)
    hess = (a.T @ a).tocsc()
    rhs = a.T @ b

    def cost(x: np.ndarray) -> float:
        r = a @ x - b
        return 0.5 * float(r @ r)

    x = np.clip(spsolve(hess, rhs), lo, hi)
    for _ in range(max_iter):
        grad = hess @ x - rhs
        eps = min(1e-6, float(np.max(np.abs(x - np.clip(x - grad, lo, hi)))))
        held = ((x <= lo + eps) & (grad > 0)) | ((x >= hi - eps) & (grad < 0))
        step = -grad
        free = np.flatnonzero(~held)
        if len(free):
            step[free] = -spsolve(hess[free][:, free], grad[free])
        f0, t = cost(x), 1.0
        while True:  # Armijo along the projection arc
            trial = np.clip(x + t * step, lo, hi)
            if cost(trial) <= f0 + 1e-4 * float(grad @ (trial - x)) or t < 1e-12:
                break
            t *= 0.5
        moved = float(np.max(np.abs(trial - x)))
        x = trial
        if moved < 1e-12:
            break
    return x


def _station_offsets(track: Track, line: Curve, s: np.ndarray) -> np.ndarray:
    """The offset of ``line`` from the centreline at centreline arc lengths ``s``."""
    along, cte = _locate_all(track, line)
    order = np.argsort(along)
    return np.interp(s, along[order], cte[order], period=track.length_m)


def line_offsets(track: Track, line: Curve) -> np.ndarray:
    """Metres right of the track's centreline at each sample of ``line`` (its cte)."""
    return _locate_all(track, line)[1]


def _locate_all(track: Track, line: Curve) -> tuple[np.ndarray, np.ndarray]:
    """(s_m, cte_m) of every sample of ``line``, as ``Track.locate`` finds them."""
    from scipy.spatial import cKDTree

    c = track.curve
    _, i = cKDTree(c.xy).query(line.xy)
    tx, ty = np.cos(c.heading[i]), np.sin(c.heading[i])
    dx, dy = line.xy[:, 0] - c.xy[i, 0], line.xy[:, 1] - c.xy[i, 1]
    return (c.s[i] + dx * tx + dy * ty) % c.length_m, -(tx * dy - ty * dx)


_CACHE: dict[tuple[object, ...], RacingLine] = {}


def racing_line(track: Track, params: VehicleParams, margin_m: float,
                grip_fraction: float) -> RacingLine:
    """The racing line and its speed profile for the car ``params`` on ``track``, using
    ``grip_fraction`` of its grip and keeping ``margin_m`` inside the edges (cached)."""
    limits = GripLimits.from_params(params, grip_fraction)
    key = (track.name, track.source, round(track.length_m, 6), track.width_m, limits,
           float(margin_m))
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    curve, offsets = blended_line(track, margin_m, limits)
    speed = speed_profile(curve.curvature, curve.ds, limits)
    accel = (np.roll(speed, -1) ** 2 - speed**2) / (2.0 * curve.ds)
    line = RacingLine(curve=curve, speed_mps=speed, accel_mps2=accel, offset_m=offsets,
                      lap_time_s=profile_lap_s(speed, curve.ds), margin_m=float(margin_m),
                      track_name=track.name)
    if len(_CACHE) >= CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = line
    return line
