"""`car gamepad test`: live axes and buttons, and the steering and throttle they map to, so a
user can find their gamepad's numbers for car.toml."""

from __future__ import annotations

import argparse
import glob
import os
import select
import shutil
import sys
import time
from typing import IO, TextIO

from car.commands import CtrlC, add_config_options, bounded, config_from_args
from car.controllers.gamepad import (
    EVENT,
    READ_WAIT_S,
    Controls,
    JoystickState,
    device_name,
    open_joystick,
    open_problem,
)
from car.errors import CarError

JS_GLOB = "/dev/input/js*"


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("gamepad", help="a gamepad on the Linux joystick interface")
    sub = p.add_subparsers(dest="gamepad_command", metavar="ACTION", required=True)
    t = sub.add_parser("test", help="show live axes and buttons and the steering and throttle "
                       "they map to, to find your gamepad's numbers")
    t.add_argument("--device", metavar="PATH",
                   help="joystick device (default: gamepad.device in car.toml)")
    t.add_argument("--seconds", type=bounded(float, 0.0, 86400.0), default=None,
                   help="stop after this long (default: at Ctrl-C)")
    add_config_options(t)
    t.set_defaults(handler=live_command)


def live_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    controls = Controls.from_config(config.gamepad)
    path = args.device or config.gamepad.device
    file = open_device(path)
    line = LiveLine(controls, sys.stdout)
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    with file, CtrlC() as ctrl_c:
        print(f"{path}: {device_name(file) or 'a joystick device'}; {controls.describe()}")
        print("Move each stick and press each button; Ctrl-C ends.", flush=True)
        try:
            _follow(file, path, line, ctrl_c, deadline)
        finally:
            line.end()
    return 0


def _follow(file: IO[bytes], path: str, line: LiveLine, ctrl_c: CtrlC,
            deadline: float | None) -> None:
    state = JoystickState()
    fd = file.fileno()
    while not ctrl_c.pressed:
        wait_s = READ_WAIT_S if deadline is None else min(READ_WAIT_S,
                                                          deadline - time.monotonic())
        if wait_s <= 0:
            return
        try:
            if not select.select([fd], [], [], wait_s)[0]:
                continue
            data = os.read(fd, 64 * EVENT.size)
        except OSError as exc:
            raise CarError(f"the gamepad at {path} went away ({exc.strerror or exc}); plug it "
                           "back in and run again") from None
        if not data:
            raise CarError(f"the gamepad at {path} went away (the device closed); plug it back "
                           "in and run again")
        before = state.events
        state.feed(data)
        if state.events != before:
            line.show(state)


def open_device(path: str) -> IO[bytes]:
    """The joystick device, or a CarError that lists the ones there are."""
    try:
        return open_joystick(path)
    except FileNotFoundError:
        found = sorted(glob.glob(JS_GLOB))
        if found:
            raise CarError(f"no gamepad at {path}; joystick devices here: {', '.join(found)}: "
                           "pass one with --device, or set gamepad.device") from None
        raise CarError(f"no gamepad at {path}, and no {JS_GLOB} at all: plug one in (pair it "
                       "first if it is Bluetooth; see docs/gamepad.md)") from None
    except OSError as exc:
        raise CarError(open_problem(path, exc)) from None


class LiveLine:
    """The state in one line: redrawn in place on a terminal, one line per read otherwise."""

    def __init__(self, controls: Controls, out: TextIO):
        self.controls = controls
        self.out = out
        self.tty = out.isatty()
        self.start_s = time.monotonic()
        self._drawn = False

    def format(self, state: JoystickState) -> str:
        axes = " ".join(f"{n}:{state.axes[n]:+d}" for n in sorted(state.axes))
        buttons = " ".join(self._button(n) for n in state.pressed()) or "-"
        return (f"axes {axes or '-'} | buttons {buttons} | steering "
                f"{self.controls.steering(state):+.2f} throttle "
                f"{self.controls.throttle(state):+.2f}")

    def _button(self, number: int) -> str:
        names = self.controls.layout.button_names
        label = [names[number]] if number < len(names) else []
        action = self.controls.actions.get(number)
        if action is not None:
            label.append(action)
        return f"{number}({', '.join(label)})" if label else str(number)

    def show(self, state: JoystickState) -> None:
        text = self.format(state)
        if self.tty:
            width = shutil.get_terminal_size().columns
            self.out.write("\r" + text[:max(20, width - 1)] + "\x1b[K")
            self._drawn = True
        else:
            self.out.write(f"{time.monotonic() - self.start_s:8.3f} s  {text}\n")
        self.out.flush()

    def end(self) -> None:
        if self._drawn:
            self.out.write("\n")
            self.out.flush()
