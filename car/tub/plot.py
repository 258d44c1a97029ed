"""`car tub plot`: a model's predictions against the recorded labels, over time (as
donkeycar's tubplot does), drawn with OpenCV. The predictions come from `car replay`'s run
(``car.replay.replay``): the engine, the preprocessing and the drive loop the car drives
with, so what it shows is what the car would do."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from car.errors import CarError

WIDTH, PANEL = 1200, 260
LABEL, MODEL = (200, 120, 40), (40, 140, 255)  # BGR: blue-ish labels, orange predictions


def write_plot(rows: np.ndarray, out: str | os.PathLike, title: str) -> Path:
    out = Path(out)
    panels = [_panel(rows[:, 0], rows[:, 1], rows[:, 3], "steering"),
              _panel(rows[:, 0], rows[:, 2], rows[:, 4], "throttle")]
    header = np.full((36, WIDTH, 3), 255, np.uint8)
    cv2.putText(header, title, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1,
                cv2.LINE_AA)
    image = np.vstack([header, *panels])
    if not cv2.imwrite(str(out), image):
        raise CarError(f"{out}: could not write the image (a .png in an existing folder?)")
    return out


def _panel(x: np.ndarray, label: np.ndarray, model: np.ndarray, name: str) -> np.ndarray:
    img = np.full((PANEL, WIDTH, 3), 255, np.uint8)
    left, right, top, bottom = 60, WIDTH - 20, 10, PANEL - 30
    x0, x1 = float(x.min()), float(max(x.max(), x.min() + 1))

    def px(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        u = left + (xs - x0) / (x1 - x0) * (right - left)
        v = top + (1 - (np.clip(ys, -1, 1) + 1) / 2) * (bottom - top)
        return np.round(np.stack([u, v], 1) * 8).astype(np.int32)

    for level in (-1, 0, 1):
        y = int(top + (1 - (level + 1) / 2) * (bottom - top))
        cv2.line(img, (left, y), (right, y), (220, 220, 220), 1)
        cv2.putText(img, f"{level:+d}", (20, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (90, 90, 90),
                    1, cv2.LINE_AA)
    for series, colour in ((label, LABEL), (model, MODEL)):
        ok = np.isfinite(series)
        if ok.sum() > 1:
            cv2.polylines(img, [px(x[ok], series[ok])], False, colour, 1, cv2.LINE_AA, 3)
    both = np.isfinite(label)
    mae = float(np.abs(label[both] - model[both]).mean()) if both.any() else float("nan")
    cv2.putText(img, f"{name}: recorded (blue) vs model (orange), MAE {mae:.3f}",
                (left, PANEL - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return img
