"""The `car` command: one entry point, one subcommand per job. Handlers live in car/commands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import cv2

from car import __version__, logs
from car.commands import bench as bench_commands
from car.commands import build as build_commands
from car.commands import cache as cache_commands
from car.commands import calibrate as calibrate_commands
from car.commands import calibrate_servo as calibrate_servo_commands
from car.commands import config as config_commands
from car.commands import drive as drive_commands
from car.commands import gamepad as gamepad_commands
from car.commands import mcu as mcu_commands
from car.commands import models as models_commands
from car.commands import record as record_commands
from car.commands import sim as sim_commands
from car.commands import sim_dagger as sim_dagger_commands
from car.commands import sim_serve as sim_serve_commands
from car.commands import train as train_commands
from car.commands import tub as tub_commands
from car.errors import CarError


class CommandParser(argparse.ArgumentParser):
    """An unknown flag is reported with the usage of the (sub)command it was given to, not
    the top-level one (argparse's own way). Subparsers inherit the class."""

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="car",
        description="Autopilot for Donkey Car class RC cars: record, train, compile, drive.",
    )
    parser.add_argument("--version", action="version", version=f"car {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an unexpected error, and of logged ones")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    config_commands.register(commands)
    tub_commands.register(commands)
    sim_actions = sim_commands.register(commands)
    sim_serve_commands.register(sim_actions)
    sim_dagger_commands.register(sim_actions)
    train_commands.register(commands)
    cache_commands.register(commands)
    models_commands.register(commands)
    drive_commands.register(commands)
    record_commands.register(commands)
    bench_commands.register(commands)
    build_commands.register(commands)
    mcu_commands.register(commands)
    calibrate_servo_commands.register(calibrate_commands.register(commands))
    gamepad_commands.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to start it again (--nproc)
    logs.configure(verbose=args.verbose, debug=args.debug)
    car = _who()
    try:
        return int(args.handler(args) or 0)
    except CarError as exc:
        print(f"{car} error: {logs.one_line(str(exc))}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file the user named cannot be written or read
        if isinstance(exc, BrokenPipeError):
            return _quiet_broken_pipe()
        print(f"{car} error: {logs.one_line(str(exc))}", file=sys.stderr)
        return 1
    except cv2.error as exc:  # OpenCV's own message is several lines; keep its gist
        gist = [line for line in str(exc).splitlines() if line.strip()][-1].strip()
        print(f"{car} error: OpenCV: {gist}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("car: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"{car} internal error: {logs.exception_line(type(exc), exc)} (run again with "
              "--debug for the traceback, and report it)", file=sys.stderr)
        return 3


def _who() -> str:
    """``car:``, naming the process where it is one of several training processes."""
    size = os.environ.get("WORLD_SIZE", "1")
    if size.isdigit() and int(size) > 1:
        return f"car (training process {os.environ.get('RANK', '?')} of {size}):"
    return "car:"


def _quiet_broken_pipe() -> int:
    """`car ... | head`: the reader left early. Not an error; say nothing."""
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stops the flush at exit failing
    return 0


if __name__ == "__main__":
    sys.exit(main())
