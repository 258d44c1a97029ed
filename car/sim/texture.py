"""The floor seen from above: one image of the whole track, made once per look, with
pre-filtered smaller copies (mip levels) so distant floor does not shimmer."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from car.sim.track import Track, TrackStyle

log = logging.getLogger(__name__)

MARGIN_M = 3.0  # floor drawn around the track
MAX_PX_PER_M = 100.0
MAX_SIDE_PX = 4096
SHARP_PX_PER_M = 50.0  # below this the 5 cm lines start to blur
LEVELS = 5


@dataclass(frozen=True)
class FloorTexture:
    levels: tuple[np.ndarray, ...]  # RGB uint8; level k is 2**k times coarser
    x0: float  # world x of the left edge
    y1: float  # world y of the top edge
    px_per_m: float
    border_rgb: tuple[int, int, int]  # what lies beyond the texture

    def to_pixels(self, xy: np.ndarray) -> np.ndarray:
        """Level-0 pixel coordinates (column, row) of world points, pixel centres at integers."""
        xy = np.asarray(xy, dtype=float)
        return np.stack([(xy[..., 0] - self.x0) * self.px_per_m - 0.5,
                         (self.y1 - xy[..., 1]) * self.px_per_m - 0.5], axis=-1)


def make_floor_texture(track: Track, style: TrackStyle, *, shadows: int = 0,
                       distractors: int = 0, seed: int = 0) -> FloorTexture:
    xmin, ymin, xmax, ymax = track.bounds(MARGIN_M)
    ppm = min(MAX_PX_PER_M, MAX_SIDE_PX / max(xmax - xmin, ymax - ymin))
    w, h = math.ceil((xmax - xmin) * ppm), math.ceil((ymax - ymin) * ppm)
    if ppm < SHARP_PX_PER_M:
        log.warning("track %s spans %.0f m: its floor is drawn at %.1f cm per pixel, so its "
                    "lines look blurred; tracks under %.0f m across are drawn at 2 cm or finer",
                    track.name, max(xmax - xmin, ymax - ymin), 100 / ppm,
                    MAX_SIDE_PX / SHARP_PX_PER_M)
    rng = np.random.default_rng([seed, style.texture_seed, 0xF1])
    tex = FloorTexture(levels=(), x0=xmin, y1=ymax, px_per_m=ppm, border_rgb=style.floor_rgb)

    img = _floor(h, w, ppm, style, rng)
    if shadows:
        img = _shadows(img, ppm, shadows, rng)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if distractors:
        _distractors(img, tex, track, distractors, rng)
    _lines(img, tex, track, style)
    levels = [img]
    for _ in range(LEVELS - 1):
        levels.append(cv2.pyrDown(levels[-1]))
    return FloorTexture(levels=tuple(levels), x0=xmin, y1=ymax, px_per_m=ppm,
                        border_rgb=style.floor_rgb)


def _noise_field(h: int, w: int, cell_px: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field, zero mean, unit-ish amplitude, features about ``cell_px`` wide."""
    gh, gw = max(2, int(h / cell_px) + 2), max(2, int(w / cell_px) + 2)
    small = rng.normal(0, 1, (gh, gw)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _floor(h: int, w: int, ppm: float, style: TrackStyle,
           rng: np.random.Generator) -> np.ndarray:
    colour = np.array(style.floor_rgb, dtype=np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = colour
    if style.floor_texture == "plain":
        return img
    if style.floor_texture == "concrete":
        shade = 1 + 0.05 * _noise_field(h, w, 1.5 * ppm, rng) + 0.03 * _noise_field(
            h, w, 0.3 * ppm, rng)
        grain = rng.normal(0, 2.5, (h, w)).astype(np.float32)
        img *= shade[..., None]
        img += grain[..., None]
        seam = max(1, round(0.006 * ppm))  # saw cuts between slabs, every few metres
        step = int(rng.uniform(3.0, 5.0) * ppm)
        offset = int(rng.integers(0, step))
        for c in range(offset, w, step):
            img[:, c:c + seam] *= 0.8
        for r in range(offset, h, step):
            img[r:r + seam] *= 0.8
    else:  # carpet: strong fine fibre noise, little large-scale variation
        shade = 1 + 0.03 * _noise_field(h, w, 2.0 * ppm, rng)
        fibre = cv2.GaussianBlur(rng.normal(0, 14, (h, w)).astype(np.float32), (0, 0), 0.7)
        img *= shade[..., None]
        img += fibre[..., None]
    return img


def _shadows(img: np.ndarray, ppm: float, count: int, rng: np.random.Generator) -> np.ndarray:
    """Soft dark bands and blobs, as cast by pillars, people and furniture."""
    h, w = img.shape[:2]
    scale = 8
    mask = np.ones((h // scale + 1, w // scale + 1), np.float32)
    for _ in range(count):
        cx, cy = rng.uniform(0, mask.shape[1]), rng.uniform(0, mask.shape[0])
        length = rng.uniform(0.5, 4.0) * ppm / scale
        width = rng.uniform(0.15, 1.0) * ppm / scale
        angle = rng.uniform(0, 180)
        box = cv2.boxPoints(((cx, cy), (length, width), angle)).astype(np.int32)
        cv2.fillConvexPoly(mask, box, float(rng.uniform(0.45, 0.8)))
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.08 * ppm / scale))
    mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR)
    return img * mask[..., None]


def _distractors(img: np.ndarray, tex: FloorTexture, track: Track, count: int,
                 rng: np.random.Generator) -> None:
    """Things lying on the floor: tape, paper, leaves of colour; mostly off the road."""
    for _ in range(count):
        s = rng.uniform(0, track.length_m)
        x, y, yaw = track.pose_at(s)
        side = rng.choice([-1, 1]) * rng.uniform(0.0, track.width_m * 1.2)
        px = tex.to_pixels(np.array([x - side * math.sin(yaw), y + side * math.cos(yaw)]))
        size = rng.uniform(0.04, 0.3) * tex.px_per_m
        aspect = rng.uniform(0.1, 1.0)
        box = cv2.boxPoints(((float(px[0]), float(px[1])), (size, size * aspect),
                             float(rng.uniform(0, 180))))
        colour = rng.integers(0, 256, 3).tolist()
        cv2.fillConvexPoly(img, np.round(box * 8).astype(np.int32), colour, cv2.LINE_AA, shift=3)


def _lines(img: np.ndarray, tex: FloorTexture, track: Track, style: TrackStyle) -> None:
    shift = 3  # sub-pixel positions: coordinates in 1/8 pixel
    ppm = tex.px_per_m

    def poly(xy: np.ndarray) -> np.ndarray:
        return np.round(tex.to_pixels(xy) * (1 << shift)).astype(np.int32)

    left, right = track.edges()
    edge_px = max(1, round(style.edge_line_width_m * ppm))
    cv2.polylines(img, [poly(left), poly(right)], True, style.edge_line_rgb, edge_px,
                  cv2.LINE_AA, shift)
    c = track.curve
    period = style.dash_length_m + style.dash_gap_m
    phase = (c.s % period) < style.dash_length_m
    dashes = []
    start = None
    for i, on in enumerate(phase):
        if on and start is None:
            start = i
        elif not on and start is not None:
            dashes.append(poly(c.xy[start:i + 1]))
            start = None
    if start is not None:
        dashes.append(poly(c.xy[start:]))
    centre_px = max(1, round(style.center_line_width_m * ppm))
    cv2.polylines(img, dashes, False, style.center_line_rgb, centre_px, cv2.LINE_AA, shift)
