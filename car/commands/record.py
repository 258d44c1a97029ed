"""`car record`: a person drives (web page, gamepad or RC transmitter) and the frames go into
a tub with the user's steering, throttle and mode, ready for `car train`.

Recording is on from the start and keeps only ticks that move (|throttle| above
``record.auto_record_throttle``, as donkeycar's auto-record); the page or the gamepad turns
it off and on, and erases the last ``record.erase_count`` records (soft delete, restorable
with `car tub restore`). Each start adds a new session to the tub.
"""

from __future__ import annotations

import argparse
import sys

from car.commands import add_config_options, config_from_args
from car.commands.run_options import (
    add_device_options,
    camera_in_use,
    device_fields,
    drive_and_report,
    simulator,
)
from car.frames import Mode
from car.run import Run, RunSpec


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("record", help="drive by hand (web page, gamepad or RC) and record "
                            "a tub")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the tub to write (created, or appended to as a new session)")
    add_device_options(p, controller_help="how the person drives: web (the page, default), "
                       "gamepad, rc (the transmitter through the MCU), or none (nobody: a "
                       "check that the camera and recorder work)")
    add_config_options(p)
    p.set_defaults(handler=record_command)


def record_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    controller = args.controller or "web"
    spec = RunSpec(mode=Mode.USER.value, controller=controller, record=args.out,
                   auto_record=True, **device_fields(args),
                   session_info={"record": {
                       "controller": controller, "sim": simulator(args),
                       "camera": camera_in_use(args, config.camera.source)}})
    run = Run(spec, config)
    if controller == "none":
        print("car: note: --controller none: nobody drives, so nothing moves and little is "
              "recorded", file=sys.stderr)
    threshold = config.record.auto_record_throttle
    return drive_and_report(run, args, lambda run: (
        f"recording into {args.out} at {run.plan.hz:g} Hz with the {controller} controller"
        f"{run.describe()}; " + (f"ticks with |throttle| > {threshold:g} are kept"
                                 if threshold > 0 else "every tick is kept")))
