"""Subcommands of `car`. Each module has ``register(subparsers)``; handlers stay short."""

from __future__ import annotations

import argparse

from car.config import Config, load_config


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--set`` for commands that read car.toml."""
    parser.add_argument("--config", metavar="PATH",
                        help="config file (default: $CAR_CONFIG, else ./car.toml if present)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)
