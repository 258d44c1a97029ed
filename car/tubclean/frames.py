"""A record's picture as JPEG for the page: the tub's own file when it is one (no re-encode),
else decoded and encoded (a 16-bit depth PNG is stretched to 8 bits)."""

from __future__ import annotations

import cv2
import numpy as np

from car.errors import TubError
from car.tub.images import JPEG_SOI
from car.tubclean.edits import CleanSession

JPEG_QUALITY = 85


def frame_jpeg(session: CleanSession, index: int) -> bytes:
    """The JPEG of record ``index``; TubError (saying which) when it has none or it is
    unreadable."""
    record = session.record(index)
    path = session.tub.image_path(record)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TubError(f"record {index}: its image {path.name} cannot be read "
                       f"({exc.strerror or exc})") from None
    if data.startswith(JPEG_SOI):
        return data
    image = session.tub.load_image(record)
    if image.dtype != np.uint8:
        top = int(image.max()) or 1
        image = (image.astype(np.float32) * (255.0 / top)).astype(np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise TubError(f"record {index}: its image cannot be encoded as JPEG")
    return buf.tobytes()
