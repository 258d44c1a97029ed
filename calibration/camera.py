"""Camera lens calibration: chessboard intrinsics, fitted from views of a board.

Two lens models, the numbers car.toml's ``[lens]`` holds. OpenCV's pinhole camera with
radial (k1, k2, k3) and tangential (p1, p2) distortion fits ordinary and wide lenses up to
about 120° of horizontal field of view. A true fisheye (the 130-160° lenses of many Donkey
cars) fits it poorly: the RMS error goes over 1 px and the image edges come out wrong. For
those, ``fisheye=True`` (``car calibrate camera --fisheye``) fits cv2.fisheye's equidistant
model: the image radius is f·θd with θd = θ(1 + k1θ² + k2θ⁴ + k3θ⁶ + k4θ⁸), θ the angle
of the ray from the optical axis.

The flow: ``find_corners`` on each view → ``calibrate`` (or ``calibrate_folder``) →
``lens_to_config`` into car.toml. On the car, ``car.lens.maybe_undistort(camera,
config.lens)`` wraps the camera in an ``UndistortedCamera`` whose ``Undistorter`` remaps
every frame (re-exported here with the lens model, ``LensCalibration``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from car.lens import (
    CalibrationError,
    LensCalibration,
    UndistortedCamera,
    Undistorter,
    lens_from_config,
    maybe_undistort,
    scaled_camera_matrix,
)

Board = tuple[int, int]  # inner corners (per row, per column), e.g. (9, 6)
MIN_VIEWS = 5
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_IMAGE_BYTES = 64 * 2**20  # a 50-megapixel camera's JPEG is about 25 MB
DETECT_MAX_PX = 1280  # boards are searched on a copy at most this large, then refined
OUTLIER_FACTOR = 3.0  # a view whose error is over this many times the median is dropped once
FIND_FLAGS = (cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
              | cv2.CALIB_CB_FAST_CHECK)
SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 40, 0.001)


# ---------------------------------------------------------------------------- the board


def parse_board(text: str) -> Board:
    """``'9x6'`` → ``(9, 6)``: the board's inner corners across and down, each at least 2."""
    across, sep, down = text.lower().partition("x")
    if not (sep and across.strip().isdigit() and down.strip().isdigit()):
        raise CalibrationError(f"board {text!r}: expected WxH inner corners, e.g. 9x6")
    return check_board((int(across), int(down)))


def check_board(board: Sequence[int]) -> Board:
    """The board as a pair of ints, each at least 2 (a board of 10x7 squares has 9x6)."""
    if len(board) != 2 or any(int(n) != n or n < 2 for n in board):
        raise CalibrationError(f"board {tuple(board)}: needs two whole numbers of inner corners, "
                               "each at least 2 (a board of 10x7 squares has 9x6)")
    return int(board[0]), int(board[1])


def board_points(board: Board, square_mm: float) -> np.ndarray:
    """(N, 3) float32 corner positions on the board plane in mm, in find_corners' order."""
    across, down = board
    points = np.zeros((across * down, 3), np.float32)
    points[:, :2] = np.mgrid[0:across, 0:down].T.reshape(-1, 2) * square_mm
    return points


def to_gray(image: np.ndarray) -> np.ndarray:
    """A uint8 grey copy of an RGB(A) or grey image."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise CalibrationError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_RGB2GRAY if image.shape[2] == 3 else cv2.COLOR_RGBA2GRAY
        return cv2.cvtColor(image, code)
    raise CalibrationError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")


def find_corners(image: np.ndarray, board: Board = (9, 6)) -> np.ndarray | None:
    """The board's inner corners, (N, 2) float32 pixels row by row, refined to a fraction of
    a pixel; None when no whole board is seen."""
    across, down = check_board(board)
    gray = to_gray(image)
    scale = min(1.0, DETECT_MAX_PX / max(gray.shape))
    small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale,
                                                 interpolation=cv2.INTER_AREA)
    found, corners = cv2.findChessboardCorners(small, (across, down), flags=FIND_FLAGS)
    if not found:
        return None
    corners = ((corners.reshape(-1, 2) + 0.5) / scale - 0.5).astype(np.float32)
    grid = corners.reshape(down, across, 2)
    spacing = min(np.linalg.norm(np.diff(grid, axis=1), axis=2).min(),
                  np.linalg.norm(np.diff(grid, axis=0), axis=2).min())
    half = int(np.clip(spacing * 0.4, 2, 11))  # the window must not reach the next corner
    refined = cv2.cornerSubPix(gray, corners.reshape(-1, 1, 2), (half, half), (-1, -1),
                               SUBPIX_CRITERIA)
    return refined.reshape(-1, 2)


# ---------------------------------------------------------------------------- calibrating


def calibrate(views: Sequence[np.ndarray], board: Board = (9, 6), square_mm: float = 25.0,
              image_size: tuple[int, int] | None = None,
              names: Sequence[str] | None = None, fisheye: bool = False) -> LensCalibration:
    """Fit the lens to views: images (boards are searched in them) or corner sets from
    ``find_corners``. ``image_size`` (width, height) is needed for corner sets only."""
    board = check_board(board)
    names = list(names) if names is not None else [f"view {i + 1}" for i in range(len(views))]
    corner_sets: list[np.ndarray] = []
    used: list[str] = []
    rejected: list[tuple[str, str]] = []
    for name, view in zip(names, views, strict=True):
        view = np.asarray(view)
        if view.size == 2 * board[0] * board[1] and view.dtype.kind == "f":
            corners: np.ndarray | None = view.reshape(-1, 2).astype(np.float32)
        else:
            size = (view.shape[1], view.shape[0])
            if image_size is not None and size != tuple(image_size):
                raise CalibrationError(f"{name} is {size[0]}x{size[1]} but the other views are "
                                       f"{image_size[0]}x{image_size[1]}; use views of one "
                                       "size")
            image_size = size
            corners = find_corners(view, board)
        if corners is None:
            rejected.append((name, f"no {board[0]}x{board[1]} board found"))
        else:
            corner_sets.append(corners)
            used.append(name)
    if image_size is None:
        raise CalibrationError("calibrate: give image_size (width, height) with corner sets")
    return fit_lens(corner_sets, used, rejected, board, square_mm, image_size, fisheye)


def calibrate_folder(folder: str | Path, board: Board = (9, 6),
                     square_mm: float = 25.0, fisheye: bool = False) -> LensCalibration:
    """Calibrate from the *.png and *.jpg images in a folder, all of one size; images
    without a whole board are listed in ``images_rejected``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"{folder}: folder not found")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise CalibrationError(f"{folder}: no .png or .jpg images in it; put 15-25 photos "
                               "of the chessboard there")
    board = check_board(board)
    corner_sets: list[np.ndarray] = []
    used: list[str] = []
    rejected: list[tuple[str, str]] = []
    first: tuple[str, tuple[int, int]] | None = None
    for path in paths:
        gray, why = read_gray(path)
        if gray is None:
            rejected.append((path.name, why))
            continue
        size = (gray.shape[1], gray.shape[0])
        if first is None:
            first = (path.name, size)
        elif size != first[1]:
            raise CalibrationError(
                f"{path.name} is {size[0]}x{size[1]} but {first[0]} is "
                f"{first[1][0]}x{first[1][1]}; calibrate with images of one camera at one "
                "size (move the others out of the folder)")
        corners = find_corners(gray, board)
        if corners is None:
            rejected.append((path.name, f"no {board[0]}x{board[1]} board found"))
        else:
            corner_sets.append(corners)
            used.append(path.name)
    if first is None:
        name, why = rejected[-1]
        raise CalibrationError(f"{folder}: none of its {len(paths)} images could be read "
                               f"({name}: {why})")
    return fit_lens(corner_sets, used, rejected, board, square_mm, first[1], fisheye)


def read_gray(path: Path) -> tuple[np.ndarray | None, str]:
    """The image as 8-bit grey, or (None, why not): unreadable, not an image, too large."""
    try:
        if path.stat().st_size > MAX_IMAGE_BYTES:
            return None, f"over {MAX_IMAGE_BYTES // 2**20} MB, too large for a camera photo"
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    except cv2.error:  # OpenCV refuses an image of more pixels than it allows
        return None, "too many pixels for a camera photo"
    return (gray, "") if gray is not None else (None, "not a readable image")


def fit_lens(corner_sets: Sequence[np.ndarray], names: Sequence[str],
             rejected: Sequence[tuple[str, str]], board: Board, square_mm: float,
             image_size: tuple[int, int], fisheye: bool = False) -> LensCalibration:
    """``cv2.calibrateCamera`` (``cv2.fisheye.calibrate`` with ``fisheye``) on the corner
    sets; views far worse than the median are dropped once (a blurred or misread board)
    while at least MIN_VIEWS remain."""
    fit = _calibrate_fisheye if fisheye else _calibrate
    if not square_mm > 0:
        raise CalibrationError(f"the square size must be positive, got {square_mm} mm")
    total = len(corner_sets) + len(rejected)
    if len(corner_sets) < MIN_VIEWS:
        found = f" ({', '.join(names)})" if names else ""
        raise CalibrationError(
            f"only {len(corner_sets)} of {total} views show a whole {board[0]}x{board[1]} "
            f"board{found}; calibration needs at least {MIN_VIEWS}: take more views, and check "
            "the board size counts INNER corners (a board of 10x7 squares is 9x6)")
    rms, matrix, dist, errors = fit(corner_sets, board, square_mm, image_size)
    median = float(np.median(errors))
    bad = [i for i, e in enumerate(errors) if e > max(1.0, OUTLIER_FACTOR * median)]
    rejected = list(rejected)
    if bad and len(corner_sets) - len(bad) >= MIN_VIEWS:
        rejected += [(names[i], f"reprojection error {errors[i]:.2f} px (median {median:.2f})")
                     for i in bad]
        keep = [i for i in range(len(corner_sets)) if i not in bad]
        corner_sets = [corner_sets[i] for i in keep]
        names = [names[i] for i in keep]
        rms, matrix, dist, errors = fit(corner_sets, board, square_mm, image_size)
    return LensCalibration(matrix, dist, (int(image_size[0]), int(image_size[1])), rms,
                           tuple(names), tuple(float(e) for e in errors), tuple(rejected),
                           "fisheye" if fisheye else "pinhole")


def _calibrate(corner_sets: Sequence[np.ndarray], board: Board, square_mm: float,
               image_size: tuple[int, int]) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    objects = [board_points(board, square_mm)] * len(corner_sets)
    images = [c.reshape(-1, 1, 2).astype(np.float32) for c in corner_sets]
    try:
        rms, matrix, dist, *_, errors = cv2.calibrateCameraExtended(
            objects, images, tuple(int(n) for n in image_size), None, None)
    except cv2.error as exc:
        gist = [line for line in str(exc).splitlines() if line.strip()][-1].strip()
        raise CalibrationError(f"OpenCV could not fit the lens ({gist}); take views with the "
                               "board tilted and in different parts of the image") from None
    return float(rms), matrix, dist.reshape(-1)[:5].copy(), errors.reshape(-1)


def _calibrate_fisheye(corner_sets: Sequence[np.ndarray], board: Board, square_mm: float,
                       image_size: tuple[int, int]
                       ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """cv2.fisheye.calibrate: K, (k1, k2, k3, k4), and each view's RMS error."""
    points = board_points(board, square_mm).astype(np.float64).reshape(-1, 1, 3)
    objects = [points] * len(corner_sets)
    images = [c.reshape(-1, 1, 2).astype(np.float64) for c in corner_sets]
    flags = (cv2.fisheye.CALIB_RECOMPUTE_EXTRINSIC | cv2.fisheye.CALIB_FIX_SKEW)
    criteria = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 200, 1e-9)
    try:
        rms, matrix, dist, rvecs, tvecs = cv2.fisheye.calibrate(
            objects, images, tuple(int(n) for n in image_size), None, None, flags=flags,
            criteria=criteria)
    except cv2.error as exc:
        gist = [line for line in str(exc).splitlines() if line.strip()][-1].strip()
        raise CalibrationError(f"OpenCV could not fit the fisheye lens ({gist}); take views "
                               "with the board tilted, in different parts of the image, and "
                               "not cut off by the image edge") from None
    errors = []
    for obj, img, rvec, tvec in zip(objects, images, rvecs, tvecs):
        projected, _ = cv2.fisheye.projectPoints(obj, rvec, tvec, matrix, dist)
        errors.append(float(np.sqrt(((projected - img) ** 2).sum(axis=2).mean())))
    return float(rms), matrix, dist.reshape(-1)[:4].copy(), np.array(errors)


def quality_notes(cal: LensCalibration) -> list[str]:
    """Plain-words warnings about a calibration (empty when it looks sound)."""
    notes = []
    width, height = cal.size
    if cal.rms_px > 1.0:
        notes.append(f"RMS {cal.rms_px:.2f} px is high (good is under 0.5 px): retake blurred "
                     "views, check the board is flat" + (
                         "" if cal.fisheye else "; a fisheye lens beyond ~120° fits this model "
                         "poorly: calibrate again with --fisheye"))
    if abs(cal.cx - width / 2) > 0.1 * width or abs(cal.cy - height / 2) > 0.1 * height:
        notes.append("the principal point is far from the image centre: add views with the "
                     "board tilted and near the edges and corners")
    if len(cal.images_used) < 10:
        notes.append(f"only {len(cal.images_used)} views: 15-25 give a steadier fit")
    return notes


# ---------------------------------------------------------------------------- car.toml


def lens_to_config(cal: LensCalibration) -> dict[str, Any]:
    """The ``[lens]`` keys for a calibration (all but ``undistort``), rounded for reading;
    the coefficients the model does not use are 0."""
    values = [float(f"{v:.6g}") for v in cal.dist]
    if cal.fisheye:
        k1, k2, k3, k4 = values
        p1 = p2 = 0.0
    else:
        k1, k2, p1, p2, k3 = values
        k4 = 0.0
    return {"model": cal.model, "width": cal.size[0], "height": cal.size[1],
            "fx": round(cal.fx, 3), "fy": round(cal.fy, 3),
            "cx": round(cal.cx, 3), "cy": round(cal.cy, 3),
            "k1": k1, "k2": k2, "p1": p1, "p2": p2, "k3": k3, "k4": k4,
            "rms_px": round(cal.rms_px, 4)}


class ViewPicker:
    """Keeps a live view only when its board differs enough from every view kept so far:
    moved by ``min_move`` of the image diagonal (mean corner shift), or turned or tilted so
    its shape changed by ``min_turn`` (mean shift of corners scaled to unit spread; 0.08 is
    about a 30° tilt or a 5° roll)."""

    def __init__(self, size: tuple[int, int], min_move: float = 0.05, min_turn: float = 0.08):
        self.min_move_px = min_move * float(np.hypot(*size))
        self.min_turn = min_turn
        self.kept: list[np.ndarray] = []

    def offer(self, corners: np.ndarray) -> str | None:
        """Why the view is kept ("first view", "moved 52 px", "turned"), or None."""
        if not self.kept:
            self.kept.append(corners)
            return "first view"
        shape = _shape(corners)
        moves, turns = [], []
        for kept in self.kept:  # and the same board read from its other end:
            for seen in (kept, kept[::-1]):
                moves.append(float(np.linalg.norm(corners - seen, axis=1).mean()))
                turns.append(float(np.linalg.norm(shape - _shape(seen), axis=1).mean()))
        pairs = list(zip(moves, turns))
        if all(m >= self.min_move_px for m, _ in pairs):
            self.kept.append(corners)
            return f"moved {min(moves):.0f} px"
        if all(m >= self.min_move_px or t >= self.min_turn for m, t in pairs):
            self.kept.append(corners)
            return "turned"
        return None


def _shape(corners: np.ndarray) -> np.ndarray:
    centred = corners - corners.mean(axis=0)
    return centred / np.sqrt((centred**2).sum(axis=1).mean())


__all__ = [
    "MIN_VIEWS",
    "Board",
    "CalibrationError",
    "LensCalibration",
    "UndistortedCamera",
    "Undistorter",
    "ViewPicker",
    "calibrate",
    "calibrate_folder",
    "find_corners",
    "fit_lens",
    "lens_from_config",
    "lens_to_config",
    "maybe_undistort",
    "parse_board",
    "quality_notes",
    "scaled_camera_matrix",
]
