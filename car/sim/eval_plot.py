"""`car sim eval --plot`: the track map with the driven path coloured by |cte| (by speed at
race pace) and the interventions marked."""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from car.sim.eval import EvalResult
from car.sim.track import Track
from car.sim.view import speed_colours

SIZE_PX = 900  # the map's longer side
MARGIN_PX = 40
HEADER_PX = 84


EXPERT = (170, 40, 150)  # BGR: purple, the expert's path with --vs-expert


def draw_eval_map(track: Track, result: EvalResult, expert: EvalResult | None = None
                  ) -> np.ndarray:
    """A BGR image: edges in grey, the path from green (on the line) to red (at the edge) or,
    at race pace, from blue (slow) to red (fast), a cross at each intervention, and the score
    in the header; with ``expert``, the expert's path as a thin purple line over it."""
    left, right = track.edges()
    pts = np.vstack([left, right])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    scale = (SIZE_PX - 2 * MARGIN_PX) / float(max(hi - lo))
    w = math.ceil((hi[0] - lo[0]) * scale) + 2 * MARGIN_PX
    h = math.ceil((hi[1] - lo[1]) * scale) + 2 * MARGIN_PX
    canvas = np.full((h + HEADER_PX + 30, max(w, 620), 3), 255, np.uint8)

    def px(xy: np.ndarray) -> np.ndarray:  # world (y up) → image (y down)
        xy = np.atleast_2d(xy)
        u = (xy[:, 0] - lo[0]) * scale + MARGIN_PX
        v = (hi[1] - xy[:, 1]) * scale + MARGIN_PX + HEADER_PX
        return np.round(np.stack([u, v], axis=1) * 8).astype(np.int32)

    for edge in (left, right):
        cv2.polylines(canvas, [px(edge)], True, (120, 120, 120), 2, cv2.LINE_AA, 3)
    cv2.polylines(canvas, [px(track.curve.xy)], True, (200, 200, 200), 1, cv2.LINE_AA, 3)
    half = track.width_m / 2
    path = result.path
    by_speed = result.pace == "race"
    # The speed scale spans the laps' speeds (the standing start is below it) and 1 m/s at least.
    top = max(float(path[:, 3].max()), 1.0) if len(path) else 1.0
    low = min(float(np.percentile(path[:, 3], 5)), top - 1.0) if len(path) else 0.0
    if len(path) > 1:
        colours = _speed_colours(np.clip((path[:, 3] - low) / (top - low), 0.0, 1.0)) \
            if by_speed else _colours(np.clip(path[:, 2] / half, 0.0, 1.0))
        p = px(path[:, :2])
        jumps = np.hypot(*np.diff(path[:, :2], axis=0).T) > 0.5  # resets: don't join them
        for k in range(len(p) - 1):
            if not jumps[k]:
                cv2.line(canvas, tuple(p[k]), tuple(p[k + 1]), colours[k], 3, cv2.LINE_AA, 3)
    if expert is not None and len(expert.path) > 1:
        p = px(expert.path[:, :2])
        jumps = np.hypot(*np.diff(expert.path[:, :2], axis=0).T) > 0.5
        for k in range(len(p) - 1):
            if not jumps[k]:
                cv2.line(canvas, tuple(p[k]), tuple(p[k + 1]), EXPERT, 1, cv2.LINE_AA, 3)
    for x, y, _cause in result.intervention_points:
        c = px(np.array([x, y]))[0] // 8
        for d in ((-9, -9, 9, 9), (-9, 9, 9, -9)):
            cv2.line(canvas, (int(c[0] + d[0]), int(c[1] + d[1])),
                     (int(c[0] + d[2]), int(c[1] + d[3])), (0, 0, 220), 3, cv2.LINE_AA)
    x0, y0, yaw = track.pose_at(0.0)
    ahead = np.array([x0 + 1.0 * math.cos(yaw), y0 + 1.0 * math.sin(yaw)])
    cv2.arrowedLine(canvas, tuple(px(np.array([x0, y0]))[0]), tuple(px(ahead)[0]), (40, 40, 40),
                    2, cv2.LINE_AA, 3, 0.3)
    laps = ", ".join(f"{t:.2f}" for t in result.lap_times_s) or "none"
    _text(canvas, f"{track.name}: autonomy {result.autonomy_pct:.1f}%, "
                  f"{result.interventions} intervention(s), laps {result.laps_completed}"
                  f"/{result.laps} ({laps} s)", (12, 26), 0.6)
    _text(canvas, f"{result.pilot[:70]}; |cte| mean {result.mean_abs_cte_m:.3f} m, max "
                  f"{result.max_abs_cte_m:.3f} m; {result.pace} pace, top speed "
                  f"{result.top_speed_mps:.2f} m/s", (12, 50), 0.45)
    if expert is not None:
        laps = ", ".join(f"{t:.2f}" for t in expert.lap_times_s) or "none"
        cv2.line(canvas, (12, 68), (40, 68), EXPERT, 2, cv2.LINE_AA)
        _text(canvas, f"expert (this line): laps {laps} s, |cte| mean "
                      f"{expert.mean_abs_cte_m:.3f} m, top speed {expert.top_speed_mps:.2f} m/s",
              (48, 72), 0.45)
    if by_speed:
        _legend(canvas, _speed_colours, f"speed from {low:.2f} (and below) to {top:.2f} m/s;  "
                "X = intervention")
    else:
        _legend(canvas, _colours, f"|cte| from 0 to {half:.2f} m (the edge);  X = intervention")
    return canvas


def _colours(t: np.ndarray) -> list[tuple[int, int, int]]:
    """0 → green, 0.5 → amber, 1 → red (BGR)."""
    g = np.where(t < 0.5, 180, 180 * (1 - t) * 2).astype(int)
    r = np.where(t < 0.5, 400 * t, 220).astype(int)
    return [(30, int(gg), int(rr)) for gg, rr in zip(g, r)]


def _speed_colours(t: np.ndarray) -> list[tuple[int, int, int]]:
    """0 → dark blue (slow), 1 → dark red (fast): the view's turbo colours, as BGR."""
    return [(b, g, r) for r, g, b in speed_colours(t)]


def _legend(canvas: np.ndarray, colours: Callable[[np.ndarray], list], label: str) -> None:
    y = canvas.shape[0] - 18
    for k in range(200):
        colour = colours(np.array([k / 199]))[0]
        cv2.line(canvas, (12 + k, y - 6), (12 + k, y + 6), colour, 1)
    _text(canvas, label, (222, y + 5), 0.4)


def _text(img: np.ndarray, text: str, org: tuple[int, int], size: float) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, size, (20, 20, 20), 1, cv2.LINE_AA)
