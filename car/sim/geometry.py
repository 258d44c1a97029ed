"""Plane-curve helpers for closed tracks: a periodic cubic spline, arc-length resampling,
and the proximity search that finds where a loop crosses or comes too close to itself."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Curve:
    """A closed curve sampled at even arc length: ``xy[i]`` lies at ``s[i] = i * ds``."""

    s: np.ndarray  # (N,) arc length from the first point, metres
    xy: np.ndarray  # (N, 2) metres
    heading: np.ndarray  # (N,) tangent direction, radians CCW from +x
    curvature: np.ndarray  # (N,) 1/m, positive when the curve turns left (CCW)
    length_m: float

    @property
    def ds(self) -> float:
        return float(self.s[1] - self.s[0])


def thin_points(points: np.ndarray, min_spacing_m: float) -> np.ndarray:
    """Average a dense closed polyline into bins of ``min_spacing_m`` of arc length.

    Only input with at least 4 points per bin on average is thinned: dense input (a traced
    or recorded path with jitter) is denoised before the spline interpolates it. Sparser
    input passes through unchanged. Each bin is averaged over evenly spaced samples of the
    polyline, so uneven input spacing does not bend the result.
    """
    closed = np.concatenate([points, points[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    length = float(seg.sum())
    bins = int(length // min_spacing_m)
    if 4 * bins > len(points) or bins < 4:
        return points
    per_bin = 8
    s = np.concatenate([[0.0], np.cumsum(seg)])
    even = (np.arange(bins * per_bin) + 0.5) * (length / (bins * per_bin))
    samples = np.stack([np.interp(even, s, closed[:, k]) for k in (0, 1)], axis=1)
    return samples.reshape(bins, per_bin, 2).mean(axis=1)


def periodic_spline(points: np.ndarray, ds: float) -> Curve:
    """A C2 periodic cubic spline through ``points`` (chord-length parameter), resampled
    every ``ds`` metres of arc length, with analytic heading and curvature."""
    pts = np.asarray(points, dtype=float)
    n = len(pts)
    h = np.linalg.norm(np.roll(pts, -1, axis=0) - pts, axis=1)  # h[i]: knot i -> i+1
    t = np.concatenate([[0.0], np.cumsum(h)])  # knot parameters, t[n] = period
    # Cyclic tridiagonal system for the second derivatives M (one column per coordinate).
    a = np.zeros((n, n))
    idx = np.arange(n)
    hp = np.roll(h, 1)  # h[i-1]
    a[idx, idx] = 2.0 * (hp + h)
    a[idx, (idx - 1) % n] += hp
    a[idx, (idx + 1) % n] += h
    slope = (np.roll(pts, -1, axis=0) - pts) / h[:, None]
    rhs = 6.0 * (slope - np.roll(slope, 1, axis=0))
    m = np.linalg.solve(a, rhs)

    # Evaluate finely in the parameter, measure arc length, then resample evenly in it.
    fine = np.linspace(0.0, t[-1], max(8 * n, int(t[-1] / (ds / 4.0))), endpoint=False)
    p, d1, d2 = _evaluate(pts, m, h, t, fine)
    seg = np.linalg.norm(np.diff(p, axis=0, append=p[:1]), axis=1)
    s_fine = np.concatenate([[0.0], np.cumsum(seg)])
    length = float(s_fine[-1])
    count = max(16, round(length / ds))
    s = np.arange(count) * (length / count)
    u = np.interp(s, s_fine, np.append(fine, t[-1]))
    p, d1, d2 = _evaluate(pts, m, h, t, u)
    speed = np.linalg.norm(d1, axis=1)
    heading = np.arctan2(d1[:, 1], d1[:, 0])
    curvature = (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]) / np.maximum(speed, 1e-9) ** 3
    return Curve(s=s, xy=p, heading=heading, curvature=curvature, length_m=length)


def _evaluate(pts: np.ndarray, m: np.ndarray, h: np.ndarray, t: np.ndarray,
              u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Position, first and second derivative of the spline at parameters ``u``."""
    n = len(pts)
    i = np.clip(np.searchsorted(t, u, side="right") - 1, 0, n - 1)
    j = (i + 1) % n
    hi = h[i][:, None]
    a = ((t[i + 1] - u) / h[i])[:, None]
    b = 1.0 - a
    mi, mj = m[i], m[j]
    p = a * pts[i] + b * pts[j] + ((a**3 - a) * mi + (b**3 - b) * mj) * hi**2 / 6.0
    d1 = (pts[j] - pts[i]) / hi + ((1 - 3 * a**2) * mi + (3 * b**2 - 1) * mj) * hi / 6.0
    d2 = a * mi + b * mj
    return p, d1, d2


@dataclass(frozen=True)
class Approach:
    """The closest approach between two parts of a curve that are far apart along it."""

    distance_m: float
    i: int
    j: int


def closest_approach(xy: np.ndarray, s: np.ndarray, length_m: float,
                     min_arc_m: float) -> Approach | None:
    """The nearest pair of samples at least ``min_arc_m`` apart along the closed curve."""
    best: Approach | None = None
    chunk = 512
    for start in range(0, len(xy), chunk):
        block = xy[start:start + chunk]
        dist = np.linalg.norm(block[:, None, :] - xy[None, :, :], axis=2)
        arc = np.abs(s[start:start + chunk, None] - s[None, :])
        arc = np.minimum(arc, length_m - arc)
        dist[arc < min_arc_m] = np.inf
        k = int(np.argmin(dist))
        r, c = divmod(k, dist.shape[1])
        if np.isfinite(dist[r, c]) and (best is None or dist[r, c] < best.distance_m):
            best = Approach(float(dist[r, c]), start + r, c)
    return best


def segments_cross(xy: np.ndarray, step: int = 1) -> tuple[int, int] | None:
    """Indexes (i, j) of two non-adjacent segments of the closed polyline that cross."""
    p = xy[::step]
    q = np.roll(p, -1, axis=0)
    n = len(p)
    d = q - p
    for i in range(n):
        # Segment i against every later non-adjacent segment j.
        j = np.arange(i + 2, n if i else n - 1)
        if len(j) == 0:
            continue
        r, sj, dj = d[i], p[j], d[j]
        denom = r[0] * dj[:, 1] - r[1] * dj[:, 0]
        diff = sj - p[i]
        with np.errstate(divide="ignore", invalid="ignore"):
            ta = (diff[:, 0] * dj[:, 1] - diff[:, 1] * dj[:, 0]) / denom
            tb = (diff[:, 0] * r[1] - diff[:, 1] * r[0]) / denom
        hit = (denom != 0) & (ta >= 0) & (ta <= 1) & (tb >= 0) & (tb <= 1)
        if hit.any():
            return i * step, int(j[np.argmax(hit)]) * step
    return None
