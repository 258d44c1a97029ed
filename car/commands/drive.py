"""`car drive`: the drive loop with a model, on the car's camera or in the simulator."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from car.commands import add_config_options, bounded, config_from_args
from car.commands.session import (
    Session,
    add_device_options,
    exit_code,
    format_summary,
    plan,
)
from car.errors import CarError
from car.frames import Mode
from car.reload import ModelWatcher
from deploy.engine import Engine, EngineError, load_engine


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("drive", help="drive with a model: on the car, or in the simulator")
    p.add_argument("--model", required=True, metavar="PATH",
                   help="pilot.onnx, pilot.trt (or .engine/.plan) or pilot.pt, with its .json "
                        "manifest beside it")
    add_device_options(p, controller_help="who can take over: web (the page; the default on the "
                       "car), gamepad, rc (the transmitter through the MCU) or none (the "
                       "default in the simulator)")
    p.add_argument("--laps", type=bounded(int, 1, 1000), help="with --sim: stop after N laps")
    p.add_argument("--record", metavar="DIR", help="record frames and the pilot's outputs "
                   "into a tub")
    p.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.LOCAL.value,
                   help="who drives: user, local_angle (pilot steers) or local (default)")
    p.add_argument("--provider", help="ONNX Runtime provider: tensorrt, cuda or cpu (default: "
                   "the best available); for .pt: cpu or cuda")
    add_config_options(p)
    p.set_defaults(handler=drive_command)


def open_engine(path: str, provider: str | None) -> Engine:
    try:
        return load_engine(path, provider)
    except EngineError as exc:
        raise CarError(str(exc)) from None


def check_frame_size(engine: Engine, width: int, height: int) -> None:
    p = engine.manifest.preprocess
    if (p.source_width, p.source_height) != (width, height):
        raise CarError(f"{engine.path.name} was trained on {p.source_width}x{p.source_height} "
                       f"frames but the camera gives {width}x{height}; set [camera] width and "
                       "height in car.toml to match")


def drive_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    spec = args.camera or config.camera.source
    on_the_car = args.sim is None and spec != "sim" and not spec.startswith("replay:")
    run = plan(args, config, default_controller="web" if on_the_car else "none")
    if args.laps and not run.use_sim:
        raise CarError("--laps needs --sim; on the car, stop with --duration or Ctrl-C")
    engine = open_engine(args.model, args.provider)
    info = {"drive": {"model": str(args.model), "mode": args.mode, "sim": args.sim}}
    with Session(args, config, run, mode=Mode(args.mode), engine=engine,
                 record_path=args.record, session_info=info) as session:
        size = session.camera.size
        check_frame_size(engine, *size)
        if config.drive.hot_reload:

            def reload(path: Any) -> Engine:
                new = load_engine(path, args.provider)
                check_frame_size(new, *size)  # a model for other frames never takes over
                return new

            watcher = ModelWatcher(args.model, reload, session.loop.swap_engine).start()
            session.stack.callback(watcher.stop)
        print(f"driving {engine.describe()} at {run.hz:g} Hz, mode {args.mode}"
              f"{session.describe()}; Ctrl-C stops (twice: at once)", file=sys.stderr)
        summary = session.run(laps=args.laps, duration_s=args.duration)
    session.add_record_summary(summary)
    print(json.dumps(summary) if args.json else format_summary(summary))
    return exit_code(summary["stop_reason"])
