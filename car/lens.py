"""The lens model on the car: a calibrated camera's frames undistorted in the camera stage.

``[lens]`` in car.toml holds either OpenCV's pinhole model with radial (k1, k2, k3) and
tangential (p1, p2) distortion, or, with ``model = "fisheye"``, cv2.fisheye's equidistant
model (k1..k4 on the angle of incidence), which fits the 130-160° lenses of many Donkey cars
(`car calibrate camera [--fisheye]` fits either: ``calibration.camera``).
``maybe_undistort(camera, config.lens)`` wraps the car's camera in an ``UndistortedCamera``
whose ``Undistorter`` remaps every frame with maps built once.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from car.camera import Camera
from car.config import LensConfig
from car.errors import CarError
from car.frames import Frame

ASPECT_TOLERANCE = 0.01


class CalibrationError(CarError):
    """Views that cannot calibrate a lens, or a calibration that does not fit the camera."""


@dataclass(frozen=True, eq=False)
class LensCalibration:
    """A fitted lens: camera matrix K, distortion (pinhole: k1, k2, p1, p2, k3; fisheye: k1,
    k2, k3, k4), the (width, height) it holds for, the RMS reprojection error, and which
    views were used or rejected."""

    camera_matrix: np.ndarray
    dist: np.ndarray
    size: tuple[int, int]
    rms_px: float
    images_used: tuple[str, ...] = ()
    image_errors_px: tuple[float, ...] = ()  # RMS of each used view, in images_used order
    images_rejected: tuple[tuple[str, str], ...] = ()  # (name, why)
    model: str = "pinhole"  # or "fisheye"

    @property
    def fisheye(self) -> bool:
        return self.model == "fisheye"

    @property
    def fx(self) -> float:
        return float(self.camera_matrix[0, 0])

    @property
    def fy(self) -> float:
        return float(self.camera_matrix[1, 1])

    @property
    def cx(self) -> float:
        return float(self.camera_matrix[0, 2])

    @property
    def cy(self) -> float:
        return float(self.camera_matrix[1, 2])


def lens_from_config(lens: LensConfig) -> LensCalibration:
    """The calibration stored in ``[lens]``; refused when it holds none."""
    if not (lens.width and lens.height and lens.fx and lens.fy):
        raise CalibrationError("[lens] holds no calibration; run `car calibrate camera ... "
                               "--write` first")
    matrix = np.array([[lens.fx, 0, lens.cx], [0, lens.fy, lens.cy], [0, 0, 1]], np.float64)
    if lens.model == "fisheye":
        dist = np.array([lens.k1, lens.k2, lens.k3, lens.k4], np.float64)
    else:
        dist = np.array([lens.k1, lens.k2, lens.p1, lens.p2, lens.k3], np.float64)
    return LensCalibration(matrix, dist, (lens.width, lens.height), lens.rms_px,
                           model=lens.model)


def scaled_camera_matrix(cal: LensCalibration, width: int, height: int) -> np.ndarray:
    """K for frames of another size with the same aspect ratio (a pure rescale)."""
    cal_width, cal_height = cal.size
    sx, sy = width / cal_width, height / cal_height
    if abs(sx - sy) > ASPECT_TOLERANCE * max(sx, sy):
        raise CalibrationError(
            f"the lens was calibrated at {cal_width}x{cal_height} but the camera gives "
            f"{width}x{height}, another aspect ratio; calibrate again at {width}x{height} "
            "(or a multiple of it) with `car calibrate camera`")
    matrix = cal.camera_matrix.astype(np.float64).copy()
    matrix[0, 0] *= sx
    matrix[1, 1] *= sy
    matrix[0, 2] = (matrix[0, 2] + 0.5) * sx - 0.5  # pixel centres, not edges, scale
    matrix[1, 2] = (matrix[1, 2] + 0.5) * sy - 0.5
    return matrix


# ---------------------------------------------------------------------------- undistorting


class Undistorter:
    """Undistorts images of one size: the maps are built once, each call is one remap.

    The output camera comes from ``getOptimalNewCameraMatrix`` with alpha = 0 (for a
    fisheye, ``cv2.fisheye.estimateNewCameraMatrixForUndistortRectify`` with balance = 0):
    the output is framed so every pixel of it was seen by the lens, so there is no black
    border (a border would be a fake feature for the model, and it would move with each
    calibration). The price is the part of the view outside that frame: with a barrel
    (wide-angle) lens, the corners, which straightening stretches outward most; a fisheye
    loses more of its edges, as a straight (rectilinear) picture of 160° cannot be had.
    ``zoom`` is the output's focal length over the input's (below 1: a wider view in the
    centre).
    """

    def __init__(self, lens: LensConfig | LensCalibration, width: int, height: int):
        cal = lens if isinstance(lens, LensCalibration) else lens_from_config(lens)
        self.size = (int(width), int(height))
        self.camera_matrix = scaled_camera_matrix(cal, width, height)
        self.dist = np.asarray(cal.dist, np.float64)
        if cal.fisheye:
            self.new_camera_matrix = cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(
                self.camera_matrix, self.dist.reshape(4, 1), self.size, np.eye(3), balance=0.0)
            self._map1, self._map2 = cv2.fisheye.initUndistortRectifyMap(
                self.camera_matrix, self.dist.reshape(4, 1), np.eye(3), self.new_camera_matrix,
                self.size, cv2.CV_16SC2)
        else:
            self.new_camera_matrix, _ = cv2.getOptimalNewCameraMatrix(
                self.camera_matrix, self.dist, self.size, 0, self.size)
            self._map1, self._map2 = cv2.initUndistortRectifyMap(
                self.camera_matrix, self.dist, None, self.new_camera_matrix, self.size,
                cv2.CV_16SC2)  # fixed-point maps: the fastest remap

    @property
    def zoom(self) -> float:
        """The output's focal length over the input's (1: the centre keeps its scale)."""
        return float(self.new_camera_matrix[0, 0] / self.camera_matrix[0, 0])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if (image.shape[1], image.shape[0]) != self.size:
            raise CalibrationError(f"undistort: got a {image.shape[1]}x{image.shape[0]} image, "
                                   f"the maps are for {self.size[0]}x{self.size[1]}")
        return cv2.remap(image, self._map1, self._map2, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT)


class UndistortedCamera:
    """A Camera whose frames are undistorted; size, capture time and seq are kept."""

    def __init__(self, camera: Camera, undistorter: Undistorter):
        if tuple(camera.size) != undistorter.size:
            raise CalibrationError(f"the undistorter is for {undistorter.size[0]}x"
                                   f"{undistorter.size[1]} frames, the camera gives "
                                   f"{camera.size[0]}x{camera.size[1]}")
        self.camera = camera
        self.undistorter = undistorter
        self.size = camera.size

    def read(self) -> Frame:
        frame = self.camera.read()
        return Frame(self.undistorter(frame.image), frame.time_s, frame.seq)

    def close(self) -> None:
        self.camera.close()


def maybe_undistort(camera: Camera, lens: LensConfig) -> Camera:
    """The camera wrapped in an UndistortedCamera when ``lens.undistort`` is on, else as is."""
    if not lens.undistort:
        return camera
    return UndistortedCamera(camera, Undistorter(lens, *camera.size))
