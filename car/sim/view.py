"""`car sim view`: a top-down map of a track beside camera frames from around it."""

from __future__ import annotations

import math

import cv2
import numpy as np

from car.sim.world import Simulator

FRAME_SCALE = 2
COLUMNS = 4


def draw_view(sim: Simulator, frames: int = 8) -> np.ndarray:
    """An RGB image: the map (numbered camera positions) and the frames seen there."""
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
    view = np.hstack([_map(sim, positions, strip.shape[0]), strip])
    title = (f"{track.name}: {track.length_m:.1f} m, width {track.width_m:g} m, "
             f"tightest radius {track.min_radius_m:.2f} m")
    bar = np.full((28, view.shape[1], 3), 24, np.uint8)
    _label(bar, title, (8, 19), size=0.55)
    return np.vstack([bar, view])


def _map(sim: Simulator, positions: list[tuple[float, float, float]], height: int) -> np.ndarray:
    tex = sim.renderer.texture
    level = tex.levels[0]
    scale = height / level.shape[0]
    if level.shape[1] * scale > 1400:  # a long track: fit the width instead
        scale = 1400 / level.shape[1]
    img = cv2.resize(level, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((height, img.shape[1], 3), 24, np.uint8)
    canvas[:img.shape[0]] = img

    def px(xy: np.ndarray) -> np.ndarray:
        return np.round((tex.to_pixels(xy) + 0.5) * scale * 8).astype(np.int32)

    track = sim.track
    left, right = track.edges()
    for edge in (left, right):
        cv2.polylines(canvas, [px(edge)], True, (255, 80, 60), 1, cv2.LINE_AA, 3)
    cv2.polylines(canvas, [px(track.curve.xy)], True, (80, 220, 255), 1, cv2.LINE_AA, 3)
    x, y, yaw = track.pose_at(0.0)  # start line and direction of travel
    ahead = np.array([x + 1.5 * math.cos(yaw), y + 1.5 * math.sin(yaw)])
    cv2.arrowedLine(canvas, tuple(px(np.array([x, y]))), tuple(px(ahead)), (255, 255, 255), 2,
                    cv2.LINE_AA, 3, 0.3)
    for k, (cx, cy, _) in enumerate(positions):
        p = px(np.array([cx, cy])) // 8
        cv2.circle(canvas, tuple(int(v) for v in p), 9, (20, 20, 20), -1, cv2.LINE_AA)
        _label(canvas, str(k + 1), (int(p[0]) - 5, int(p[1]) + 5), size=0.45)
    return canvas


def _label(img: np.ndarray, text: str, org: tuple[int, int], size: float = 0.6) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, size, (255, 255, 255), 1, cv2.LINE_AA)
