"""Camera lens calibration on synthesized chessboard views (no image files are shipped).

Each view is rendered through a known lens: every pixel centre is undistorted to a ray
(``cv2.undistortPoints``), the ray meets the board plane at a known pose, and the board's
texture is sampled there. The calibration must then give the lens back.
"""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.camera import (
    CalibrationError,
    LensCalibration,
    UndistortedCamera,
    Undistorter,
    ViewPicker,
    calibrate,
    calibrate_folder,
    find_corners,
    lens_from_config,
    lens_to_config,
    maybe_undistort,
    parse_board,
    scaled_camera_matrix,
)
from car.camera import EndOfFrames
from car.commands import calibrate as calibrate_commands
from car.config import LensConfig, load_config
from car.frames import Frame

WIDTH, HEIGHT = 640, 480
TRUE_K = np.array([[420.0, 0, 322.0], [0, 415.0, 236.0], [0, 0, 1]])
TRUE_DIST = np.array([-0.28, 0.09, 0.0005, -0.0003, 0.0])  # barrel: k1 < 0
BOARD = (9, 6)
SQUARE_MM = 30.0
TEXELS_PER_SQUARE = 20
# Where the board's centre sits in the camera frame (mm) and how it is turned (degrees).
POSES = [(0, 0, 550, 0, 0, 0), (-150, -100, 600, 20, -25, 5), (150, -100, 600, 20, 25, -5),
         (-150, 100, 600, -20, -25, -5), (150, 100, 600, -20, 25, 5), (0, 0, 450, 30, 0, 10),
         (0, 0, 500, 0, 35, -10), (-60, 40, 700, -15, 15, 30)]


# ---------------------------------------------------------------------------- the synthesizer


@pytest.fixture(scope="module")
def rays() -> np.ndarray:
    """(H, W, 2): the undistorted normalised image coordinates of every pixel centre."""
    u, v = np.meshgrid(np.arange(WIDTH, dtype=np.float64), np.arange(HEIGHT, dtype=np.float64))
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    points = np.stack([u, v], -1).reshape(-1, 1, 2)
    return cv2.undistortPoints(points, TRUE_K, TRUE_DIST, None, None, None,
                               criteria).reshape(HEIGHT, WIDTH, 2)


def board_texture() -> np.ndarray:
    """The printed board: 10x7 squares in a white margin one square wide, lightly blurred."""
    across, down = BOARD
    squares = np.indices((down + 1, across + 1)).sum(0) % 2
    texture = np.kron(squares, np.ones((TEXELS_PER_SQUARE, TEXELS_PER_SQUARE))) * 255
    texture = np.pad(texture, TEXELS_PER_SQUARE, constant_values=255).astype(np.float32)
    return cv2.GaussianBlur(texture, (0, 0), 0.8)


def board_pose(x: float, y: float, z: float, rx: float, ry: float,
               rz: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation taking board mm (corner (0, 0) at the origin) to the camera."""
    rotation = np.eye(3)
    for axis, degrees in enumerate((rx, ry, rz)):
        rvec = np.zeros(3)
        rvec[axis] = np.radians(degrees)
        rotation = rotation @ cv2.Rodrigues(rvec)[0]
    centre = np.array([(BOARD[0] - 1) / 2 * SQUARE_MM, (BOARD[1] - 1) / 2 * SQUARE_MM, 0])
    return rotation, np.array([x, y, z], np.float64) - rotation @ centre


def render_view(rays: np.ndarray, pose: tuple[float, ...]) -> np.ndarray:
    """(H, W, 3) uint8 RGB: the board at ``pose`` seen through the true lens."""
    rotation, translation = board_pose(*pose)
    directions = np.dstack([rays, np.ones(rays.shape[:2])])
    normal = rotation[:, 2]
    distance = (normal @ translation) / (directions @ normal)
    on_board = (distance[..., None] * directions - translation) @ rotation  # R^T (s d - t)
    to_texel = TEXELS_PER_SQUARE / SQUARE_MM
    map_x = (on_board[..., 0] * to_texel + 2 * TEXELS_PER_SQUARE - 0.5).astype(np.float32)
    map_y = (on_board[..., 1] * to_texel + 2 * TEXELS_PER_SQUARE - 0.5).astype(np.float32)
    gray = cv2.remap(board_texture(), map_x, map_y, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=110)
    return np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def true_corners(pose: tuple[float, ...]) -> np.ndarray:
    rotation, translation = board_pose(*pose)
    grid = np.zeros((BOARD[0] * BOARD[1], 3))
    grid[:, :2] = np.mgrid[0:BOARD[0], 0:BOARD[1]].T.reshape(-1, 2) * SQUARE_MM
    projected, _ = cv2.projectPoints(grid, cv2.Rodrigues(rotation)[0], translation, TRUE_K,
                                     TRUE_DIST)
    return projected.reshape(-1, 2)


@pytest.fixture(scope="module")
def views(rays: np.ndarray) -> list[np.ndarray]:
    return [render_view(rays, pose) for pose in POSES]


def blank() -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), 110, np.uint8)


def true_lens(undistort: bool = True) -> LensConfig:
    (fx, _, cx), (_, fy, cy), _ = TRUE_K
    k1, k2, p1, p2, k3 = TRUE_DIST
    return LensConfig(undistort=undistort, width=WIDTH, height=HEIGHT, fx=fx, fy=fy, cx=cx,
                      cy=cy, k1=k1, k2=k2, p1=p1, p2=p2, k3=k3, rms_px=0.1)


def write_pngs(folder: Path, images: list[np.ndarray]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"board_{i:02d}.png" for i in range(len(images))]
    for name, image in zip(names, images):
        cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return names


# ---------------------------------------------------------------------------- finding and fitting


def test_find_corners_lands_on_the_true_corners(views: list[np.ndarray]) -> None:
    for image, pose in zip(views[:3], POSES):
        corners = find_corners(image, BOARD)
        assert corners is not None and corners.shape == (54, 2)
        assert np.abs(corners - true_corners(pose)).max() < 0.2
    assert find_corners(blank(), BOARD) is None
    assert find_corners(views[0], (8, 6)) is None  # the wrong count is not a board


def test_calibrate_recovers_the_lens(views: list[np.ndarray]) -> None:
    cal = calibrate(views, BOARD, SQUARE_MM)
    assert cal.size == (WIDTH, HEIGHT) and len(cal.images_used) == len(POSES)
    for got, true in ((cal.fx, 420), (cal.fy, 415), (cal.cx, 322), (cal.cy, 236)):
        assert got == pytest.approx(true, rel=0.02)
    assert cal.dist[0] == pytest.approx(TRUE_DIST[0], rel=0.2)
    assert cal.rms_px < 1.0 and max(cal.image_errors_px) < 1.0
    corner_sets = [find_corners(image, BOARD) for image in views]
    again = calibrate(corner_sets, BOARD, SQUARE_MM, image_size=(WIDTH, HEIGHT))
    assert again.fx == pytest.approx(cal.fx)


def test_calibrate_names_the_boards_it_found_when_too_few(views: list[np.ndarray]) -> None:
    names = ["a.png", "b.png", "c.png", "d.png", "e.png"]
    with pytest.raises(CalibrationError, match=r"only 3 of 5 views .*\(a.png, b.png, c.png\)"):
        calibrate([*views[:3], blank(), blank()], BOARD, SQUARE_MM, names=names)
    with pytest.raises(CalibrationError, match="is 320x240 but"):
        calibrate([views[0], views[1][:240, :320]], BOARD, SQUARE_MM)


def test_calibrate_folder_reports_images_without_a_board(tmp_path: Path,
                                                         views: list[np.ndarray]) -> None:
    names = write_pngs(tmp_path, views[:6])
    cv2.imwrite(str(tmp_path / "empty_wall.jpg"), blank())
    (tmp_path / "notes.txt").write_text("not an image")
    cal = calibrate_folder(tmp_path, BOARD, SQUARE_MM)
    assert cal.images_used == tuple(names)
    assert cal.images_rejected == (("empty_wall.jpg", "no 9x6 board found"),)
    assert cal.fx == pytest.approx(420, rel=0.03)


def test_calibrate_folder_refuses_mixed_sizes_and_empty_folders(
        tmp_path: Path, views: list[np.ndarray]) -> None:
    write_pngs(tmp_path / "mixed", views[:2])
    cv2.imwrite(str(tmp_path / "mixed" / "small.png"), cv2.resize(views[2], (320, 240)))
    with pytest.raises(CalibrationError, match=r"small\.png is 320x240 but board_00\.png is "
                                               r"640x480"):
        calibrate_folder(tmp_path / "mixed")
    with pytest.raises(CalibrationError, match="folder not found"):
        calibrate_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match=r"no \.png or \.jpg images"):
        calibrate_folder(tmp_path / "empty")


def test_parse_board() -> None:
    assert parse_board("9x6") == (9, 6) and parse_board("7X5") == (7, 5)
    for bad in ("9", "9x1", "ax6", "9x6x2", "-9x6"):
        with pytest.raises(CalibrationError):
            parse_board(bad)


def test_lens_config_round_trip(views: list[np.ndarray]) -> None:
    cal = calibrate(views, BOARD, SQUARE_MM)
    stored = lens_to_config(cal)
    back = lens_from_config(LensConfig(undistort=True, **stored))
    assert back.size == cal.size and back.fx == pytest.approx(cal.fx, abs=1e-3)
    np.testing.assert_allclose(back.dist, cal.dist, rtol=1e-5, atol=1e-9)
    with pytest.raises(CalibrationError, match="no calibration"):
        lens_from_config(LensConfig())


# ---------------------------------------------------------------------------- undistorting


def edge_rows(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the sub-pixel row where a dark-above, bright-below edge crosses 50 %."""
    gray = image[..., 0].astype(np.float64)
    cols, rows = [], []
    for x in range(8, gray.shape[1] - 8):
        column = gray[:, x]
        i = int(np.argmax(column >= 127.5))
        if i > 0 and column[i - 1] < 127.5:
            rows.append(i - 1 + (127.5 - column[i - 1]) / (column[i] - column[i - 1]))
            cols.append(x)
    return np.array(cols), np.array(rows)


def straightness_px(image: np.ndarray) -> float:
    cols, rows = edge_rows(image)
    assert len(cols) > 0.8 * image.shape[1]
    fit = np.polyval(np.polyfit(cols, rows, 1), cols)
    return float(np.abs(rows - fit).max())


def test_undistorter_straightens_a_straight_edge(rays: np.ndarray) -> None:
    # A straight edge in the world (y = -0.3 + 0.05 x in the ideal image), seen bent.
    x, y = rays[..., 0], rays[..., 1]
    beyond_px = (y - (-0.3 + 0.05 * x)) * TRUE_K[1, 1]
    gray = (np.clip(0.5 + beyond_px / 2, 0, 1) * 255).astype(np.uint8)
    distorted = np.repeat(gray[..., None], 3, axis=2)
    undistort = Undistorter(true_lens(), WIDTH, HEIGHT)
    assert straightness_px(distorted) > 5
    assert straightness_px(undistort(distorted)) < 1.0
    assert 0.7 < undistort.zoom < 1.0  # a barrel lens straightened: a wider centre
    bright = np.full_like(distorted, 255)
    assert undistort(bright)[1:-1, 1:-1].min() == 255  # alpha = 0: no black border


def test_undistorter_builds_its_maps_once(monkeypatch: pytest.MonkeyPatch,
                                          views: list[np.ndarray]) -> None:
    calls = []
    build = cv2.initUndistortRectifyMap
    monkeypatch.setattr(cv2, "initUndistortRectifyMap",
                        lambda *a, **k: calls.append(1) or build(*a, **k))
    undistort = Undistorter(true_lens(), WIDTH, HEIGHT)
    for image in views[:3]:
        assert undistort(image).shape == image.shape
    assert len(calls) == 1
    with pytest.raises(CalibrationError, match="maps are for 640x480"):
        undistort(views[0][:240, :320])


def test_undistorter_scales_to_a_smaller_camera_of_the_same_aspect(
        views: list[np.ndarray]) -> None:
    full, small = Undistorter(true_lens(), 640, 480), Undistorter(true_lens(), 160, 120)
    np.testing.assert_allclose(small.new_camera_matrix[:2], full.new_camera_matrix[:2] / 4,
                               atol=0.5)
    shrunk = cv2.resize(views[1], (160, 120), interpolation=cv2.INTER_AREA)
    expected = cv2.resize(full(views[1]), (160, 120), interpolation=cv2.INTER_AREA)
    assert np.abs(small(shrunk).astype(int) - expected).mean() < 6
    with pytest.raises(CalibrationError, match="another aspect ratio"):
        scaled_camera_matrix(lens_from_config(true_lens()), 160, 90)


class FakeCamera:
    """Frames from a list, then EndOfFrames; optionally presses Ctrl-C during one read
    (which still returns its frame)."""

    def __init__(self, images: list[np.ndarray], ctrl_c_at: int | None = None):
        self.images = images
        self.size = (images[0].shape[1], images[0].shape[0])
        self.ctrl_c_at = ctrl_c_at
        self.reads = 0
        self.closed = False

    def read(self) -> Frame:
        if self.reads == self.ctrl_c_at:
            os.kill(os.getpid(), signal.SIGINT)
        if self.reads >= len(self.images):
            raise EndOfFrames
        self.reads += 1
        return Frame(self.images[self.reads - 1], 10.0 + self.reads / 30, 100 + self.reads)

    def close(self) -> None:
        self.closed = True


def test_undistorted_camera_keeps_time_seq_and_size(views: list[np.ndarray]) -> None:
    inner = FakeCamera(views[:2])
    camera = maybe_undistort(inner, true_lens())
    assert isinstance(camera, UndistortedCamera) and camera.size == (WIDTH, HEIGHT)
    frame = camera.read()
    assert (frame.time_s, frame.seq) == (10.0 + 1 / 30, 101)
    assert frame.image.shape == views[0].shape and not np.array_equal(frame.image, views[0])
    camera.close()
    assert inner.closed
    assert maybe_undistort(inner, true_lens(undistort=False)) is inner
    with pytest.raises(CalibrationError, match="another aspect ratio"):
        maybe_undistort(FakeCamera([np.zeros((90, 160, 3), np.uint8)]), true_lens())


def test_view_picker_keeps_only_views_that_moved(views: list[np.ndarray]) -> None:
    picker = ViewPicker((WIDTH, HEIGHT))
    corners = find_corners(views[0], BOARD)
    assert picker.offer(corners) == "first view"
    assert picker.offer(corners + 3) is None  # 3 px is not a new view
    assert picker.offer(corners[::-1].copy()) is None  # the same board, read from the other end
    assert picker.offer(find_corners(views[1], BOARD)) == "moved 124 px"
    assert picker.offer(find_corners(views[6], BOARD)) == "turned"  # tilted 35° in place
    assert len(picker.kept) == 3


# ---------------------------------------------------------------------------- the command


@pytest.fixture
def car_main(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[list[str]], int]:
    """``car.cli.main``, with `car calibrate` added if cli.py does not register it yet."""
    from car import cli

    build = cli.build_parser

    def build_parser() -> argparse.ArgumentParser:
        parser = build()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "calibrate" not in commands.choices:
            calibrate_commands.register(commands)
        return parser

    monkeypatch.setattr(cli, "build_parser", build_parser)
    monkeypatch.delenv("CAR_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return cli.main


def test_cli_calibrates_a_folder_writes_car_toml_and_a_preview(
        car_main: Callable[[list[str]], int], tmp_path: Path, views: list[np.ndarray],
        capsys: pytest.CaptureFixture[str]) -> None:
    write_pngs(tmp_path / "shots", views)
    cv2.imwrite(str(tmp_path / "shots" / "zz_blank.png"), blank())
    rc = car_main(["calibrate", "camera", "--images", "shots", "--board", "9x6", "--square-mm",
                   "30", "--write", "--config", "car.toml", "--preview", "preview.png"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "from 8 of 9 views" in out and "rejected zz_blank.png: no 9x6 board found" in out
    assert "wrote [lens] to car.toml" in out and "undistort = true" in out
    lens = load_config(tmp_path / "car.toml").lens
    assert lens.undistort is True and (lens.width, lens.height) == (WIDTH, HEIGHT)
    assert lens.fx == pytest.approx(420, rel=0.02) and lens.k1 < 0 and lens.rms_px < 1
    preview = cv2.imread(str(tmp_path / "preview.png"))
    assert preview.shape == (HEIGHT, 2 * WIDTH, 3)


@pytest.fixture
def restore_sigint() -> Iterator[None]:
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


@pytest.mark.usefixtures("restore_sigint")
@pytest.mark.parametrize(("frames", "ctrl_c_at", "kept"), [("6", None, 6), ("20", None, 8),
                                                           ("20", 12, 7)])
def test_cli_live_keeps_distinct_views(car_main: Callable[[list[str]], int],
                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       views: list[np.ndarray], capsys: pytest.CaptureFixture[str],
                                       frames: str, ctrl_c_at: int | None, kept: int) -> None:
    stream = [view for view in views for _ in range(2)]  # each view twice: one copy is kept
    monkeypatch.setattr(calibrate_commands, "open_camera",
                        lambda spec, width, height, fps: FakeCamera(stream, ctrl_c_at))
    rc = car_main(["calibrate", "camera", "--live", "--camera", "usb:0", "--frames", frames,
                   "--save", "kept"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"view {kept}/{frames} kept" in out and f"from {kept} of {kept} views" in out
    assert len(list((tmp_path / "kept").glob("view_*.png"))) == kept
    assert (f"stopped with {kept} views" in out) == (ctrl_c_at is not None)


@pytest.mark.parametrize(("args", "message"), [
    (["--images", "shots", "--board", "9"], "expected WxH inner corners"),
    (["--images", "shots", "--board", "9x1"], "at least 2"),
    (["--images", "shots", "--square-mm", "0"], "must be positive"),
    (["--images", "shots", "--square-mm", "-25"], "must be positive"),
    (["--live", "--frames", "2"], "must be from 5"),
])
def test_cli_refuses_bad_flags(car_main: Callable[[list[str]], int],
                               capsys: pytest.CaptureFixture[str], args: list[str],
                               message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        car_main(["calibrate", "camera", *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_cli_reports_unusable_input_in_one_line(car_main: Callable[[list[str]], int],
                                                tmp_path: Path, views: list[np.ndarray],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    write_pngs(tmp_path / "few", views[:2])
    for folder, message in (("nowhere", "nowhere: folder not found"),
                            ("empty", "no .png or .jpg images"),
                            ("few", "only 2 of 2 views show a whole 9x6 board")):
        assert car_main(["calibrate", "camera", "--images", folder]) == 1
        err = capsys.readouterr().err
        assert err.startswith("car: error: ") and message in err and err.count("\n") == 1
    assert car_main(["calibrate", "camera", "--live", "--camera", "sim"]) == 1
    assert "the simulator has no lens" in capsys.readouterr().err
    assert car_main(["calibrate", "camera", "--images", "few", "--frames", "9"]) == 1
    assert "--frames: for --live only" in capsys.readouterr().err


def test_lens_calibration_properties() -> None:
    cal = LensCalibration(TRUE_K, TRUE_DIST, (WIDTH, HEIGHT), 0.2)
    assert (cal.fx, cal.fy, cal.cx, cal.cy) == (420, 415, 322, 236)
