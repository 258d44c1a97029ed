"""What every page is sent each tick: the loop's status as a JSON message, with the control
state beside it, and the frame as JPEG, encoded once however many browsers watch."""

from __future__ import annotations

import logging
import math
from typing import Any

import cv2
import numpy as np

from car.controllers.web.state import ControlState
from car.frames import Frame

log = logging.getLogger(__name__)


class JpegEncoder:
    """The newest frame as JPEG, encoded at most once however often it is published. Counts
    ``frames_encoded`` and ``encode_errors`` into ``stats``."""

    def __init__(self, quality: int, stats: dict[str, int]):
        self.quality = quality
        self.stats = stats
        self._encoded: tuple[Frame | None, bytes | None] = (None, None)

    def encode(self, frame: Frame | None) -> bytes | None:
        if frame is None:
            return None
        if self._encoded[0] is frame:
            return self._encoded[1]
        jpeg = None
        try:
            image = np.asarray(frame.image)
            if image.ndim == 3 and image.shape[2] == 3:
                image = image[:, :, ::-1]  # RGB -> BGR for OpenCV
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                raise ValueError("cv2.imencode returned no image")
            jpeg = buf.tobytes()
            self.stats["frames_encoded"] += 1
        except (cv2.error, ValueError, TypeError) as exc:
            self.stats["encode_errors"] += 1
            if self.stats["encode_errors"] == 1:
                log.error("web: cannot encode frame %d as JPEG: %s", frame.seq, exc)
        self._encoded = (frame, jpeg)
        return jpeg


def status_message(status: dict[str, Any], state: ControlState, owned: bool, browsers: int,
                   stats: dict[str, int], reclaim_s: float = 0.0) -> dict[str, Any]:
    """The page's status message (without ``owner``, which differs per browser): the loop's
    status, the failsafe and takeover state (``control_free``: nobody drives;
    ``reclaim_s``: how long the control is still kept for the browser that left), viewers,
    and the counts of refused input."""
    message = jsonable(status)
    message.update(type="status", failsafe=state.failsafe,
                   failsafe_switched=state.switched_to_user,
                   takeover_pending=owned and not state.consented,
                   control_free=not owned, reclaim_s=round(reclaim_s, 1),
                   viewers=browsers - owned,
                   rejected={"malformed": stats["malformed"], "clamped": stats["clamped"],
                             "refused": stats["refused"],
                             "view_only": stats["viewers_refused_control"]})
    return message


def jsonable(status: dict[str, Any]) -> dict[str, Any]:
    """The loop's status as JSON-safe values: NaN and Inf become null, numpy scalars plain
    numbers, anything else its text."""
    out: dict[str, Any] = {}
    for key, value in status.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        elif value is not None and not isinstance(value, (bool, int, float, str)):
            value = str(value)
        out[str(key)] = value
    return out
