"""`car calibrate`: measure the car and store the results in car.toml.

``car calibrate camera`` fits the lens from chessboard views (a folder of photos, or live
from the camera) and, with ``--write``, stores it in ``[lens]`` (see docs/calibration.md).

More targets (``car calibrate steering``, ``car calibrate throttle``) hang off the same
parser: ``register(commands)`` makes ``car calibrate`` with the camera target and returns
its sub-subparsers, and cli.py hands them to ``car.commands.calibrate_servo.register``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from calibration.camera import (
    MIN_VIEWS,
    Board,
    CalibrationError,
    LensCalibration,
    Undistorter,
    ViewPicker,
    calibrate_folder,
    find_corners,
    fit_lens,
    lens_to_config,
    parse_board,
    quality_notes,
    scaled_camera_matrix,
)
from car.camera import Camera, EndOfFrames, open_camera
from car.commands import CtrlC, add_config_options, bounded, config_from_args
from car.config import DEFAULT_FILE, find_config_file, update_config_file

DEFAULT_VIEWS = 20
HINT_AFTER_S = 5.0  # live: say how to move the board after this long without a new view


def register(commands: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add ``car calibrate`` with its ``camera`` target; returns the targets' subparsers
    (cli.py adds ``steering`` and ``throttle`` from ``car.commands.calibrate_servo``)."""
    parser = commands.add_parser("calibrate", help="calibrate the camera lens (and the car's "
                                 "steering and throttle) into car.toml")
    targets = parser.add_subparsers(dest="calibrate_target", metavar="TARGET", required=True)
    register_camera(targets)
    return targets


def register_camera(targets: argparse._SubParsersAction) -> None:
    p = targets.add_parser("camera", help="fit the lens from chessboard views",
                           description="Fit the lens (focal length, centre, distortion) from "
                           "views of a printed chessboard; see docs/calibration.md.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="DIR", help="a folder of .png/.jpg board photos")
    source.add_argument("--live", action="store_true", help="grab views from the camera")
    p.add_argument("--board", type=board_arg, default=(9, 6), metavar="WxH",
                   help="inner corners across and down (default 9x6: a board of 10x7 squares)")
    p.add_argument("--square-mm", type=square_arg, default=25.0, metavar="MM",
                   help="side of one printed square in mm (default 25)")
    p.add_argument("--fisheye", action="store_true",
                   help="fit cv2.fisheye's model (k1..k4) for the 130-160 deg lenses most "
                        "Donkey cars carry; without it, the pinhole model (up to ~120 deg)")
    p.add_argument("--write", action="store_true",
                   help="store the result in car.toml's [lens] and turn undistort on")
    p.add_argument("--preview", metavar="OUT.png",
                   help="write the first view, original beside undistorted")
    live = p.add_argument_group("live")
    live.add_argument("--camera", metavar="SPEC", help="usb:INDEX, csi[:SENSOR], gst:PIPELINE "
                      "or replay:TUB (default: camera.source in car.toml)")
    live.add_argument("--frames", type=bounded(int, MIN_VIEWS, 200), metavar="N",
                      help=f"views to collect, {MIN_VIEWS} to 200 (default {DEFAULT_VIEWS})")
    live.add_argument("--size", type=size_arg, metavar="WxH", help="capture size (default: "
                      "[camera] width x height; a multiple of it, e.g. 640x480 for 160x120, "
                      "finds the board more easily)")
    live.add_argument("--save", metavar="DIR", help="also save the kept views as PNGs, to "
                      "calibrate again with --images")
    add_config_options(p)
    p.set_defaults(handler=calibrate_camera)


def board_arg(text: str) -> Board:
    try:
        return parse_board(text)
    except CalibrationError:
        raise argparse.ArgumentTypeError(f"expected WxH inner corners, two whole numbers of at "
                                         f"least 2 such as 9x6; got {text!r}") from None


def square_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 10_000:
        raise argparse.ArgumentTypeError(f"the square size must be positive (in mm), got {text}")
    return value


def size_arg(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit() and int(width) >= 16
            and int(height) >= 16):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 640x480; "
                                         f"got {text!r}")
    return int(width), int(height)


def calibrate_camera(args: argparse.Namespace) -> None:
    live_only = [flag for flag, value in (("--camera", args.camera), ("--frames", args.frames),
                                          ("--size", args.size), ("--save", args.save))
                 if value is not None]
    if live_only and not args.live:
        raise CalibrationError(f"{', '.join(live_only)}: for --live only, not with --images")
    if args.live:
        cal, first_view = calibrate_live(args)
    else:
        print(f"looking for {args.board[0]}x{args.board[1]} boards in {args.images} ...",
              flush=True)
        cal = calibrate_folder(args.images, args.board, args.square_mm, args.fisheye)
        first_view = read_rgb(Path(args.images) / cal.images_used[0])
    print_calibration(cal, args.board, args.square_mm)
    if args.preview:
        write_preview(args.preview, first_view, cal)
    if args.write:
        write_lens(args.config, cal)


def calibrate_live(args: argparse.Namespace) -> tuple[LensCalibration, np.ndarray]:
    """Collect views from the camera until ``--frames``, the end of a replay, or Ctrl-C."""
    config = config_from_args(args)
    spec = args.camera or config.camera.source
    if spec == "sim":
        raise CalibrationError("the simulator has no lens to calibrate; pass --camera usb:0, "
                               "csi or gst:PIPELINE")
    width, height = args.size or (config.camera.width, config.camera.height)
    camera = open_camera(spec, width, height, config.camera.fps)
    try:
        with CtrlC() as ctrl:
            corner_sets, first_view = collect_views(camera, args, ctrl)
    finally:
        camera.close()
    names = [f"view_{i + 1:02d}.png" if args.save else f"view {i + 1}"
             for i in range(len(corner_sets))]
    if first_view is None:
        raise CalibrationError(f"no {args.board[0]}x{args.board[1]} board was seen; check "
                               "--board counts inner corners and the whole board is in view")
    return fit_lens(corner_sets, names, [], args.board, args.square_mm, camera.size,
                    args.fisheye), first_view


def collect_views(camera: Camera, args: argparse.Namespace,
                  ctrl: CtrlC) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Keep a frame when a whole board is in it and it moved enough from the kept ones."""
    picker = ViewPicker(camera.size)
    first_view: np.ndarray | None = None
    last_seq = -1
    last_news = time.monotonic()
    save_dir = Path(args.save) if args.save else None
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
    print(f"show the {args.board[0]}x{args.board[1]} board to the camera: tilt it, move it "
          "to the edges and corners, near and far; Ctrl-C stops early", flush=True)
    wanted = args.frames or DEFAULT_VIEWS
    while len(picker.kept) < wanted and not ctrl.pressed:
        try:
            frame = camera.read()
        except EndOfFrames:
            print("the camera has no more frames", flush=True)
            break
        if frame.seq == last_seq:
            continue
        last_seq = frame.seq
        corners = find_corners(frame.image, args.board)
        why = None if corners is None else picker.offer(corners)
        if why is None:
            if time.monotonic() - last_news > HINT_AFTER_S:
                what = "no board in view" if corners is None else "the board has not moved"
                print(f"  {what}: tilt or move it to a new place", flush=True)
                last_news = time.monotonic()
            continue
        last_news = time.monotonic()
        if first_view is None:
            first_view = frame.image
        if save_dir:
            path = save_dir / f"view_{len(picker.kept):02d}.png"
            cv2.imwrite(str(path), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
        print(f"view {len(picker.kept)}/{wanted} kept ({why})", flush=True)
    if ctrl.pressed:
        print(f"stopped with {len(picker.kept)} views", flush=True)
    return picker.kept, first_view


def print_calibration(cal: LensCalibration, board: Board, square_mm: float) -> None:
    total = len(cal.images_used) + len(cal.images_rejected)
    print(f"{cal.model} lens at {cal.size[0]}x{cal.size[1]} from {len(cal.images_used)} of "
          f"{total} views ({board[0]}x{board[1]} board, {square_mm:g} mm squares):")
    print(f"  fx = {cal.fx:.2f} px   fy = {cal.fy:.2f} px")
    print(f"  cx = {cal.cx:.2f} px   cy = {cal.cy:.2f} px")
    names = ("k1", "k2", "k3", "k4") if cal.fisheye else ("k1", "k2", "p1", "p2", "k3")
    print("  distortion " + "  ".join(f"{n} = {v:.5f}" for n, v in zip(names, cal.dist)))
    print(f"  RMS reprojection error {cal.rms_px:.3f} px (under 0.5 is good, over 1 is poor)")
    worst = sorted(zip(cal.image_errors_px, cal.images_used), reverse=True)[:3]
    print("  worst views: " + ", ".join(f"{name} {err:.2f} px" for err, name in worst))
    zoom = Undistorter(cal, *cal.size).zoom
    print(f"  undistorted frames: focal length x{zoom:.2f}, framed with no black border")
    for name, why in cal.images_rejected:
        print(f"  rejected {name}: {why}")
    for note in quality_notes(cal):
        print(f"note: {note}")


def write_preview(path: str, image: np.ndarray, cal: LensCalibration) -> None:
    """The original beside the undistorted view, labelled, as an image file."""
    undistorted = Undistorter(cal, image.shape[1], image.shape[0])(image)
    pair = np.hstack([image, undistorted])
    scale = max(0.4, image.shape[1] / 640)
    for x, label in ((0, "original"), (image.shape[1], "undistorted")):
        org = (x + int(8 * scale), int(24 * scale))
        cv2.putText(pair, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (255, 64, 64),
                    max(1, round(2 * scale)), cv2.LINE_AA)
    if not cv2.imwrite(path, cv2.cvtColor(pair, cv2.COLOR_RGB2BGR)):
        raise CalibrationError(f"{path}: cannot write the preview; use a .png or .jpg name in "
                               "a folder that exists")
    print(f"wrote {path} (original | undistorted)")


def write_lens(config_arg: str | None, cal: LensCalibration) -> None:
    """Store the lens in car.toml's [lens] with undistort on, and say what was written."""
    path = Path(config_arg) if config_arg else find_config_file(None) or Path(DEFAULT_FILE)
    existed = path.exists()
    changes = {"undistort": True, **lens_to_config(cal)}
    config = update_config_file(path, {"lens": changes})
    print(f"wrote [lens] to {path}" + (f" (the previous file is {path}.bak)" if existed else ""))
    print("  " + ", ".join(f"{key} = {str(value).lower() if isinstance(value, bool) else value}"
                           for key, value in changes.items()))
    width, height = config.camera.width, config.camera.height
    try:
        scaled_camera_matrix(cal, width, height)
    except CalibrationError:
        print(f"note: [camera] is {width}x{height}, another aspect ratio than "
              f"{cal.size[0]}x{cal.size[1]}: `car drive` will refuse to undistort until they "
              "match")
    else:
        if (width, height) != cal.size:
            print(f"  `car drive` scales it to the camera's {width}x{height}")


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise CalibrationError(f"{path}: cannot read it back for the preview")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
