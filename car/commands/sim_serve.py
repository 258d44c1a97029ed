"""`car sim serve`: the embedded simulator behind the donkey simulator's TCP protocol, a light
stand-in for the Unity binary (docs/donkey-sim.md)."""

from __future__ import annotations

import argparse
import logging
import sys

from car.commands import CtrlC, add_config_options, bounded, config_from_args
from car.config import Config
from car.errors import CarError
from car.sim.donkey.messages import DEFAULT_PORT
from car.sim.track import Track
from car.sim.tracks import TRACK_HELP, builtin_names, load_track_for


def register(sub: argparse._SubParsersAction) -> None:
    """Adds `serve` to `car sim`'s subcommands."""
    serve = sub.add_parser("serve", help="serve the simulator over the donkey simulator's TCP "
                           "protocol (for gym-donkeycar, donkeycar or `car drive --sim "
                           "donkey://...`)")
    serve.add_argument("--port", type=bounded(int, 0, 65535), default=DEFAULT_PORT,
                       help=f"TCP port (default {DEFAULT_PORT}, the Unity simulator's; 0: any "
                            "free port, printed)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only; "
                            "0.0.0.0: every network)")
    serve.add_argument("--track", action="append", metavar="[NAME=]T",
                       help=f"a scene: {TRACK_HELP}; NAME= names the scene (for example "
                            "generated_track=diyrobocars, so gym-donkeycar's "
                            "donkey-generated-track-v0 finds it). Repeatable; default: every "
                            "built-in track")
    serve.add_argument("--lockstep", action="store_true",
                       help="the world waits for each control and then runs one time step "
                            "(clients can also ask with step_mode); default: real time")
    serve.add_argument("--hz", type=bounded(float, 1.0, 200.0), default=20.0,
                       help="telemetry per simulated second, and the lock-step time step's "
                            "inverse (default 20, as the Unity simulator)")
    serve.add_argument("--jpeg-quality", type=bounded(int, 10, 100), default=90,
                       help="quality of the camera frames (default 90)")
    serve.add_argument("--seed", type=bounded(int, 0, 2**63 - 1), default=0,
                    help="simulator seed: the randomised look and the start (default 0)")
    serve.add_argument("--randomize", action="store_true", help="a new look every lap")
    add_config_options(serve)
    serve.set_defaults(handler=serve_command)


def scenes_from(specs: list[str] | None, config: Config) -> dict[str, Track]:
    """``[NAME=]SPEC`` arguments → scene name → track, in order; names must differ."""
    scenes: dict[str, Track] = {}
    for arg in specs or builtin_names():
        name, sep, spec = arg.partition("=")
        if not sep:
            name, spec = "", arg
        elif not name or not spec:
            raise CarError(f"--track {arg}: write NAME=TRACK or TRACK, for example "
                           "generated_track=diyrobocars")
        track = load_track_for(spec, config)
        name = name or track.name
        if name in scenes:
            raise CarError(f"two scenes are called {name!r}: name one with NAME=TRACK")
        scenes[name] = track
    return scenes


def serve_command(args: argparse.Namespace) -> int:
    from car.sim.donkey.server import DonkeyServer
    from car.sim.donkey.session import ServeOptions

    config = config_from_args(args)
    scenes = scenes_from(args.track, config)
    options = ServeOptions(width=config.camera.width, height=config.camera.height, hz=args.hz,
                           lockstep=args.lockstep, jpeg_quality=args.jpeg_quality,
                           seed=args.seed, randomize=args.randomize)
    logging.getLogger("car.sim.donkey").setLevel(logging.INFO)

    def report(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    server = DonkeyServer(scenes, config.sim, options, host=args.host, port=args.port,
                          report=report)
    timing = "lock-step" if args.lockstep else "real time"
    print(f"serving {len(scenes)} scene(s) ({', '.join(scenes)}) at {server.address} in "
          f"{timing}: {args.hz:g} Hz telemetry, {options.width}x{options.height} frames; one "
          "client at a time; Ctrl-C stops", file=sys.stderr, flush=True)
    with CtrlC() as ctrl_c:
        reason = server.serve(should_stop=lambda: ctrl_c.pressed)
    print(f"stopped ({'Ctrl-C' if ctrl_c.pressed else reason}): served {server.served} "
          f"client(s), refused {server.refused}", file=sys.stderr)
    return 130 if ctrl_c.pressed else 0
