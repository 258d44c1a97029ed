"""`car tub clean TUB`: a page to review a tub and delete or restore ranges (donkeycar's
`donkey tubclean`), served until Ctrl-C."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from car.commands import CtrlC, add_config_options, bounded, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``clean`` action to the `car tub` subparsers."""
    clean = sub.add_parser(
        "clean", help="a web page to review a tub's frames and delete or restore ranges",
        description="Serve a page (phone or laptop) showing the tub's frames and a timeline "
                    "of its steering and throttle; select ranges to soft-delete or restore "
                    "them, with undo. The edits are `car tub delete`/`restore`'s: the tub "
                    "stays donkeycar's. Ctrl-C stops.")
    clean.add_argument("path", metavar="TUB", help="the tub folder")
    clean.add_argument("--model", metavar="PILOT.onnx",
                       help="also show this pilot's steering and throttle on the timeline "
                            "(an ONNX model with its .json manifest beside it; run over the "
                            "tub once at start, as `car tub plot` does)")
    clean.add_argument("--port", type=bounded(int, 0, 65535),
                       help="TCP port of the page (default: web.port of car.toml, 8887; "
                            "0 picks a free one)")
    clean.add_argument("--host",
                       help="address to listen on (default: web.host of car.toml, 0.0.0.0 "
                            "for every network; 127.0.0.1 for this computer only)")
    clean.add_argument("--steering-key", default="user/angle",
                       help="the record field holding the steering (default user/angle)")
    clean.add_argument("--throttle-key", default="user/throttle",
                       help="the record field holding the throttle (default user/throttle)")
    add_config_options(clean)
    clean.set_defaults(handler=clean_command)


def clean_command(args: argparse.Namespace) -> None:
    from car.tubclean import CleanServer, CleanSession
    from car.tubclean.predictions import pilot_series

    config = config_from_args(args)
    web = config.web
    if args.port is not None:
        web = dataclasses.replace(web, port=args.port)
    if args.host is not None:
        web = dataclasses.replace(web, host=args.host)
    session = CleanSession(args.path, (args.steering_key, args.throttle_key))
    pilot = None
    if args.model:
        print(f"running {Path(args.model).name} over {len(session.indexes)} records ...",
              flush=True)
        pilot = pilot_series(args.model, session, config.drive)
    server = CleanServer(session, web, pilot)
    url = server.start()
    try:
        print(f"cleaning {session.path}: {len(session.indexes)} records, "
              f"{len(session.deleted)} deleted", flush=True)
        print(f"open {url}", flush=True)
        print("Ctrl-C stops (every edit is already saved in the tub)", flush=True)
        with CtrlC() as ctrl_c:
            while not ctrl_c.pressed:
                time.sleep(0.2)
    finally:
        server.close()
    edits = server.stats["edits"]
    print(f"stopped after {edits} edit(s); {session.live} live records, "
          f"{len(session.deleted)} deleted")
