"""`car config init`, `car config show` and `car config import` (a donkeycar myconfig.py)."""

from __future__ import annotations

import argparse
import json

from car.commands import add_config_options, config_from_args
from car.config import (
    DEFAULT_FILE,
    config_as_dict,
    render_toml,
    update_config_file,
    write_default_config,
)
from car.config.donkey_import import map_donkey_config, read_myconfig


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

    imp = sub.add_parser("import", help="map a donkeycar myconfig.py onto car.toml",
                         description="Read a donkeycar myconfig.py without running it and set "
                         "the PCA9685 board, its channels, the steering and throttle pulses "
                         "(PWM ticks converted to µs), the camera size and the loop rate in "
                         "car.toml, keeping its other lines and comments.")
    imp.add_argument("myconfig", help="the donkeycar car's myconfig.py")
    imp.add_argument("--out", default=DEFAULT_FILE,
                     help="the car.toml to update or create (default: car.toml)")
    imp.add_argument("--dry-run", action="store_true",
                     help="print what would be set; write nothing")
    imp.set_defaults(handler=import_config)


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


def import_config(args: argparse.Namespace) -> None:
    given, skipped = read_myconfig(args.myconfig)
    mapped = map_donkey_config(given)
    rows = [(f"{section}.{key} = {hex(value) if key == 'address' else repr(value)}",
             mapped.why[f"{section}.{key}"])
            for section, table in mapped.changes.items() for key, value in table.items()]
    width = max(len(setting) for setting, _ in rows)
    for setting, why in rows:
        print(f"{setting:<{width}}  # {why}")
    for note in mapped.notes:
        print(f"note: {note}")
    if skipped:
        print(f"not read (not plain values; never run): {', '.join(skipped)}")
    if args.dry_run:
        print("dry run: nothing written")
        return
    update_config_file(args.out, mapped.changes)  # checked: nothing is written if invalid
    print(f"wrote {args.out}; check the pulses on the stand with `car calibrate steering "
          "--actuator pca9685` before driving")
