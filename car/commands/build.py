"""`car build`: compile an ONNX model to a TensorRT engine on this machine (deploy/build.py).

An engine runs only with the TensorRT version and GPU model it was built with, so build it
on the car (or on the very desktop that will run it). INT8 needs camera frames to calibrate
on (``--calib-tub``) unless the model carries Q/DQ nodes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from car.commands import add_config_options, bounded, config_from_args
from car.errors import CarError, TubError
from car.tub import Tub
from car.tub.paths import expand_paths
from deploy.engine import EngineError
from deploy.manifest import ManifestError, load_manifest, manifest_path


def register(commands: argparse._SubParsersAction) -> None:
    build = commands.add_parser(
        "build", help="compile MODEL.onnx to a TensorRT engine for this GPU (needs TensorRT)")
    build.add_argument("onnx", metavar="MODEL.onnx",
                       help="the exported model (its .json manifest beside it)")
    build.add_argument("--fp16", action="store_true",
                       help="allow FP16 kernels (about twice as fast on a Jetson; tiny drift)")
    build.add_argument("--int8", action="store_true",
                       help="allow INT8 kernels: needs --calib-tub unless the model has Q/DQ "
                            "nodes")
    build.add_argument("--calib-tub", nargs="+", metavar="DIR",
                       help="tub folders or globs whose camera frames calibrate INT8")
    build.add_argument("--calib-frames", type=bounded(int, 1, 1_000_000), default=500,
                       help="frames to calibrate on, spread over the tubs (default 500)")
    build.add_argument("--workspace-mb", type=bounded(int, 16, 1 << 20), default=1024,
                       help="GPU scratch memory TensorRT may use while building (default 1024)")
    build.add_argument("--out", metavar="PILOT.trt",
                       help="engine to write (default: the model's path with .trt)")
    build.add_argument("--force", action="store_true", help="replace an existing engine")
    add_config_options(build)
    build.set_defaults(handler=build_command)


def _progress(message: str) -> None:
    print(f"car build: {message}", file=sys.stderr, flush=True)


def _find_model(name: str, models_dir: str) -> Path:
    """The ONNX model as given, else under the config's models folder."""
    path = Path(name)
    if path.is_file():
        return path
    if not path.is_absolute() and (Path(models_dir) / path).is_file():
        return Path(models_dir) / path
    raise CarError(f"{name}: no such ONNX model (export one with `car train` or `car export`)")


def read_calibration_frames(patterns: list[str], count: int, run_length: int) -> list[np.ndarray]:
    """About ``count`` camera frames spread over the tubs, in runs of ``run_length``
    consecutive records (a 3d model calibrates on windows of consecutive frames). A run
    with an unreadable image is skipped."""
    records = [(tub, rec) for tub in (Tub(p) for p in expand_paths(patterns))
               for rec in tub.records()]
    if len(records) < run_length:
        raise CarError(f"the calibration tubs hold {len(records)} records; INT8 calibration "
                       f"needs at least {run_length}")
    runs = max(1, count // run_length)
    starts = sorted(set(np.linspace(0, len(records) - run_length, runs).round().astype(int)))
    frames: list[np.ndarray] = []
    skipped = 0
    for start in starts:
        try:
            frames += [tub.load_image(rec) for tub, rec in records[start:start + run_length]]
        except TubError:
            skipped += 1
    if skipped:
        _progress(f"skipped {skipped} calibration run(s) with an unreadable image")
    if not frames:
        raise CarError("no readable camera frame in the calibration tubs "
                       "(`car tub check` says what is wrong with them)")
    return frames


def build_command(args: argparse.Namespace) -> int:
    from deploy.build import build_engine, has_qdq_nodes, toolchain

    config = config_from_args(args)
    onnx = _find_model(args.onnx, config.paths.models_dir)
    if onnx.suffix.lower() != ".onnx":
        raise CarError(f"{onnx}: `car build` takes an .onnx model")
    out = Path(args.out) if args.out else onnx.with_suffix(".trt")
    if out.exists() and not args.force:
        raise CarError(f"{out} exists; pass --force to replace it")
    if args.calib_tub and not args.int8:
        raise CarError("--calib-tub calibrates INT8; add --int8 (or drop --calib-tub)")
    try:
        manifest = load_manifest(onnx)
    except ManifestError as exc:
        raise CarError(str(exc)) from None
    qdq = has_qdq_nodes(onnx) if args.int8 else None
    if args.int8 and not args.calib_tub and qdq is False:
        raise CarError(f"{onnx} has no Q/DQ nodes, so --int8 needs camera frames to calibrate "
                       "on: add --calib-tub DIR (a tub recorded with this camera)")
    p = manifest.preprocess
    if (config.camera.width, config.camera.height) != (p.source_width, p.source_height):
        _progress(f"warning: the model takes {p.source_width}x{p.source_height} frames but the "
                  f"camera is set to {config.camera.width}x{config.camera.height} "
                  f"({config.source}); set camera.width and camera.height to match")
    try:
        trt, _, gpu = toolchain()  # before reading frames: say early what is missing
        frames = None
        if args.int8 and args.calib_tub and not qdq:
            run = manifest.sequence_length if manifest.model_type == "3d" else 1
            frames = read_calibration_frames(args.calib_tub, args.calib_frames, run)
        built = build_engine(onnx, out, fp16=args.fp16, int8=args.int8,
                             calibration_frames=frames, workspace_mb=args.workspace_mb,
                             log=_progress)
    except EngineError as exc:
        raise CarError(str(exc)) from None
    e = built.engine
    how = f" via {e['int8_method'].replace('_', ' ')}" if e.get("int8_method") else ""
    print(f"built {out} ({e['precision']}{how}, {out.stat().st_size / 1e6:.1f} MB) in "
          f"{e['build_s']:.0f} s with TensorRT {trt.__version__} on {gpu.name} ({gpu.sm}); "
          f"manifest {manifest_path(out)}")
    return 0
