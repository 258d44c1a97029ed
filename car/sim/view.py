"""`car sim view`: a top-down map of a track, with the racing line coloured by its planned
speed, beside camera frames from around it."""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from car.sim.raceline import RacingLine, racing_line
from car.sim.world import Simulator

FRAME_SCALE = 2
COLUMNS = 4
MAP_MARGIN_M = 0.4  # floor shown around the track's edges on the map
MAX_MAP_WIDTH_PX = 1400
LINE_STEP = 3  # racing-line samples per drawn segment
LEGEND_PX = 30  # the strip under the map that holds the speed legend
LEGEND_BAR_PX = 100
MIN_SPAN_MPS = 1.0  # the colour scale spans at least this, so near-even speeds look even


def draw_view(sim: Simulator, frames: int = 8) -> np.ndarray:
    """An RGB image: the map (numbered camera positions, the racing line by speed) and the
    frames seen there."""
    track = sim.track
    fw, fh = sim.size[0] * FRAME_SCALE, sim.size[1] * FRAME_SCALE
    columns = min(COLUMNS, frames)
    rows = math.ceil(frames / columns)
    strip = np.full((rows * fh, columns * fw, 3), 24, np.uint8)
    positions = []
    for k in range(frames):
        s = k * track.length_m / frames
        sim.reset(s, sim.config.expert_line_m)  # where the expert would drive
        frame = cv2.resize(sim.render(), (fw, fh), interpolation=cv2.INTER_NEAREST)
        _label(frame, str(k + 1), (6, 22))
        r, c = divmod(k, columns)
        strip[r * fh:(r + 1) * fh, c * fw:(c + 1) * fw] = frame
        positions.append(sim.camera_pose())
    sim.reset(0.0)
    line = racing_line(track, sim.params, sim.config.race_margin_m, sim.config.race_grip)
    view = np.hstack([_map(sim, line, positions, strip.shape[0]), strip])
    title = (f"{track.name}: {track.length_m:.1f} m, width {track.width_m:g} m, "
             f"tightest radius {track.min_radius_m:.2f} m;  race lap {line.lap_time_s:.2f} s "
             f"(line + profile, mu {sim.params.mu:g})")
    bar = np.full((28, view.shape[1], 3), 24, np.uint8)
    _label(bar, title, (8, 19), size=0.55)
    return np.vstack([bar, view])


def _map(sim: Simulator, line: RacingLine, positions: list[tuple[float, float, float]],
         height: int) -> np.ndarray:
    """The map: the floor, the edges, the centreline, the racing line coloured by speed,
    the start, the cameras and the speed legend."""
    track = sim.track
    fast = float(line.speed_mps.max())
    slow = min(float(line.speed_mps.min()), fast - MIN_SPAN_MPS)
    legend = _legend_text(line)
    room = LEGEND_BAR_PX + 50 + cv2.getTextSize(legend, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0]
    img, px = _floor(sim, height, room)
    left, right = track.edges()
    for edge in (left, right):
        cv2.polylines(img, [px(edge)], True, (235, 235, 235), 1, cv2.LINE_AA, 3)
    cv2.polylines(img, [px(track.curve.xy)], True, (140, 140, 140), 1, cv2.LINE_AA, 3)
    pts = px(line.curve.xy[::LINE_STEP])
    colours = speed_colours((line.speed_mps[::LINE_STEP] - slow) / (fast - slow))
    for k in range(len(pts)):
        a, b = pts[k], pts[(k + 1) % len(pts)]
        cv2.line(img, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), colours[k], 3,
                 cv2.LINE_AA, 3)
    x, y, yaw = track.pose_at(0.0)  # start line and direction of travel
    ahead = np.array([x + 1.5 * math.cos(yaw), y + 1.5 * math.sin(yaw)])
    cv2.arrowedLine(img, tuple(px(np.array([x, y]))), tuple(px(ahead)), (255, 255, 255), 2,
                    cv2.LINE_AA, 3, 0.3)
    for k, (cx, cy, _) in enumerate(positions):
        p = px(np.array([cx, cy])) // 8
        cv2.circle(img, tuple(int(v) for v in p), 9, (20, 20, 20), -1, cv2.LINE_AA)
        _label(img, str(k + 1), (int(p[0]) - 5, int(p[1]) + 5), size=0.45)
    _legend(img, slow, fast, legend)
    return img


def _floor(sim: Simulator, height: int,
           min_width: int) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The dimmed floor around the track, scaled to ``height`` less the legend (or to the
    widest map allowed) and at least ``min_width`` wide; and the world-to-map function, in
    1/8 px fixed point."""
    tex = sim.renderer.texture
    xmin, ymin, xmax, ymax = sim.track.bounds(MAP_MARGIN_M)
    (c0, r0), (c1, r1) = tex.to_pixels(np.array([[xmin, ymax], [xmax, ymin]])) + 0.5
    level = tex.levels[0]
    c0, r0 = max(0, int(c0)), max(0, int(r0))
    c1, r1 = min(level.shape[1], math.ceil(c1)), min(level.shape[0], math.ceil(r1))
    crop = level[r0:r1, c0:c1]
    scale = min((height - LEGEND_PX) / crop.shape[0], MAX_MAP_WIDTH_PX / crop.shape[1])
    floor = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    pad = max(0, min_width - floor.shape[1]) // 2  # a narrow map is widened
    img = np.full((height, floor.shape[1] + 2 * pad, 3), 24, np.uint8)
    img[:floor.shape[0], pad:pad + floor.shape[1]] = (floor * 0.6).astype(np.uint8)
    shift = np.array([c0 - pad / scale, r0])

    def px(xy: np.ndarray) -> np.ndarray:
        return np.round((tex.to_pixels(xy) + 0.5 - shift) * scale * 8).astype(np.int32)

    return img, px


def speed_colours(t: np.ndarray) -> list[tuple[int, int, int]]:
    """RGB colours for ``t`` in [0, 1]: 0 dark blue (slow) to 1 dark red (fast), OpenCV's
    turbo map, as `car sim eval --plot` draws speeds."""
    levels = np.round(np.clip(np.asarray(t, float), 0.0, 1.0) * 255).astype(np.uint8)
    mapped = cv2.applyColorMap(levels.reshape(-1, 1), cv2.COLORMAP_TURBO).reshape(-1, 3)
    return [(int(r), int(g), int(b)) for b, g, r in mapped]


def _legend_text(line: RacingLine) -> str:
    fast = float(line.speed_mps.max())
    return f"{fast:.1f} m/s (racing line {float(line.speed_mps.min()):.2f} to {fast:.2f})"


def _legend(img: np.ndarray, slow: float, fast: float, text: str) -> None:
    """The colour bar under the map, from ``slow`` to ``fast`` m/s, then ``text``."""
    h = 10
    x0, y0 = 8, img.shape[0] - LEGEND_PX // 2 - h // 2
    cv2.rectangle(img, (0, img.shape[0] - LEGEND_PX), (img.shape[1], img.shape[0]),
                  (24, 24, 24), -1)
    _label(img, f"{slow:.1f}", (x0, y0 + h), size=0.4)
    x0 += 28
    for k, colour in enumerate(speed_colours(np.linspace(0.0, 1.0, LEGEND_BAR_PX))):
        cv2.line(img, (x0 + k, y0), (x0 + k, y0 + h), colour, 1)
    _label(img, text, (x0 + LEGEND_BAR_PX + 6, y0 + h), size=0.4)


def _label(img: np.ndarray, text: str, org: tuple[int, int], size: float = 0.6) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, size, (255, 255, 255), 1, cv2.LINE_AA)
