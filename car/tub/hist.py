"""`car tub hist`: steering and throttle histograms of one or more tubs, drawn with OpenCV."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from car.errors import TubError
from car.tub.reader import Tub

BINS = 40  # over [-1, 1]: 0.05 wide
PANEL_W, PANEL_H = 560, 380
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 74, 36, 56, 52
INK = (40, 40, 40)
GRID = (225, 225, 225)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def collect(tubs: Sequence[Tub], key: str) -> np.ndarray:
    """All live values of ``key`` across the tubs, as floats."""
    values = []
    for tub in tubs:
        if key not in tub.inputs:
            raise TubError(f"{tub.path}: has no input '{key}' (inputs: {', '.join(tub.inputs)})")
        values += [r[key] for r in tub.records() if isinstance(r.get(key), (int, float))]
    return np.asarray(values, dtype=np.float64)


def draw_panel(values: np.ndarray, title: str, colour: tuple[int, int, int],
               x_label: str = "") -> np.ndarray:
    """One histogram over [-1, 1] on a white panel (BGR image): records per bin up the
    side, the value along the bottom."""
    panel = np.full((PANEL_H, PANEL_W, 3), 255, np.uint8)
    counts, edges = np.histogram(np.clip(values, -1, 1), bins=BINS, range=(-1, 1))
    x0, x1 = MARGIN_L, PANEL_W - MARGIN_R
    y0, y1 = MARGIN_T, PANEL_H - MARGIN_B
    top = max(1, int(counts.max()) if counts.size else 1)
    for frac in (0.25, 0.5, 0.75, 1.0):  # horizontal grid with count labels
        y = int(y1 - frac * (y1 - y0))
        cv2.line(panel, (x0, y), (x1, y), GRID, 1)
        text = f"{round(frac * top)}"
        width = cv2.getTextSize(text, FONT, 0.4, 1)[0][0]
        cv2.putText(panel, text, (x0 - 6 - width, y + 4), FONT, 0.4, INK, 1, cv2.LINE_AA)
    for i, count in enumerate(counts):
        left = int(x0 + (edges[i] + 1) / 2 * (x1 - x0))
        right = int(x0 + (edges[i + 1] + 1) / 2 * (x1 - x0)) - 1
        height = int(count / top * (y1 - y0))
        if height:
            cv2.rectangle(panel, (left, y1 - height), (right, y1), colour, -1)
    cv2.line(panel, (x0, y1), (x1, y1), INK, 1)
    cv2.line(panel, (x0, y0), (x0, y1), INK, 1)
    for tick in (-1.0, -0.5, 0.0, 0.5, 1.0):
        x = int(x0 + (tick + 1) / 2 * (x1 - x0))
        cv2.line(panel, (x, y1), (x, y1 + 5), INK, 1)
        label = f"{tick:+.1f}" if tick else "0"
        size = cv2.getTextSize(label, FONT, 0.45, 1)[0]
        cv2.putText(panel, label, (x - size[0] // 2, y1 + 20), FONT, 0.45, INK, 1, cv2.LINE_AA)
    cv2.putText(panel, title, (x0, 24), FONT, 0.6, INK, 1, cv2.LINE_AA)
    stats = "no values"
    if values.size:
        outside = int(np.count_nonzero(np.abs(values) > 1))
        stats = f"n={values.size}  mean={values.mean():+.3f}  std={values.std():.3f}"
        if outside:
            stats += f"  {outside} outside [-1,1]"
    cv2.putText(panel, stats, (x0, 44), FONT, 0.45, INK, 1, cv2.LINE_AA)
    if x_label:
        width = cv2.getTextSize(x_label, FONT, 0.45, 1)[0][0]
        cv2.putText(panel, x_label, ((x0 + x1 - width) // 2, PANEL_H - 10), FONT, 0.45, INK,
                    1, cv2.LINE_AA)
    _y_label(panel, f"records per {2 / BINS:.2f} bin", (y0 + y1) // 2)
    return panel


def _y_label(panel: np.ndarray, text: str, middle: int) -> None:
    """``text`` written upwards along the panel's left edge, centred on row ``middle``."""
    (width, height), base = cv2.getTextSize(text, FONT, 0.45, 1)
    strip = np.full((height + base + 4, width + 4, 3), 255, np.uint8)
    cv2.putText(strip, text, (2, height + 2), FONT, 0.45, INK, 1, cv2.LINE_AA)
    strip = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    top = max(0, middle - strip.shape[0] // 2)
    strip = strip[: panel.shape[0] - top]
    panel[top:top + strip.shape[0], 4:4 + strip.shape[1]] = strip


def write_histograms(tubs: Sequence[Tub], out: str | Path, steering_key: str = "user/angle",
                     throttle_key: str = "user/throttle") -> Path:
    """Write a PNG with the steering and throttle histograms side by side."""
    out = Path(out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise TubError(f"{out}: name the picture .png (or .jpg)")
    steering = collect(tubs, steering_key)
    throttle = collect(tubs, throttle_key)
    image = np.hstack([
        draw_panel(steering, f"steering ({steering_key})", (200, 120, 40),
                   "steering: -1 full left, +1 full right"),
        draw_panel(throttle, f"throttle ({throttle_key})", (60, 160, 60),
                   "throttle: -1 full reverse, +1 full forward"),
    ])
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), image):
        raise TubError(f"{out}: OpenCV could not write the image; use a .png or .jpg name")
    return out
