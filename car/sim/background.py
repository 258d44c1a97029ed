"""The world above the floor: a 360° panorama at infinity, like the warehouse around the
DIYRobocars track (dark ceiling, rows of bright lamps, fences, posts, people, banners).

Rows are elevation, columns azimuth, at the same angular resolution. Below it sits the
reflection layer: the lamps as a polished floor mirrors them, blurred into streaks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

WIDTH = 1024  # columns for 360°
PX_PER_RAD = WIDTH / math.tau
TOP_DEG = 88.0  # elevation of row 0
BOTTOM_DEG = -4.0  # elevation of the last row


@dataclass(frozen=True)
class Panorama:
    image: np.ndarray  # (2 * rows, WIDTH, 3) uint8 RGB: the sky half, then the reflection half
    rows: int  # rows per half
    horizon_row: float  # row of elevation 0 in each half

    def row_of(self, elevation_rad: np.ndarray) -> np.ndarray:
        r = self.horizon_row - elevation_rad * PX_PER_RAD
        return np.clip(r, 0.0, self.rows - 1.0)


def make_panorama(kind: str, floor_rgb: tuple[int, int, int], seed: int,
                  brightness: float = 1.0) -> Panorama:
    rows = round(math.radians(TOP_DEG - BOTTOM_DEG) * PX_PER_RAD)
    horizon = math.radians(TOP_DEG) * PX_PER_RAD
    rng = np.random.default_rng([seed, 0xB6])
    sky = _warehouse(rows, horizon, floor_rgb, rng) if kind == "warehouse" else _plain(
        rows, horizon, floor_rgb)
    sky = np.clip(sky * brightness, 0, 255)
    # A polished floor mirrors mostly the bright things: keep what stands out, smear it.
    glow = np.clip(sky - 90.0, 0, None) * 1.6
    glow = cv2.GaussianBlur(glow, (0, 0), sigmaX=2.5, sigmaY=9.0)
    image = np.concatenate([sky, glow], axis=0).astype(np.uint8)
    return Panorama(image=image, rows=rows, horizon_row=horizon)


def _plain(rows: int, horizon: float, floor_rgb: tuple[int, int, int]) -> np.ndarray:
    """A plain room: light walls, a lit ceiling, the floor's colour toward the horizon."""
    elev = (horizon - np.arange(rows))[:, None] / PX_PER_RAD
    wall = np.array([170.0, 168.0, 160.0])
    ceiling = np.array([120.0, 118.0, 112.0])
    t = np.clip(elev / 0.5, 0, 1)[..., None]
    img = wall * (1 - t) + ceiling * t
    img = np.repeat(img, WIDTH, axis=1)
    img[elev[:, 0] < 0] = np.array(floor_rgb, dtype=float) * 0.9
    return img


def _warehouse(rows: int, horizon: float, floor_rgb: tuple[int, int, int],
               rng: np.random.Generator) -> np.ndarray:
    elev_deg = np.degrees((horizon - np.arange(rows)) / PX_PER_RAD)[:, None]
    # Ceiling: dark, a little lighter toward the walls.
    base = np.array([62.0, 60.0, 52.0]) + np.clip(30 - elev_deg, 0, 30)[..., None] * 0.9
    img = np.repeat(base, WIDTH, axis=1).astype(np.float32)
    row = lambda deg: round(horizon - math.radians(deg) * PX_PER_RAD)  # noqa: E731

    # Walls and stuff along them, from the horizon up to about 9°.
    wall_top = row(rng.uniform(10, 16))
    img[wall_top:row(0)] = np.array([58, 56, 48]) + rng.normal(0, 3, 3)
    for _ in range(rng.integers(5, 10)):  # white partitions and dark curtains
        c0 = int(rng.integers(0, WIDTH))
        span = int(rng.integers(30, 140))
        colour = rng.choice([[205, 205, 200], [40, 40, 42], [95, 90, 80]])
        top = row(rng.uniform(6, 18))
        _fill_wrapped(img, top, row(0), c0, span, colour + rng.normal(0, 6, 3))
    for _ in range(rng.integers(30, 60)):  # fence and racking posts
        c0 = int(rng.integers(0, WIDTH))
        _fill_wrapped(img, row(rng.uniform(12, 28)), row(0), c0, int(rng.integers(1, 4)),
                      rng.choice([[150, 150, 150], [70, 70, 70], [200, 200, 190]]))
    for _ in range(rng.integers(2, 5)):  # a pillar in a bright colour
        c0 = int(rng.integers(0, WIDTH))
        _fill_wrapped(img, row(rng.uniform(15, 30)), row(0), c0, int(rng.integers(8, 20)),
                      rng.choice([[40, 120, 200], [200, 60, 50], [220, 200, 60]]))
    for _ in range(rng.integers(10, 30)):  # people and their shadows' worth of colour
        c0 = int(rng.integers(0, WIDTH))
        height = rng.uniform(5, 15)
        colour = rng.uniform(20, 200, 3)
        _fill_wrapped(img, row(height), row(0), c0, int(rng.integers(4, 10)), colour)
    img[row(0.8):row(0)] *= rng.uniform(0.6, 0.9)  # a dark skirting strip
    for c0 in range(0, WIDTH, int(rng.integers(18, 30))):  # bunting along a wire
        r0 = row(rng.uniform(15.5, 16.5))
        colour = rng.choice([[230, 230, 230], [200, 40, 40], [40, 80, 200]])
        tri = np.array([[c0, r0], [c0 + 8, r0], [c0 + 4, r0 + 8]], dtype=np.int32)
        cv2.fillConvexPoly(img, tri, colour.tolist(), lineType=cv2.LINE_AA)

    # Lamps on a grid 5 m up, seen from far and near: small and dense toward the horizon.
    for _ in range(int(rng.integers(300, 450))):
        distance = rng.uniform(2.5, 45.0)
        e = math.degrees(math.atan2(5.0, distance))
        r0 = row(e)
        c0 = rng.uniform(0, WIDTH)
        radius = max(0.8, 30.0 / distance)
        _lamp(img, c0, r0, radius)

    # Below the horizon: floor far away, toward the floor's colour.
    below = elev_deg[:, 0] < 0
    img[below] = np.array(floor_rgb, dtype=np.float32) * 0.85
    return np.clip(img, 0, 255)


def _fill_wrapped(img: np.ndarray, top: int, bottom: int, c0: int, span: int,
                  colour: np.ndarray | list) -> None:
    cols = np.arange(c0, c0 + span) % img.shape[1]
    img[max(0, top):max(0, bottom), cols] = colour


def _lamp(img: np.ndarray, c: float, r: int, radius: float) -> None:
    size = int(radius * 3) + 2
    ys, xs = np.mgrid[-size:size + 1, -size:size + 1]
    blob = np.exp(-(xs**2 + ys**2) / (2 * radius**2))[..., None] * np.array([255, 250, 235])
    rows = np.arange(r - size, r + size + 1)
    ok = (rows >= 0) & (rows < img.shape[0])
    cols = np.arange(int(c) - size, int(c) + size + 1) % img.shape[1]
    region = img[rows[ok]][:, cols]
    img[np.ix_(rows[ok], cols)] = np.maximum(region, blob[ok])
