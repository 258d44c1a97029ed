"""Training-only image augmentations: seeded, each switchable, on uint8 frames.

Geometric ones change the label too: a horizontal flip negates steering; a horizontal
shift (a small yaw of the camera) adds a steering correction toward the road, the
PilotNet viewpoint trick. A sequence gets the same draw on every frame.

Batched (issue 18): one block of random numbers draws the whole batch, the labels
are corrected as arrays, and each sample's frames, stacked into one tall image, take a few
single-pass OpenCV calls: one border and one ``cv2.flip`` for shift and flip, one affine
``cv2.transform`` for brightness, contrast and colour together, a masked copy of the frames
darkened for the shadow, a cached separable Gaussian for the blur and two saturating adds
of a cached field for the noise. Nothing leaves uint8 before ``Preprocess.normalise``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields

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
class Draws:
    """The random choices for a batch, one row per sample (every frame of a sequence
    shares its sample's row). A neutral value means "not applied"."""

    brightness: np.ndarray  # (B,) factor, 1 = unchanged
    contrast: np.ndarray  # (B,) factor about the sample's mean level
    gains: np.ndarray  # (B, 3) per-channel factors
    blur_sigma: np.ndarray  # (B,) pixels, 0 = no blur
    noise_sigma: np.ndarray  # (B,) levels, 0 = no noise
    noise_index: np.ndarray  # (B,) which of the Augmenter's fixed noise fields
    shadow: np.ndarray  # (B, 4, 2) int32 polygon in pixels
    shadow_factor: np.ndarray  # (B,) darkness inside the polygon, 1 = no shadow
    flip: np.ndarray  # (B,) bool
    shift_px: np.ndarray  # (B,) int, whole pixels; positive moves the content right

    def __len__(self) -> int:
        return len(self.flip)

    def __getitem__(self, index: int | slice | np.ndarray) -> Draws:
        """Some of the rows (an int keeps a batch of one)."""
        if isinstance(index, (int, np.integer)):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return Draws(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


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
        self._kernels: dict[int, np.ndarray] = {}
        # The values `draw` picks: the augmentation that decides each, its range, and its
        # value when not applied.
        picks = [("brightness", 0.6, 1.4, 1.0), ("contrast", 0.6, 1.4, 1.0),
                 *[("colour", 0.85, 1.15, 1.0)] * 3, ("blur", 0.5, 1.5, 0.0),
                 ("noise", 2.0, 10.0, 0.0), ("shadow", 0.45, 0.8, 1.0),
                 ("shift", -self.max_shift_px, self.max_shift_px, 0.0)]
        self._decider = np.array([ALL.index(p[0]) for p in picks])
        self._low, high, self._neutral = (np.array([p[i] for p in picks]) for i in (1, 2, 3))
        self._span = high - self._low
        self._on = np.array([name in self.enabled for name in ALL])

    def draw(self, rng: np.random.Generator, count: int = 1) -> Draws:
        """Draws for ``count`` samples, from one block of uniform numbers: the generator
        advances alike whatever is enabled, and one augmentation switched off leaves the
        others' draws as they were."""
        w, h = self.width, self.height
        u = rng.random((count, len(ALL) + len(self._low) + 4))
        chosen = (u[:, :len(ALL)] < CHANCE) & self._on  # (count, 8), in the order of ALL
        values = np.where(chosen[:, self._decider],
                          self._low + self._span * u[:, len(ALL):-4], self._neutral)
        top, bottom, side, field = u[:, -4:].T
        # The shadow's edge runs from `top` to `bottom` across the frame, and it darkens
        # the part right of it, or left: the x of its four corners come from this table.
        table = np.stack([top * w, bottom * w, np.zeros(count), np.full(count, w)], 1)
        corners = np.where((side < 0.5)[:, None], [0, 1, 3, 3], [2, 2, 1, 0])
        shadow = np.empty((count, 4, 2), np.int32)
        shadow[:, :, 0] = np.take_along_axis(table, corners, 1)
        shadow[:, :, 1] = (0, h, h, 0)
        return Draws(brightness=values[:, 0], contrast=values[:, 1], gains=values[:, 2:5],
                     blur_sigma=values[:, 5], noise_sigma=values[:, 6],
                     noise_index=(field * NOISE_FIELDS).astype(np.int64), shadow=shadow,
                     shadow_factor=values[:, 7], flip=chosen[:, ALL.index("flip")],
                     shift_px=np.round(values[:, 8]).astype(np.int64))

    def apply(self, frames: np.ndarray, steering: np.ndarray, draw: Draws
              ) -> tuple[np.ndarray, np.ndarray]:
        """One sample: (..., h, w, 3) uint8 frames (a sequence gets the same draw on every
        frame), their steering labels, and a draw of one."""
        out, labels = self.apply_batch(frames[None], np.asarray(steering, np.float32)[None],
                                       draw)
        return out[0], labels[0]

    def apply_batch(self, frames: np.ndarray, steering: np.ndarray, draws: Draws
                    ) -> tuple[np.ndarray, np.ndarray]:
        """A batch: (B, ..., h, w, 3) uint8 frames, (B, ...) steering, ``draws`` of B rows.
        Returns new arrays of the same shapes; ``frames`` is left as it was."""
        count = len(draws)
        if len(frames) != count:
            raise ValueError(f"{len(frames)} samples but {count} draws")
        h, w = frames.shape[-3:-1]
        # A sample's frames stacked into one tall image: every per-pixel call then covers
        # the whole sequence at once.
        out = np.array(frames, np.uint8).reshape(count, -1, w, 3)  # (B, T*h, w, 3), a copy
        d = draws
        # ((x - mean) * contrast + mean) * gain per channel as one 3x4 affine map; the mean
        # is the whole sequence's, before any geometry, as it always was.
        gain = d.gains * d.brightness[:, None]
        maps = np.zeros((count, 3, 4), np.float32)
        maps[:, [0, 1, 2], [0, 1, 2]] = gain * d.contrast[:, None]
        offsets = gain * (1.0 - d.contrast)[:, None]  # times the mean
        coloured = (d.contrast != 1.0) | (gain != 1.0).any(1)
        for b, (shift, flip, colour, contrast, factor, sigma, noise, field) in enumerate(zip(
                d.shift_px.tolist(), d.flip.tolist(), coloured.tolist(), d.contrast.tolist(),
                d.shadow_factor.tolist(), d.blur_sigma.tolist(), d.noise_sigma.tolist(),
                d.noise_index.tolist(), strict=True)):
            if not (shift or flip or colour or factor != 1.0 or sigma or noise):
                continue
            if contrast != 1.0:
                maps[b, :, 3] = offsets[b] * (sum(cv2.mean(out[b])[:3]) / 3)
            self._pixels(out[b], h, shift, flip, maps[b] if colour else None,
                         d.shadow[b] if factor != 1.0 else None, factor,
                         self._kernel(sigma) if sigma else None,
                         self._noise_pair(field, noise) if noise else None)
        labels = np.array(steering, np.float32).reshape(count, -1)
        labels += d.shift_px[:, None].astype(np.float32) * np.float32(self.steering_per_px)
        labels[d.flip] *= -1
        np.clip(labels, -1.0, 1.0, out=labels)
        return out.reshape(frames.shape), labels.reshape(np.shape(steering))

    @staticmethod
    def _pixels(tall: np.ndarray, h: int, shift: int, flip: bool, colour: np.ndarray | None,
                shadow: np.ndarray | None, factor: float, blur: np.ndarray | None,
                noise: tuple[np.ndarray, np.ndarray] | None) -> None:
        """One sample's (T*h, w, 3) frames, in place: shift, flip, the colour map, the
        shadow (the pixels in a polygon times ``factor``), blur and noise, in that order."""
        img, w = tall, tall.shape[1]
        if shift:  # the content moves right by `shift`, the edge column fills the gap
            wide = cv2.copyMakeBorder(tall, 0, 0, max(shift, 0), max(-shift, 0),
                                      cv2.BORDER_REPLICATE)
            img = wide[:, :w] if shift > 0 else wide[:, -w:]
        # Each step writes into `tall` (OpenCV's per-pixel calls work in place).
        if flip:
            cv2.flip(img, 1, dst=tall)
            img = tall
        if colour is not None:
            cv2.transform(img, colour, dst=tall)
        elif img is not tall:
            tall[:] = img
        if shadow is not None:  # the same polygon on every frame
            mask = np.zeros(tall.shape[:2], np.uint8)
            for top in range(0, len(mask), h):
                cv2.fillConvexPoly(mask[top:top + h], shadow, 1)
            cv2.copyTo(cv2.convertScaleAbs(tall, alpha=factor), mask, tall)
        if blur is not None or noise is not None:
            for top in range(0, len(tall), h):  # frame by frame: no blur across frames
                frame = tall[top:top + h]
                if blur is not None:
                    cv2.sepFilter2D(frame, -1, blur, blur, dst=frame,
                                    borderType=cv2.BORDER_REFLECT_101)
                if noise is not None:
                    cv2.add(frame, noise[0], dst=frame)
                    cv2.subtract(frame, noise[1], dst=frame)

    def _kernel(self, sigma: float) -> np.ndarray:
        """A Gaussian of σ (to 0.05 px) reaching ±2σ: at σ 1.5 it is 7 wide, not OpenCV's
        11, the same look at a third of the work (cached)."""
        key = round(sigma * 20)
        kernel = self._kernels.get(key)
        if kernel is None:
            kernel = cv2.getGaussianKernel(2 * math.ceil(key / 10) + 1, key / 20, cv2.CV_32F)
            self._kernels[key] = kernel
        return kernel

    def _noise_pair(self, index: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """The positive and negative parts of a noise field at ``sigma`` levels, uint8
        (cached per field and strength in whole levels)."""
        key = (index, round(sigma))
        pair = self._noise_cache.get(key)
        if pair is None:
            field = self._noise[index] * np.float32(key[1])
            pair = (np.clip(field, 0, 255).astype(np.uint8),
                    np.clip(-field, 0, 255).astype(np.uint8))
            self._noise_cache[key] = pair
        return pair
