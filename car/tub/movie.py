"""`car tub movie`: a tub's frames as a video, with the recorded steering and throttle drawn on."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from car.errors import TubError
from car.tub.format import CAPTURE_MS, SESSION_ID, TIMESTAMP_MS
from car.tub.reader import Tub
from car.tub.video import KINDS, VideoSink, open_video

PANEL_H = 44
PILOT_H = 28  # the pilot's bar and text line, with --model
FONT = cv2.FONT_HERSHEY_SIMPLEX
USER_COLOUR = (40, 180, 250)  # BGR: orange, the recorded (user's) command
PILOT_COLOUR = (250, 120, 220)  # BGR: magenta, the pilot's


MAX_WRITE_HZ = 60.0  # a write rate above this is a batch write (a conversion), not a camera


def movie_fps(records: list[dict[str, Any]], default: float = 20.0) -> tuple[float, str]:
    """The frame rate to play at, and where it came from: the median step between the
    frames' capture timestamps within a session; for a tub without them (donkeycar's), the
    write timestamps' unless they are faster than a camera; else ``default`` (donkeycar's
    DRIVE_LOOP_HZ).

    A lock-step simulator writes records faster than it captures them, so the write rate
    would play a sim tub several times too fast.
    """
    captured = _median_rate(records, CAPTURE_MS)
    if captured is not None:
        return float(np.clip(captured, 1.0, 240.0)), "the capture rate"
    written = _median_rate(records, TIMESTAMP_MS)
    if written is not None and written <= MAX_WRITE_HZ:
        return max(1.0, written), "the write rate (no capture timestamps)"
    if written is not None:
        return default, (f"the default: records were written at {written:.0f} Hz, faster than "
                         "a camera, and carry no capture timestamps")
    return default, "the default: no timestamps"


def _median_rate(records: list[dict[str, Any]], key: str) -> float | None:
    steps: list[float] = []
    previous: dict[Any, float] = {}
    for record in records:
        stamp = record.get(key)
        if not isinstance(stamp, (int, float)):
            continue
        session = record.get(SESSION_ID)
        if session in previous and stamp > previous[session]:
            steps.append(stamp - previous[session])
        previous[session] = stamp
    return 1000.0 / float(np.median(steps)) if steps else None


def overlay(frame_rgb: np.ndarray, scale: int, record: dict[str, Any], steering_key: str,
            throttle_key: str, pilot: tuple[float, float] | None = None,
            with_pilot: bool = False) -> np.ndarray:
    """The frame scaled up (BGR), with a panel below: steering bar, throttle bar, values;
    with ``with_pilot``, the pilot's steering bar and throttle bar beside the recorded ones."""
    image = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR) if frame_rgb.ndim == 3 else \
        cv2.cvtColor(frame_rgb, cv2.COLOR_GRAY2BGR)
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    w = image.shape[1]
    panel = np.full((PANEL_H + (PILOT_H if with_pilot else 0), w, 3), 30, np.uint8)
    steering = _value(record, steering_key)
    throttle = _value(record, throttle_key)
    _steering_bar(panel, 6, steering, USER_COLOUR)
    _throttle_bar(image, w - 12, throttle, USER_COLOUR if throttle is None or throttle >= 0
                  else (60, 60, 220))
    text = f"#{record.get('_index', '?')}"
    text += f"  steer {steering:+.2f}" if steering is not None else "  steer -"
    text += f"  throttle {throttle:+.2f}" if throttle is not None else "  throttle -"
    if isinstance(record.get("user/mode"), str):
        text += f"  {record['user/mode']}"
    if with_pilot:
        _steering_bar(panel, 22, pilot[0] if pilot else None, PILOT_COLOUR)
        _throttle_bar(image, w - 24, pilot[1] if pilot else None, PILOT_COLOUR)
        cv2.putText(panel, "pilot " + (f"steer {pilot[0]:+.2f}  throttle {pilot[1]:+.2f}"
                                       if pilot else "-"),
                    (8, 66), FONT, 0.45, PILOT_COLOUR, 1, cv2.LINE_AA)
    cv2.putText(panel, text, (8, 48 if with_pilot else 36), FONT, 0.45,
                (235, 235, 235), 1, cv2.LINE_AA)
    return np.vstack([image, panel])


def _steering_bar(panel: np.ndarray, top: int, steering: float | None,
                  colour: tuple[int, int, int]) -> None:
    """Steering +1 = full right: the bar grows right from the centre line."""
    w = panel.shape[1]
    mid, half = w // 2, w // 2 - 8
    cv2.rectangle(panel, (8, top), (w - 8, top + 10), (80, 80, 80), 1)
    if steering is not None and np.isfinite(steering):
        end = int(mid + np.clip(steering, -1, 1) * half)
        cv2.rectangle(panel, (min(mid, end), top + 1), (max(mid, end), top + 9), colour, -1)
    cv2.line(panel, (mid, top - 2), (mid, top + 12), (220, 220, 220), 1)


def _throttle_bar(image: np.ndarray, left: int, throttle: float | None,
                  colour: tuple[int, int, int]) -> None:
    """Throttle as a vertical bar at the frame's right edge, up from the middle."""
    h = image.shape[0]
    if throttle is None or not np.isfinite(throttle):
        return
    top = int(h / 2 - np.clip(throttle, -1, 1) * (h / 2 - 4))
    cv2.rectangle(image, (left, min(h // 2, top)), (left + 8, max(h // 2, top)), colour, -1)


def _value(record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def write_movie(tub: Tub, out: str | Path, *, scale: int = 3, fps: float | None = None,
                start: int | None = None, end: int | None = None,
                steering_key: str = "user/angle", throttle_key: str = "user/throttle",
                skip_broken: bool = False,
                pilot: Mapping[int, tuple[float, float]] | None = None,
                progress: Callable[[Iterable[Any]], Iterable[Any]] = iter,
                ) -> tuple[Path, int, int, tuple[float, str]]:
    """Write the tub's live frames with ``start <= _index < end`` to a video, at the capture
    rate unless ``fps`` is given; ``pilot`` maps a record's index to a pilot's (steering,
    throttle), drawn beside the recorded ones.

    Returns the path, the frames written, the records skipped for a broken image (only with
    ``skip_broken``; otherwise a broken image is a TubError naming it) and the frame rate
    with where it came from.
    The video is written under a temporary name and renamed when complete, so a failure
    leaves no half-written file and never replaces an older movie.
    """
    out = Path(out)
    if out.suffix.lower() not in KINDS:
        raise TubError(f"{out}: unknown video type; name it .mp4 (H.264) or .avi (Motion JPEG)")
    records = [r for r in tub.records()
               if (start is None or r["_index"] >= start) and (end is None or r["_index"] < end)]
    if not records:
        raise TubError(f"{tub.path}: no live records in the range asked for; nothing to draw")
    rate = (fps, "as given") if fps else movie_fps(records)
    fps = rate[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")
    sink: VideoSink | None = None
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
            frame = overlay(image, scale, record, steering_key, throttle_key,
                            pilot.get(record["_index"]) if pilot else None, pilot is not None)
            if sink is None:
                sink = open_video(partial, fps, (frame.shape[1], frame.shape[0]))
            sink.write(frame)
            frames += 1
        if sink is not None:
            sink.close()
            sink = None
        if frames == 0:
            raise TubError(f"{tub.path}: every image in the range is broken; nothing was "
                           "written")
        os.replace(partial, out)
    finally:
        if sink is not None:
            with contextlib.suppress(Exception):
                sink.close()
        partial.unlink(missing_ok=True)
    return out, frames, skipped, rate
