"""The simulated camera: a wide-angle lens on the car, as a fixed table of rays.

An equidistant fisheye (image radius = f * angle off the axis), like the 120-160° lenses on
Donkey cars. The horizon bends near the edges, as in the real frames. Car frame: forward,
left, up, from the point on the floor under the lens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Lens:
    width: int
    height: int
    fov_deg: float  # horizontal
    height_m: float  # above the floor
    pitch_deg: float  # tilt below the horizontal

    @property
    def focal_px(self) -> float:
        return (self.width / 2) / math.radians(self.fov_deg / 2)

    def rays(self) -> np.ndarray:
        """(H, W, 3) unit rays through each pixel centre, in the car frame."""
        f = self.focal_px
        u = np.arange(self.width) + 0.5 - self.width / 2
        v = np.arange(self.height) + 0.5 - self.height / 2
        du, dv = np.meshgrid(u, v)
        r = np.hypot(du, dv)
        theta = r / f
        with np.errstate(invalid="ignore", divide="ignore"):
            cos_phi = np.where(r > 0, du / r, 1.0)
            sin_phi = np.where(r > 0, dv / r, 0.0)
        # Camera frame: x right, y down, z along the optical axis.
        xc = np.sin(theta) * cos_phi
        yc = np.sin(theta) * sin_phi
        zc = np.cos(theta)
        pitch = math.radians(self.pitch_deg)
        forward = zc * math.cos(pitch) - yc * math.sin(pitch)
        up = -yc * math.cos(pitch) - zc * math.sin(pitch)
        return np.stack([forward, -xc, up], axis=-1)

    def project(self, points: np.ndarray) -> np.ndarray:
        """Pixel (u, v) of points given in the car frame (forward, left, up), (N, 3) → (N, 2).

        Measured from the image's top-left corner, in pixels (pixel centres at +0.5).
        """
        p = np.asarray(points, dtype=float).reshape(-1, 3)
        forward, left, up = p[:, 0], p[:, 1], p[:, 2] - self.height_m
        pitch = math.radians(self.pitch_deg)
        zc = forward * math.cos(pitch) - up * math.sin(pitch)
        yc = -forward * math.sin(pitch) - up * math.cos(pitch)
        xc = -left
        norm = np.sqrt(xc**2 + yc**2 + zc**2)
        theta = np.arccos(np.clip(zc / np.maximum(norm, 1e-12), -1.0, 1.0))
        phi = np.arctan2(yc, xc)
        r = self.focal_px * theta
        return np.stack([self.width / 2 + r * np.cos(phi), self.height / 2 + r * np.sin(phi)], 1)
