"""`car tub export` and `car tub import`: tubs to and from other dataset formats (LeRobot v3
for now). The library code is in car/tub/lerobot_*.py, imported when a command runs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tqdm import tqdm

from car.commands import bounded
from car.tub.paths import expand_paths

FORMATS = ["lerobot"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``export`` and ``import`` to the `car tub` actions ``sub``."""
    export = sub.add_parser("export", help="write tubs as a dataset of another format "
                                           "(LeRobot v3)")
    export.add_argument("paths", nargs="+", metavar="TUB",
                        help="tub folders or globs; each session of each tub is one episode")
    export.add_argument("--format", required=True, choices=FORMATS,
                        help="the dataset format: lerobot (LeRobot v3.0: parquet and H.264 "
                             "video)")
    export.add_argument("--out", required=True, metavar="DIR",
                        help="the dataset folder to create (new or empty)")
    export.add_argument("--steering-key", default="user/angle",
                        help="the record field that is action[0] (default user/angle)")
    export.add_argument("--throttle-key", default="user/throttle",
                        help="the record field that is action[1] (default user/throttle)")
    export.add_argument("--state-keys", metavar="KEY,KEY",
                        help="record fields for observation.state, comma-separated; '' for "
                             "none (default: every numeric field all records have, the action "
                             "and pilot/* aside)")
    export.add_argument("--fps", type=bounded(int, 1, 240),
                        help="frames per second of the dataset, 1 to 240 (default: the "
                             "capture rate from the capture timestamps, rounded)")
    export.add_argument("--task", default="drive",
                        help="the task text every frame carries (default 'drive')")
    export.set_defaults(handler=export_command)

    imp = sub.add_parser("import", help="read a dataset of another format (LeRobot v3) into "
                                        "a new tub")
    imp.add_argument("path", metavar="DIR", help="the dataset folder (with meta/info.json)")
    imp.add_argument("--format", required=True, choices=FORMATS,
                     help="the dataset format: lerobot (LeRobot v3.x with a 2-float action "
                          "and a camera video)")
    imp.add_argument("--out", required=True, metavar="TUB",
                     help="the tub folder to create (new or empty); one session per episode")
    imp.add_argument("--camera", metavar="KEY",
                     help="the video feature to take the frames from, when the dataset has "
                          "several (e.g. observation.images.front)")
    imp.add_argument("--jpeg-quality", type=bounded(int, 1, 100), default=90,
                     help="JPEG quality of the tub's images, 1 to 100 (default 90)")
    imp.set_defaults(handler=import_command)


def _progress(desc: str, unit: str) -> Any:
    return lambda items: tqdm(items, desc=desc, unit=unit, leave=False, disable=None,
                              file=sys.stderr)


def export_command(args: argparse.Namespace) -> None:
    from car.tub.lerobot_export import export_lerobot

    state = None
    if args.state_keys is not None:
        state = [k.strip() for k in args.state_keys.split(",") if k.strip()]
    done = export_lerobot(expand_paths(args.paths), args.out, steering_key=args.steering_key,
                          throttle_key=args.throttle_key, state_keys=state, fps=args.fps,
                          task=args.task, progress=_progress("export", "frame"))
    state_text = ", ".join(done.state_names) or "none"
    print(f"wrote {done.out}: LeRobot v3.0, {done.frames} frames in {done.episodes} "
          f"episode(s) at {done.fps} fps ({done.fps_source}), video {done.size[0]}x"
          f"{done.size[1]} H.264; action = [{args.steering_key}, {args.throttle_key}], "
          f"observation.state = [{state_text}]")


def import_command(args: argparse.Namespace) -> None:
    from car.tub.lerobot_import import import_lerobot

    done = import_lerobot(args.path, args.out, camera=args.camera,
                          jpeg_quality=args.jpeg_quality,
                          progress=_progress("import", "episode"))
    state = f"; observation.state as {', '.join(done.state_fields)}" if done.state_fields else ""
    print(f"wrote {done.out}: {done.frames} records in {done.episodes} session(s) from "
          f"{done.camera} at {done.fps:g} fps; action as user/angle, user/throttle{state}")
