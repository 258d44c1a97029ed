"""Frame preprocessing, defined once: crop, resize, colour order, normalisation.

The drive loop calls it on each camera frame; training runs the same geometry step when it
builds its frame cache, and a normalisation tested equal to ``normalise`` on its batches.
numpy and OpenCV only, so the car needs no torch. Every parameter goes into the manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

COLOURS = ("RGB", "BGR")


class PreprocessError(ValueError):
    """A frame or a parameter set the preprocessing cannot use."""


@dataclass(frozen=True)
class Preprocess:
    """From a camera frame (H, W, 3) uint8 RGB to the model's (3, h, w) float32 input."""

    source_width: int = 160  # the frames the model was trained on
    source_height: int = 120
    crop_top: int = 40  # rows above the horizon carry little about the road
    crop_bottom: int = 0
    width: int = 160  # after the crop, resized to this
    height: int = 80
    colour: str = "RGB"  # channel order the model takes
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # per channel, on [0, 1] values
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        kept = self.source_height - self.crop_top - self.crop_bottom
        if self.crop_top < 0 or self.crop_bottom < 0 or kept < 8:
            raise PreprocessError(f"crop_top {self.crop_top} and crop_bottom "
                                  f"{self.crop_bottom} leave {kept} of {self.source_height} "
                                  "rows; keep at least 8")
        if self.width < 8 or self.height < 8:
            raise PreprocessError(f"model input {self.width}x{self.height} is too small")
        if self.colour not in COLOURS:
            raise PreprocessError(f"colour order {self.colour!r} is not one of {COLOURS}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise PreprocessError("mean and std need 3 values each, std > 0")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one model input frame."""
        return (3, self.height, self.width)

    def geometry(self, frame: np.ndarray) -> np.ndarray:
        """Crop and resize: (H, W, 3) uint8 RGB → (height, width, 3) uint8 in model order."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise PreprocessError(f"a frame must be (H, W, 3) uint8, got {frame.shape} "
                                  f"{frame.dtype}")
        if frame.shape[:2] != (self.source_height, self.source_width):
            raise PreprocessError(
                f"the model was trained on {self.source_width}x{self.source_height} frames, "
                f"this one is {frame.shape[1]}x{frame.shape[0]}; set the camera to "
                f"{self.source_width}x{self.source_height}")
        cropped = frame[self.crop_top:self.source_height - self.crop_bottom]
        if cropped.shape[:2] != (self.height, self.width):
            cropped = cv2.resize(cropped, (self.width, self.height),
                                 interpolation=cv2.INTER_AREA)
        if self.colour == "BGR":
            cropped = cropped[:, :, ::-1]
        return np.ascontiguousarray(cropped)

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """(..., h, w, 3) uint8 → (..., 3, h, w) float32: (x / 255 - mean) / std."""
        scale = (1.0 / (255.0 * np.asarray(self.std, np.float32))).astype(np.float32)
        offset = (np.asarray(self.mean, np.float32) / np.asarray(self.std, np.float32))
        # Channels first while still one byte each (5x faster than moving floats), then
        # the affine map in place.
        out = np.ascontiguousarray(np.moveaxis(pixels, -1, -3)).astype(np.float32)
        out *= scale[:, None, None]
        out -= offset.astype(np.float32)[:, None, None]
        return out

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """One camera frame → the (1, 3, h, w) float32 model input."""
        return self.normalise(self.geometry(frame))[None]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise PreprocessError(f"unknown preprocessing keys {sorted(unknown)}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
