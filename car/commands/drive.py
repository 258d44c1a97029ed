"""`car drive`: the drive loop with a model, on the car's camera or in the simulator."""

from __future__ import annotations

import argparse

from car.commands import add_config_options, bounded, config_from_args
from car.commands.run_options import (
    add_device_options,
    device_fields,
    drive_and_report,
    on_the_car,
    simulator,
)
from car.frames import Mode
from car.run import Run, RunSpec


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("drive", help="drive with a model: on the car, or in the simulator")
    p.add_argument("--model", required=True, metavar="PATH",
                   help="pilot.onnx, pilot.trt (or .engine/.plan) or pilot.pt2, with its .json "
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
                   "the best available); for .pt2: cpu or cuda")
    add_config_options(p)
    p.set_defaults(handler=drive_command)


def drive_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    controller = args.controller or ("web" if on_the_car(args, config.camera.source) else "none")
    spec = RunSpec(model=args.model, provider=args.provider, mode=args.mode,
                   controller=controller, record=args.record, laps=args.laps,
                   session_info={"drive": {"model": str(args.model), "mode": args.mode,
                                           "sim": simulator(args)}},
                   **device_fields(args))
    return drive_and_report(Run(spec, config), args, lambda run: (
        f"driving {run.engine.describe() if run.engine else args.model} at {run.plan.hz:g} "
        f"Hz, mode {args.mode}{run.describe()}"))
