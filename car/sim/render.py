"""First-person camera frames, fast enough for 1000+ frames/s at 160x120 on one core.

Everything that depends only on the camera mount is computed once: each pixel's ray, where
it meets the floor in the car's frame, which mip level its footprint needs, and where it
looks in the panorama. A frame is then an affine map of those floor points into the
top-down texture (the homography approach, generalised to a fisheye lens) plus one remap of
the panorama for the sky and the floor's reflection of it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from car.sim.appearance import Appearance
from car.sim.background import PX_PER_RAD, WIDTH, Panorama, make_panorama
from car.sim.lens import Lens
from car.sim.texture import LEVELS, FloorTexture, make_floor_texture
from car.sim.track import Track

FAR_M = 30.0  # floor farther than this is drawn from the panorama's horizon band
FRESNEL_R0 = 0.04
NOISE_BANK = 8


class Renderer:
    """Renders RGB frames of one track with one appearance."""

    def __init__(self, track: Track, appearance: Appearance, width: int = 160, height: int = 120,
                 rng: np.random.Generator | None = None):
        self.track = track
        self.appearance = appearance
        self.lens = Lens(width, height, appearance.camera_fov_deg, appearance.camera_height_m,
                         appearance.camera_pitch_deg)
        a = appearance
        self.texture: FloorTexture = make_floor_texture(
            track, a.style, shadows=a.shadows, distractors=a.distractors,
            seed=a.style.texture_seed)
        self.panorama: Panorama = make_panorama(a.style.background, a.style.floor_rgb,
                                                a.background_seed)
        self._rng = rng or np.random.default_rng(0)
        self._prepare()

    # ------------------------------------------------------------------ set-up

    def _prepare(self) -> None:
        lens, a = self.lens, self.appearance
        rays = lens.rays()
        down = -rays[..., 2]
        with np.errstate(divide="ignore"):
            reach = np.where(down > 1e-6, lens.height_m / down, np.inf)
        ground = (reach * np.hypot(rays[..., 0], rays[..., 1])) < FAR_M
        self.sky_mask = (~ground).astype(np.uint8)
        far = 1e6
        self._ground = np.where(ground[..., None],
                                np.stack([rays[..., 0] * reach, rays[..., 1] * reach], -1),
                                far).astype(np.float32)
        self._bands = self._mip_bands(ground)
        self._floor_levels = tuple(cv2.cvtColor(t, cv2.COLOR_RGB2RGBA) for t in self.texture.levels)

        # The panorama: sky where there is no floor, the mirrored sky (reflection) on it. Its
        # reflection half is pre-weighted by the floor's Fresnel reflectance, which depends
        # only on the elevation, i.e. on the row. It is stored twice side by side, so a yaw
        # shift never needs wrapping.
        elevation = np.arcsin(np.clip(rays[..., 2], -1, 1))
        azimuth = np.arctan2(rays[..., 1], rays[..., 0])
        pano = self.panorama
        rows = pano.row_of(np.abs(elevation))
        self._pano_y = np.where(ground, rows + pano.rows, rows).astype(np.float32)
        self._pano_x = np.mod(-azimuth * PX_PER_RAD, WIDTH).astype(np.float32)
        row_elev = (pano.horizon_row - np.arange(pano.rows)) / PX_PER_RAD
        fresnel = FRESNEL_R0 + (1 - FRESNEL_R0) * (1 - np.sin(np.clip(row_elev, 0, None))) ** 5
        weight = np.clip(fresnel * a.style.reflectivity * 2.0, 0, 1)[:, None, None]
        image = pano.image.astype(np.float32)
        image[pano.rows:] *= weight
        image = cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_RGB2RGBA)
        self._pano_image = np.hstack([image, image])

        h, w = lens.height, lens.width
        yy, xx = np.mgrid[0:h, 0:w]
        r2 = ((xx + 0.5 - w / 2) ** 2 + (yy + 0.5 - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
        # Lens falloff, subtractive: a multiply per frame costs more than the rest of a frame.
        self._vignette = _rgba_u8(a.vignette * r2 * 0.35) if a.vignette > 0 else None
        self._no_floor = np.zeros((h, w, 4), np.uint8)
        self._lut = _colour_lut(a.channel_gain, a.gamma) if a.needs_lut else None
        self._noise = None
        if a.noise_sigma > 0:
            bank = self._rng.normal(0, a.noise_sigma, (NOISE_BANK, h, w, 3))
            bank = np.clip(np.round(bank), -255, 255)
            self._noise = (np.clip(bank, 0, 255).astype(np.uint8),
                           np.clip(-bank, 0, 255).astype(np.uint8))

    def _mip_bands(self, ground: np.ndarray) -> list[tuple[int, int, int]]:
        """Row bands (first, last + 1, level): each drawn from the mip level its footprint needs."""
        g = self._ground.astype(np.float64)
        dv = np.linalg.norm(np.diff(g, axis=0, append=g[-1:]), axis=-1)
        dv[-1] = dv[-2]
        du = np.linalg.norm(np.diff(g, axis=1, append=g[:, -1:]), axis=-1)
        du[:, -1] = du[:, -2]
        texels = np.minimum(dv, 2.0 * du) * self.texture.px_per_m
        levels = []
        first = int(np.argmax(ground.any(axis=1))) if ground.any() else ground.shape[0]
        for r in range(first, ground.shape[0]):
            row = texels[r][ground[r] & np.isfinite(texels[r]) & (texels[r] < 1e5)]
            # The row's sharper half decides (a fisheye row reaches toward the horizon at
            # its ends), rounded down: a little shimmer far away beats blurred lines.
            size = float(np.percentile(row, 25)) if row.size else 2.0 ** (LEVELS - 1)
            levels.append(int(np.clip(math.floor(math.log2(max(size, 1e-6))), 0, LEVELS - 1)))
        bands: list[tuple[int, int, int]] = []
        start = 0
        for r in range(1, len(levels) + 1):
            if r == len(levels) or levels[r] != levels[start]:
                bands.append((first + start, first + r, levels[start]))
                start = r
        return bands

    # ------------------------------------------------------------------ frames

    def render(self, x: float, y: float, yaw: float) -> np.ndarray:
        """The (H, W, 3) uint8 RGB frame seen by a camera over floor point (x, y), facing yaw."""
        tex = self.texture
        ppm = tex.px_per_m
        c, s = math.cos(yaw), math.sin(yaw)
        # Car frame (forward f, left l) → texture pixel: u = (x + f c - l s - x0) ppm - 0.5 ...
        affine = np.array([[c * ppm, -s * ppm, (x - tex.x0) * ppm - 0.5],
                           [-s * ppm, -c * ppm, (tex.y1 - y) * ppm - 0.5]], np.float32)
        # Four channels: OpenCV's remap is about twice as fast on RGBA as on RGB.
        floor = np.zeros((self.lens.height, self.lens.width, 4), np.uint8)
        border = (*tex.border_rgb, 255)
        for r0, r1, level in self._bands:
            maps = cv2.transform(self._ground[r0:r1], affine / (1 << level))
            floor[r0:r1] = cv2.remap(self._floor_levels[level], maps, None, cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=border)
        shift = (-yaw * PX_PER_RAD) % WIDTH
        pano = cv2.remap(self._pano_image, self._pano_x + np.float32(shift), self._pano_y,
                         cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        cv2.copyTo(self._no_floor, self.sky_mask, floor)
        out = cv2.add(floor, pano)  # sky where there is no floor, reflections where there is
        if self._vignette is not None:
            out = cv2.subtract(out, self._vignette)
        return self._finish(cv2.cvtColor(out, cv2.COLOR_RGBA2RGB))

    def _finish(self, out: np.ndarray) -> np.ndarray:
        a = self.appearance
        if self._lut is not None:
            out = cv2.LUT(out, self._lut)
        if a.blur_sigma > 0:
            out = cv2.GaussianBlur(out, (0, 0), a.blur_sigma)
        if self._noise is not None:
            k = int(self._rng.integers(NOISE_BANK))
            out = cv2.subtract(cv2.add(out, self._noise[0][k]), self._noise[1][k])
        return out

    def project(self, x: float, y: float, yaw: float, points_xyz: np.ndarray) -> np.ndarray:
        """Pixel (u, v) of world points (N, 3) in the frame ``render(x, y, yaw)`` makes."""
        p = np.asarray(points_xyz, dtype=float).reshape(-1, 3)
        dx, dy = p[:, 0] - x, p[:, 1] - y
        c, s = math.cos(yaw), math.sin(yaw)
        car = np.stack([dx * c + dy * s, -dx * s + dy * c, p[:, 2]], axis=1)
        return self.lens.project(car)


def _rgba_u8(weight: np.ndarray) -> np.ndarray:
    w = np.clip(np.round(weight * 255), 0, 255).astype(np.uint8)
    return np.repeat(w[..., None], 4, axis=2)


def _colour_lut(gain: tuple[float, ...], gamma: float) -> np.ndarray:
    x = np.arange(256, dtype=np.float64) / 255.0
    channels = [np.clip(255.0 * (x ** gamma) * g, 0, 255) for g in gain]
    return np.stack(channels, axis=1).reshape(256, 1, 3).astype(np.uint8)
