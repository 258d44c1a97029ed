"""`car record`: a person drives (web page, gamepad or RC transmitter) and the frames go into
a tub with the user's steering, throttle and mode, ready for `car train`.

Recording is on from the start and keeps only ticks that move (|throttle| above
``record.auto_record_throttle``, as donkeycar's auto-record); the page or the gamepad turns
it off and on, and erases the last ``record.erase_count`` records (soft delete, restorable
with `car tub restore`). Each start adds a new session to the tub.
"""

from __future__ import annotations

import argparse
import json
import sys

from car.commands import add_config_options, config_from_args
from car.commands.session import Session, add_device_options, exit_code, format_summary, plan
from car.frames import Mode


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("record", help="drive by hand (web page, gamepad or RC) and record "
                            "a tub")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the tub to write (created, or appended to as a new session)")
    add_device_options(p, controller_help="how the person drives: web (the page, default), "
                       "gamepad, or rc (the transmitter through the MCU)")
    add_config_options(p)
    p.set_defaults(handler=record_command)


def record_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    run = plan(args, config, default_controller="web")
    if run.controller == "none":
        print("car: note: --controller none: nobody drives, so nothing moves and little is "
              "recorded", file=sys.stderr)
    info = {"record": {"controller": run.controller, "sim": args.sim,
                       "camera": None if run.use_sim else run.camera_spec}}
    with Session(args, config, run, mode=Mode.USER, record_path=args.out,
                 session_info=info) as session:
        session.loop.auto_record_throttle = config.record.auto_record_throttle
        print(f"recording into {args.out} at {run.hz:g} Hz with the {run.controller} "
              f"controller{session.describe()}; ticks with |throttle| > "
              f"{config.record.auto_record_throttle:g} are kept; Ctrl-C stops",
              file=sys.stderr)
        summary = session.run(duration_s=args.duration)
    session.add_record_summary(summary)
    print(json.dumps(summary) if args.json else format_summary(summary))
    return exit_code(summary["stop_reason"])
