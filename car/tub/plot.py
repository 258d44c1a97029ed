"""`car tub plot`: a model's predictions against the recorded labels, over time (as
donkeycar's tubplot does), drawn with OpenCV. The predictions come from `car replay`'s run
(``car.replay.replay``): the engine, the preprocessing and the drive loop the car drives
with, so what it shows is what the car would do.

For a categorical model, a heat-map strip under each trace shows its bin probabilities over
time (``BinProbabilities``: the probability outputs its manifest names, from ONNX Runtime
on the ``.onnx``): a tight bright band is a sure model, a smear an unsure one, and the
recorded value is drawn over it in white."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from car.errors import CarError
from deploy.engine import EngineError

WIDTH, PANEL, STRIP = 1200, 260, 150
LEFT, RIGHT = 60, WIDTH - 20  # the time axis, shared by the traces and the strips
LABEL, MODEL = (200, 120, 40), (40, 140, 255)  # BGR: blue-ish labels, orange predictions


class BinProbabilities:
    """A replay hook: the bin probabilities of a categorical model for each frame, as
    (steering (N, S), throttle (N, T)). Engines run only the decoded controls, so this runs
    the model's ``.onnx`` (beside ``model_path``) in ONNX Runtime for the other outputs."""

    def __init__(self, model_path: str | os.PathLike):
        from deploy.onnx_engine import OnnxEngine

        onnx = Path(model_path).with_suffix(".onnx")
        if not onnx.is_file():
            raise CarError(f"{onnx} is not there to give the bin probabilities")
        try:
            self.engine = OnnxEngine(onnx, "cpu")
        except EngineError as exc:
            raise CarError(str(exc)) from None
        m = self.engine.manifest
        steering, throttle = m.control_columns()
        self.names = [m.probabilities[steering], m.probabilities[throttle]]
        self.rows: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])

    def __call__(self, result: Any) -> None:
        x = self.engine.preprocess(result.frame.image)
        outputs = self.engine.session.run(self.names, {self.engine.manifest.input_name: x})
        for rows, probs in zip(self.rows, outputs):
            rows.append(np.asarray(probs, np.float32).reshape(-1))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        steering, throttle = (np.stack(rows) for rows in self.rows)
        return steering, throttle

    def close(self) -> None:
        self.engine.close()


def write_plot(rows: np.ndarray, out: str | os.PathLike, title: str,
               probabilities: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """``rows``: (N, 5) index, recorded steering and throttle, model steering and throttle;
    ``probabilities``: per-row bin probabilities of each control, drawn under its trace."""
    out = Path(out)
    panels = []
    for k, name in enumerate(("steering", "throttle")):
        panels.append(_panel(rows[:, 0], rows[:, 1 + k], rows[:, 3 + k], name))
        if probabilities is not None:
            panels.append(_strip(rows[:, 0], probabilities[k], rows[:, 1 + k], name))
    header = np.full((36, WIDTH, 3), 255, np.uint8)
    cv2.putText(header, title, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1,
                cv2.LINE_AA)
    image = np.vstack([header, *panels, _x_axis(rows[:, 0])])
    if not cv2.imwrite(str(out), image):
        raise CarError(f"{out}: could not write the image (a .png in an existing folder?)")
    return out


def _time_span(x: np.ndarray) -> tuple[float, float]:
    return float(x.min()), float(max(x.max(), x.min() + 1))


def _ticks(x0: float, x1: float, most: int = 12) -> np.ndarray:
    """Round record indexes between ``x0`` and ``x1``: a step of 1, 2 or 5 times a power
    of ten, with at most ``most`` ticks."""
    span = max(x1 - x0, 1.0)
    step = 1.0
    for power in range(0, 10):
        step = next((m * 10.0 ** power for m in (1, 2, 5) if span / (m * 10.0 ** power) <= most),
                    0.0)
        if step:
            break
    return np.arange(np.ceil(x0 / step) * step, x1 + 1e-9, step)


def _u(xs: np.ndarray | float, x0: float, x1: float) -> np.ndarray:
    """Record index to pixel column on the shared time axis."""
    return LEFT + (np.asarray(xs, np.float64) - x0) / (x1 - x0) * (RIGHT - LEFT)


def _x_axis(x: np.ndarray) -> np.ndarray:
    """The time axis under the panels: ticks at round record indexes, and its label."""
    img = np.full((52, WIDTH, 3), 255, np.uint8)
    x0, x1 = _time_span(x)
    cv2.line(img, (LEFT, 4), (RIGHT, 4), (90, 90, 90), 1)
    for tick in _ticks(x0, x1):
        u = round(float(_u(tick, x0, x1)))
        cv2.line(img, (u, 4), (u, 9), (90, 90, 90), 1)
        text = f"{tick:.0f}"
        width = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0]
        cv2.putText(img, text, (u - width // 2, 23), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (60, 60, 60), 1, cv2.LINE_AA)
    label = "record index (_index)"
    width = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)[0][0]
    cv2.putText(img, label, ((LEFT + RIGHT - width) // 2, 44), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (0, 0, 0), 1, cv2.LINE_AA)
    return img


def _grid(img: np.ndarray, x0: float, x1: float, top: int, bottom: int) -> None:
    """Light vertical lines at the axis's ticks."""
    for tick in _ticks(x0, x1):
        u = round(float(_u(tick, x0, x1)))
        cv2.line(img, (u, top), (u, bottom), (235, 235, 235), 1)


def _nearest(x: np.ndarray, times: np.ndarray) -> np.ndarray:
    """For each time, the position of the nearest of the increasing ``x``."""
    if len(x) == 1:
        return np.zeros(len(times), int)
    j = np.clip(np.searchsorted(x, times), 1, len(x) - 1)
    return j - ((times - x[j - 1]) < (x[j] - times)).astype(int)


def _panel(x: np.ndarray, label: np.ndarray, model: np.ndarray, name: str) -> np.ndarray:
    img = np.full((PANEL, WIDTH, 3), 255, np.uint8)
    top, bottom = 34, PANEL - 10
    x0, x1 = _time_span(x)
    _grid(img, x0, x1, top, bottom)

    def px(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        u = LEFT + (xs - x0) / (x1 - x0) * (RIGHT - LEFT)
        v = top + (1 - (np.clip(ys, -1, 1) + 1) / 2) * (bottom - top)
        return np.round(np.stack([u, v], 1) * 8).astype(np.int32)

    for level in (-1, 0, 1):
        y = int(top + (1 - (level + 1) / 2) * (bottom - top))
        cv2.line(img, (LEFT, y), (RIGHT, y), (220, 220, 220), 1)
        cv2.putText(img, f"{level:+d}" if level else "0", (20, y + 4),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
    for series, colour in ((label, LABEL), (model, MODEL)):
        ok = np.isfinite(series)
        if ok.sum() > 1:
            cv2.polylines(img, [px(x[ok], series[ok])], False, colour, 1, cv2.LINE_AA, 3)
    both = np.isfinite(label)
    mae = float(np.abs(label[both] - model[both]).mean()) if both.any() else float("nan")
    cv2.putText(img, f"{name}: recorded (blue) vs model (orange), MAE {mae:.3f}",
                (LEFT, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def _strip(x: np.ndarray, probs: np.ndarray, label: np.ndarray, name: str) -> np.ndarray:
    """The bin probabilities over time: one row per bin (+1 at the top, as on the trace),
    brightness sqrt(p) so that a spread over a few bins still shows; the label in white."""
    img = np.full((STRIP, WIDTH, 3), 255, np.uint8)
    top, bottom = 28, STRIP - 4
    n = probs.shape[1]
    x0, x1 = _time_span(x)
    times = x0 + (np.arange(LEFT, RIGHT) + 0.5 - LEFT) / (RIGHT - LEFT) * (x1 - x0)
    p = np.nan_to_num(probs[_nearest(x, times)].T[::-1], nan=0.0)  # (n, pixels), +1 on top
    shade = np.sqrt(np.clip(p, 0.0, 1.0)) * 255
    heat = cv2.resize(shade.astype(np.uint8), (RIGHT - LEFT, bottom - top),
                      interpolation=cv2.INTER_NEAREST)
    img[top:bottom, LEFT:RIGHT] = cv2.applyColorMap(heat, cv2.COLORMAP_VIRIDIS)
    ok = np.isfinite(label)
    if ok.sum() > 1:
        band = (bottom - top) / n
        u = LEFT + (x[ok] - x0) / (x1 - x0) * (RIGHT - LEFT)
        v = top + (n - 1 - (np.clip(label[ok], -1, 1) + 1) / 2 * (n - 1) + 0.5) * band
        points = np.round(np.stack([u, v], 1) * 8).astype(np.int32)
        cv2.polylines(img, [points], False, (255, 255, 255), 1, cv2.LINE_AA, 3)
    for level, y in (("+1", top + 8), ("-1", bottom - 2)):
        cv2.putText(img, level, (20, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (90, 90, 90), 1,
                    cv2.LINE_AA)
    cv2.putText(img, f"{name}: probability of each of its {n} bins (bright = likely), "
                     "recorded value in white", (LEFT, 18), cv2.FONT_HERSHEY_SIMPLEX,
                0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return img
