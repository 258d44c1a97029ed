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
NOISE_FIELDS = 16  # unit Gaussian noise images drawn once; a sample picks one and scales it


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
    noise_index: int = 0  # which of the Augmenter's fixed noise fields


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
        self._noise = np.random.default_rng(0xA06).standard_normal(
            (NOISE_FIELDS, height, width, 3), dtype=np.float32)
        self._noise_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

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
            shift_px=float(round(rng.uniform(-self.max_shift_px, self.max_shift_px)))
            if use("shift") else 0.0,
            noise_index=int(rng.integers(NOISE_FIELDS)),
        )

    def apply(self, frames: np.ndarray, steering: np.ndarray, draw: Draw
              ) -> tuple[np.ndarray, np.ndarray]:
        """One sample: (..., h, w, 3) uint8 frames (a sequence gets the same draw on every
        frame) and their steering labels."""
        out, labels = self.apply_batch(frames[None], np.asarray(steering, np.float32)[None],
                                       [draw])
        return out[0], labels[0]

    def apply_batch(self, frames: np.ndarray, steering: np.ndarray, draws: list[Draw]
                    ) -> tuple[np.ndarray, np.ndarray]:
        """A batch: (B, ..., h, w, 3) uint8 frames, (B, ...) steering, one draw per sample.

        Everything stays uint8 and runs as OpenCV calls (a colour LUT, a masked LUT for the
        shadow, saturating adds for the noise): about 1 µs per pixel-channel less than
        float numpy, which matters at thousands of samples a second.
        """
        count = len(draws)
        out = frames.reshape(count, -1, *frames.shape[-3:]).copy()  # (B, T, h, w, 3)
        h, w = out.shape[2:4]
        levels = np.arange(256, dtype=np.float32)
        for b, d in enumerate(draws):
            lut = None
            if d.contrast != 1.0 or d.brightness != 1.0 or d.gains != (1.0, 1.0, 1.0):
                mean = float(out[b].mean()) if d.contrast != 1.0 else 0.0
                gain = np.asarray(d.gains, np.float32) * np.float32(d.brightness)
                lut = np.clip(((levels[:, None] - mean) * d.contrast + mean) * gain, 0, 255)
                lut = lut.astype(np.uint8).reshape(256, 1, 3)
            dark = None
            if d.shadow is not None:
                mask = np.zeros((h, w), np.uint8)
                cv2.fillConvexPoly(mask, d.shadow, 1)
                dark = (levels * d.shadow_factor).astype(np.uint8)
            for t in range(out.shape[1]):
                img = out[b, t]
                if d.shift_px:
                    img = _shift(img, d.shift_px)
                if d.flip:
                    img = img[:, ::-1]
                if lut is not None:
                    img = cv2.LUT(np.ascontiguousarray(img), lut)
                if dark is not None:
                    img = np.ascontiguousarray(img)
                    cv2.copyTo(cv2.LUT(img, dark), mask, img)
                if d.blur_sigma > 0:
                    img = cv2.GaussianBlur(np.ascontiguousarray(img), (0, 0), d.blur_sigma)
                if d.noise_sigma > 0:
                    up, down = self._noise_pair(d)
                    img = cv2.subtract(cv2.add(np.ascontiguousarray(img), up), down)
                out[b, t] = img
        labels = np.array(steering, np.float32).reshape(count, -1).copy()
        labels += np.array([d.shift_px for d in draws], np.float32)[:, None] * np.float32(
            self.steering_per_px)
        flips = np.array([d.flip for d in draws])
        labels[flips] *= -1
        return out.reshape(frames.shape), np.clip(labels, -1.0, 1.0).reshape(np.shape(steering))

    def _noise_pair(self, d: Draw) -> tuple[np.ndarray, np.ndarray]:
        """The positive and negative parts of a noise field at the draw's strength, uint8
        (cached per field and strength in whole levels)."""
        key = (d.noise_index, round(d.noise_sigma))
        pair = self._noise_cache.get(key)
        if pair is None:
            field = self._noise[d.noise_index] * np.float32(key[1])
            pair = (np.clip(field, 0, 255).astype(np.uint8),
                    np.clip(-field, 0, 255).astype(np.uint8))
            self._noise_cache[key] = pair
        return pair


def _shift(img: np.ndarray, px: float) -> np.ndarray:
    """Move the content ``px`` whole pixels right (left if negative), repeating the edge
    column into the gap. Content moving right means the camera looks left of the road, so
    the label gains a right (positive) correction."""
    k = int(px)
    out = np.empty_like(img)
    if k > 0:
        out[:, k:] = img[:, :-k]
        out[:, :k] = img[:, :1]
    elif k < 0:
        out[:, :k] = img[:, -k:]
        out[:, k:] = img[:, -1:]
    else:
        out[:] = img
    return out
