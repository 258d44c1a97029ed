"""Fisheye lenses (`car calibrate camera --fisheye`): chessboard views rendered through a
known 150° equidistant lens (every pixel centre undistorted to a ray by
``cv2.fisheye.undistortPoints``), fitted back with cv2.fisheye, stored in [lens], and
undistorted on the car."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.camera import (
    Undistorter,
    calibrate,
    find_corners,
    lens_from_config,
    lens_to_config,
)
from car.cli import main
from car.config import LensConfig, load_config
from tests.test_calibrate_camera import BOARD, SQUARE_MM, board_pose, render_view, write_pngs

WIDTH, HEIGHT = 640, 480
TRUE_K = np.array([[250.0, 0, 321.0], [0, 249.0, 238.0], [0, 0, 1]])
TRUE_D = np.array([-0.03, 0.012, -0.006, 0.001])  # 320 px off centre is ~74°: a 150° lens
POSES = [(0, 0, 300, 0, 0, 0), (-260, -150, 320, 20, -30, 5), (260, -150, 320, 20, 30, -5),
         (-260, 150, 320, -20, -30, -5), (260, 150, 320, -20, 30, 5), (0, 0, 250, 30, 0, 10),
         (0, -170, 300, 35, 0, -10), (-330, 0, 330, 0, -40, 20), (330, 20, 330, 0, 40, -15),
         (0, 170, 280, -35, 10, 0)]


@pytest.fixture(scope="module")
def rays() -> np.ndarray:
    """(H, W, 2): where every pixel centre's ray meets the plane z = 1."""
    u, v = np.meshgrid(np.arange(WIDTH, dtype=np.float64), np.arange(HEIGHT, dtype=np.float64))
    points = np.stack([u, v], -1).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    return cv2.fisheye.undistortPoints(points, TRUE_K, TRUE_D.reshape(4, 1),
                                       criteria=criteria).reshape(HEIGHT, WIDTH, 2)


@pytest.fixture(scope="module")
def views(rays: np.ndarray) -> list[np.ndarray]:
    return [render_view(rays, pose) for pose in POSES]


def true_corners(pose: tuple[float, ...]) -> np.ndarray:
    rotation, translation = board_pose(*pose)
    grid = np.zeros((BOARD[0] * BOARD[1], 1, 3))
    grid[:, 0, :2] = np.mgrid[0:BOARD[0], 0:BOARD[1]].T.reshape(-1, 2) * SQUARE_MM
    projected, _ = cv2.fisheye.projectPoints(grid, cv2.Rodrigues(rotation)[0], translation,
                                             TRUE_K, TRUE_D.reshape(4, 1))
    return projected.reshape(-1, 2)


def test_the_boards_are_found_where_the_fisheye_puts_them(views: list[np.ndarray]) -> None:
    for image, pose in zip(views, POSES):
        corners = find_corners(image, BOARD)
        assert corners is not None
        assert np.abs(corners - true_corners(pose)).max() < 0.3


def test_fisheye_calibration_recovers_the_lens_and_beats_the_pinhole(
        views: list[np.ndarray]) -> None:
    cal = calibrate(views, BOARD, SQUARE_MM, fisheye=True)
    assert cal.model == "fisheye" and cal.dist.shape == (4,)
    assert len(cal.images_used) == len(POSES)
    for got, true in ((cal.fx, 250), (cal.fy, 249), (cal.cx, 321), (cal.cy, 238)):
        assert got == pytest.approx(true, rel=0.01)
    assert cal.dist[0] == pytest.approx(TRUE_D[0], abs=0.01)
    assert cal.rms_px < 0.3
    pinhole = calibrate(views, BOARD, SQUARE_MM)
    assert pinhole.rms_px > 2 * cal.rms_px  # why --fisheye exists


def test_the_fisheye_lens_round_trips_through_car_toml(views: list[np.ndarray]) -> None:
    cal = calibrate(views, BOARD, SQUARE_MM, fisheye=True)
    stored = lens_to_config(cal)
    assert stored["model"] == "fisheye" and stored["p1"] == stored["p2"] == 0.0
    back = lens_from_config(LensConfig(undistort=True, **stored))
    assert back.fisheye and back.fx == pytest.approx(cal.fx, abs=1e-3)
    np.testing.assert_allclose(back.dist, cal.dist, rtol=1e-5, atol=1e-9)


def test_the_fisheye_undistorter_straightens_a_straight_edge(rays: np.ndarray) -> None:
    from tests.test_calibrate_camera import straightness_px

    x, y = rays[..., 0], rays[..., 1]
    beyond_px = (y - (-0.3 + 0.05 * x)) * TRUE_K[1, 1]  # a straight line in the world
    gray = (np.clip(0.5 + beyond_px / 2, 0, 1) * 255).astype(np.uint8)
    distorted = np.repeat(gray[..., None], 3, axis=2)
    (fx, _, cx), (_, fy, cy), _ = TRUE_K
    lens = LensConfig(undistort=True, model="fisheye", width=WIDTH, height=HEIGHT, fx=fx,
                      fy=fy, cx=cx, cy=cy, k1=TRUE_D[0], k2=TRUE_D[1], k3=TRUE_D[2],
                      k4=TRUE_D[3])
    undistort = Undistorter(lens, WIDTH, HEIGHT)
    assert straightness_px(distorted) > 10
    assert straightness_px(undistort(distorted)) < 1.0
    bright = np.full_like(distorted, 255)
    assert undistort(bright)[2:-2, 2:-2].min() == 255  # balance 0: no black border
    small = Undistorter(lens, WIDTH // 4, HEIGHT // 4)  # the car's 160x120 from a 640x480 fit
    assert small(cv2.resize(distorted, (WIDTH // 4, HEIGHT // 4))).shape == (120, 160, 3)


def test_car_calibrate_camera_fisheye_writes_the_model(
        views: list[np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAR_CONFIG", raising=False)
    write_pngs(tmp_path / "views", views)
    config = tmp_path / "car.toml"
    assert main(["calibrate", "camera", "--images", str(tmp_path / "views"), "--board", "9x6",
                 "--square-mm", str(SQUARE_MM), "--fisheye", "--write", "--config",
                 str(config), "--preview", str(tmp_path / "preview.png")]) == 0
    out = capsys.readouterr().out
    assert "fisheye lens at 640x480 from 10 of 10 views" in out and "k4 = " in out
    lens = load_config(config).lens
    assert lens.model == "fisheye" and lens.undistort and lens.fx == pytest.approx(250, rel=0.01)
    assert (tmp_path / "preview.png").stat().st_size > 10_000
