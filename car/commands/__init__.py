"""Subcommands of `car`. Each module has ``register(subparsers)``; handlers stay short."""

from __future__ import annotations

import argparse
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
