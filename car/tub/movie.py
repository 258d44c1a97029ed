"""`car tub movie`: a tub's frames as a video, with the recorded steering and throttle drawn on."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from car.errors import TubError
from car.tub.format import TIMESTAMP_MS
from car.tub.reader import Tub

FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}
PANEL_H = 44
FONT = cv2.FONT_HERSHEY_SIMPLEX


def movie_fps(records: list[dict[str, Any]], default: float = 20.0) -> float:
    """Frame rate from the records' median write interval, else ``default``."""
    stamps = np.array([r[TIMESTAMP_MS] for r in records if TIMESTAMP_MS in r], np.float64)
    steps = np.diff(stamps)
    steps = steps[steps > 0]
    if steps.size == 0:
        return default
    return float(np.clip(1000.0 / np.median(steps), 1.0, 120.0))


def overlay(frame_rgb: np.ndarray, scale: int, record: dict[str, Any], steering_key: str,
            throttle_key: str) -> np.ndarray:
    """The frame scaled up (BGR), with a panel below: steering bar, throttle bar, values."""
    image = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR) if frame_rgb.ndim == 3 else \
        cv2.cvtColor(frame_rgb, cv2.COLOR_GRAY2BGR)
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    h, w = image.shape[:2]
    panel = np.full((PANEL_H, w, 3), 30, np.uint8)
    steering = _value(record, steering_key)
    throttle = _value(record, throttle_key)
    mid, half = w // 2, w // 2 - 8
    cv2.rectangle(panel, (8, 6), (w - 8, 16), (80, 80, 80), 1)
    if steering is not None:  # steering +1 = full right: the bar grows to the right
        end = int(mid + np.clip(steering, -1, 1) * half)
        cv2.rectangle(panel, (min(mid, end), 7), (max(mid, end), 15), (40, 180, 250), -1)
    cv2.line(panel, (mid, 4), (mid, 18), (220, 220, 220), 1)
    if throttle is not None:  # throttle as a vertical bar at the frame's right edge
        top = int(h / 2 - np.clip(throttle, -1, 1) * (h / 2 - 4))
        colour = (60, 200, 60) if throttle >= 0 else (60, 60, 220)
        cv2.rectangle(image, (w - 12, min(h // 2, top)), (w - 4, max(h // 2, top)), colour, -1)
    text = f"#{record.get('_index', '?')}"
    text += f"  steer {steering:+.2f}" if steering is not None else "  steer -"
    text += f"  throttle {throttle:+.2f}" if throttle is not None else "  throttle -"
    if isinstance(record.get("user/mode"), str):
        text += f"  {record['user/mode']}"
    cv2.putText(panel, text, (8, 36), FONT, 0.45, (235, 235, 235), 1, cv2.LINE_AA)
    return np.vstack([image, panel])


def _value(record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def write_movie(tub: Tub, out: str | Path, *, scale: int = 3, fps: float | None = None,
                start: int | None = None, end: int | None = None,
                steering_key: str = "user/angle", throttle_key: str = "user/throttle",
                skip_broken: bool = False,
                progress: Callable[[Iterable[Any]], Iterable[Any]] = iter,
                ) -> tuple[Path, int, int]:
    """Write the tub's live frames with ``start <= _index < end`` to a video.

    Returns the path, the frames written and the records skipped for a broken image (only
    with ``skip_broken``; otherwise a broken image is a TubError naming it).
    """
    out = Path(out)
    if out.suffix.lower() not in FOURCC:
        raise TubError(f"{out}: unknown video type; name it .mp4 or .avi")
    records = [r for r in tub.records()
               if (start is None or r["_index"] >= start) and (end is None or r["_index"] < end)]
    if not records:
        raise TubError(f"{tub.path}: no live records in the range asked for; nothing to draw")
    fps = fps or movie_fps(records)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer: cv2.VideoWriter | None = None
    frames = skipped = 0
    try:
        for record in progress(records):
            try:
                image = tub.load_image(record)
            except TubError:
                if not skip_broken:
                    raise
                skipped += 1
                continue
            frame = overlay(image, scale, record, steering_key, throttle_key)
            if writer is None:
                size = (frame.shape[1], frame.shape[0])
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*FOURCC[
                    out.suffix.lower()]), fps, size)
                if not writer.isOpened():
                    raise TubError(f"{out}: OpenCV cannot write this video type here; "
                                   "try an .avi name")
            if (frame.shape[1], frame.shape[0]) != size:
                frame = cv2.resize(frame, size)
            writer.write(frame)
            frames += 1
    finally:
        if writer is not None:
            writer.release()
    if frames == 0:
        raise TubError(f"{tub.path}: every image in the range is broken; nothing was written")
    return out, frames, skipped
