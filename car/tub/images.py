"""Encoding and decoding the image fields of a tub (RGB in memory, JPEG or 16-bit PNG on disk)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from car.errors import TubError

JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND"


def check_image_array(value: object, type_name: str, key: str) -> np.ndarray:
    """A private copy of an image field's value, or a TubError saying what is wrong with it."""
    array = np.asarray(value)
    if type_name == "image_array":
        ok_shape = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3))
        if not ok_shape or array.dtype != np.uint8:
            raise TubError(
                f"field '{key}': an image_array must be uint8 HxW or HxWx3 (RGB), "
                f"got {array.dtype} {array.shape}"
            )
    else:
        if array.ndim != 2 or array.dtype not in (np.uint16, np.uint8):
            raise TubError(
                f"field '{key}': a gray16_array must be uint16 HxW, got {array.dtype} {array.shape}"
            )
        array = array.astype(np.uint16, copy=False)
    if array.size == 0:
        raise TubError(f"field '{key}': image is empty")
    return np.array(array, copy=True, order="C")


def encode(array: np.ndarray, type_name: str, jpeg_quality: int) -> bytes:
    """File bytes for an image field: JPEG for image_array (from RGB), PNG for gray16_array."""
    if type_name == "image_array":
        if array.ndim == 3 and array.shape[2] == 3:
            array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
        ok, data = cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    else:
        ok, data = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise TubError(f"OpenCV could not encode a {array.shape} {array.dtype} image")
    return data.tobytes()


def defect(data: bytes, type_name: str) -> str | None:
    """Why these bytes are not a whole image file, or None when they look whole."""
    if not data:
        return "empty file (lost in a crash or power cut)"
    if type_name == "image_array":
        if not data.startswith(JPEG_SOI):
            return "not a JPEG (bad start marker)"
        if JPEG_EOI not in data[-64:]:
            return "truncated JPEG (no end marker)"
    elif not data.startswith(PNG_SIGNATURE) or PNG_IEND not in data[-16:]:
        return "not a whole PNG"
    return None


def decode(data: bytes, type_name: str) -> np.ndarray | None:
    """The image as RGB uint8 (or uint16 gray), or None if OpenCV cannot decode it."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return image


def load(path: Path, type_name: str, index: int) -> np.ndarray:
    """Read and decode one image file of record ``index``; a TubError names what is wrong."""
    hint = "run `car tub check --repair` to mark such records deleted"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TubError(f"{path}: image of record {index} is missing; {hint}") from None
    except OSError as exc:
        raise TubError(f"{path}: cannot read image of record {index}: {exc}") from None
    problem = defect(data, type_name)
    image = None if problem else decode(data, type_name)
    if image is None:
        raise TubError(f"{path}: image of record {index} is unreadable "
                       f"({problem or 'cannot be decoded'}); {hint}")
    return image
