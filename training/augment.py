"""Training-only image augmentations: seeded, each switchable, numpy/OpenCV on uint8 frames.

Geometric ones change the label too: a horizontal flip negates steering; a horizontal
shift (a small yaw of the camera) adds a steering correction toward the road, the
PilotNet viewpoint trick. A sequence gets the same draw on every frame.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from training.records import DataError

ALL = ("brightness", "contrast", "colour", "blur", "noise", "shadow", "flip", "shift")
DEFAULT = ALL
CHANCE = 0.5  # each enabled augmentation applies to about half the samples


def parse_augmentations(text: str | None, disabled: bool = False) -> tuple[str, ...]:
    """``--aug brightness,flip`` → the names; ``--no-aug`` → none; neither → all."""
    if disabled:
        return ()
    if text is None:
        return DEFAULT
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise DataError(f"unknown augmentation(s) {', '.join(unknown)}; known: {', '.join(ALL)}")
    return names


@dataclass(frozen=True)
class Draw:
    """One sample's random choices, applied alike to every frame of a sequence."""

    brightness: float = 1.0
    contrast: float = 1.0
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    shadow: np.ndarray | None = None  # polygon in pixels, and its darkness below
    shadow_factor: float = 1.0
    flip: bool = False
    shift_px: float = 0.0
    noise_seed: int = 0


class Augmenter:
    """``steering_per_px``: steering correction per pixel of shift at the model's width."""

    def __init__(self, enabled: Iterable[str], width: int, height: int, *,
                 max_shift_px: float | None = None, steering_per_px: float | None = None):
        self.enabled = frozenset(enabled)
        self.width, self.height = width, height
        self.max_shift_px = max_shift_px if max_shift_px is not None else width * 0.08
        # About 0.01 per pixel at 160 px wide (a 130° lens): a 10 px yaw is ~8°, which a
        # pure-pursuit driver answers with about 0.1 of steering.
        self.steering_per_px = (steering_per_px if steering_per_px is not None
                                else 0.01 * 160 / width)

    def draw(self, rng: np.random.Generator) -> Draw:
        on = self.enabled

        def use(name: str) -> bool:
            return name in on and rng.random() < CHANCE

        shadow = None
        factor = 1.0
        if use("shadow"):
            xs = rng.uniform(0, self.width, 2)
            shadow = np.array([[xs[0], 0], [xs[1], self.height], [self.width, self.height],
                               [self.width, 0]] if rng.random() < 0.5 else
                              [[0, 0], [0, self.height], [xs[1], self.height], [xs[0], 0]],
                              dtype=np.int32)
            factor = float(rng.uniform(0.45, 0.8))
        return Draw(
            brightness=float(rng.uniform(0.6, 1.4)) if use("brightness") else 1.0,
            contrast=float(rng.uniform(0.6, 1.4)) if use("contrast") else 1.0,
            gains=tuple(float(g) for g in rng.uniform(0.85, 1.15, 3)) if use("colour")
            else (1.0, 1.0, 1.0),
            blur_sigma=float(rng.uniform(0.5, 1.5)) if use("blur") else 0.0,
            noise_sigma=float(rng.uniform(2.0, 10.0)) if use("noise") else 0.0,
            shadow=shadow, shadow_factor=factor,
            flip=use("flip"),
            shift_px=float(rng.uniform(-self.max_shift_px, self.max_shift_px))
            if use("shift") else 0.0,
            noise_seed=int(rng.integers(2**31)),
        )

    def apply(self, frames: np.ndarray, steering: np.ndarray, draw: Draw
              ) -> tuple[np.ndarray, np.ndarray]:
        """Augment (..., h, w, 3) uint8 frames and their steering labels (same leading shape
        as the frames' sequence axis, or a scalar array)."""
        steering = np.array(steering, dtype=np.float32, copy=True)
        many = frames.reshape(-1, *frames.shape[-3:])
        out = np.empty_like(many)
        noise_rng = np.random.default_rng(draw.noise_seed)
        noise = (noise_rng.normal(0, draw.noise_sigma, many.shape[1:]).astype(np.float32)
                 if draw.noise_sigma > 0 else None)
        for k, frame in enumerate(many):
            out[k] = self._one(frame, draw, noise)
        if draw.shift_px:
            steering = steering + draw.shift_px * self.steering_per_px
        if draw.flip:
            steering = -steering
        return out.reshape(frames.shape), np.clip(steering, -1.0, 1.0)

    def _one(self, frame: np.ndarray, d: Draw, noise: np.ndarray | None) -> np.ndarray:
        img = frame
        if d.shift_px:
            # Content moves right by shift_px: the camera looks left of the road, so the
            # label gains a right (positive) correction in apply().
            m = np.float32([[1, 0, d.shift_px], [0, 1, 0]])
            img = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]),
                                 borderMode=cv2.BORDER_REPLICATE)
        if d.flip:
            img = img[:, ::-1]
        x = img.astype(np.float32)
        if d.contrast != 1.0:
            mean = x.mean()
            x = (x - mean) * d.contrast + mean
        if d.brightness != 1.0 or d.gains != (1.0, 1.0, 1.0):
            x *= np.float32(d.brightness) * np.asarray(d.gains, np.float32)
        if d.shadow is not None:
            mask = np.zeros(x.shape[:2], np.uint8)
            cv2.fillConvexPoly(mask, d.shadow, 1)
            x[mask.astype(bool)] *= d.shadow_factor
        if d.blur_sigma > 0:
            x = cv2.GaussianBlur(x, (0, 0), d.blur_sigma)
        if noise is not None:
            x += noise
        return np.clip(x, 0, 255).astype(np.uint8)
