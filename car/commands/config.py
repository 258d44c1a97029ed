"""`car config init` and `car config show`."""

from __future__ import annotations

import argparse
import json

from car.commands import add_config_options, config_from_args
from car.config import DEFAULT_FILE, config_as_dict, render_toml, write_default_config


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("config", help="write or show car.toml")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)

    init = sub.add_parser("init", help="write a fully commented default car.toml")
    init.add_argument("--out", default=DEFAULT_FILE, help="where to write (default: car.toml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(handler=init_config)

    show = sub.add_parser("show", help="print the effective config (file plus overrides)")
    add_config_options(show)
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    show.set_defaults(handler=show_config)


def init_config(args: argparse.Namespace) -> None:
    path = write_default_config(args.out, force=args.force)
    print(f"wrote {path}; edit it, then check it with `car config show --config {path}`")


def show_config(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    if args.json:
        print(json.dumps({"source": config.source, **config_as_dict(config)}, indent=2))
    else:
        print(f"# effective config, from {config.source}")
        print(render_toml(config, comments=False), end="")
