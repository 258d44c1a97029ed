"""Subcommands of `car`. Each module has ``register(subparsers)``; handlers stay short."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from car.config import Config, load_config


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--set`` for commands that read car.toml."""
    parser.add_argument("--config", metavar="PATH",
                        help="config file (default: $CAR_CONFIG, else ./car.toml if present)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def bounded(kind: type, low: float, high: float) -> Any:
    """An argparse type: a number of ``kind`` from ``low`` to ``high``."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {text}")
        return value

    return parse


class CtrlC:
    """Ctrl-C as a request: the first press sets ``pressed`` so a loop stops at a safe point
    and saves its work; later presses are ignored while it does, or, with ``second_raises``,
    interrupt at once (the drive loop, whose stop sends neutral). A context manager, for
    the main thread; it restores the previous handler on exit."""

    def __init__(self, second_raises: bool = False) -> None:
        self.pressed = False
        self.second_raises = second_raises  # a second press interrupts at once
        self._previous: Any = None

    def _handle(self, signum: int, frame: object) -> None:
        if self.pressed:
            if self.second_raises:
                raise KeyboardInterrupt
            print("car: still saving what was recorded; one moment", file=sys.stderr)
        self.pressed = True

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is None:
            return
        # Once pressed, the command is finishing: ignore further presses, also during the
        # interpreter's teardown (which would otherwise die of a late SIGINT).
        signal.signal(signal.SIGINT, signal.SIG_IGN if self.pressed else self._previous)
