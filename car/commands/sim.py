"""`car sim`: the embedded simulator's tracks, expert recordings, track views, and the
closed-loop eval (on the embedded simulator or a donkey simulator). `car sim serve` is
``car.commands.sim_serve``'s; cli.py adds it to these subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
from tqdm import tqdm

from car.commands import CtrlC, add_config_options, bounded, config_from_args, sim_eval
from car.commands.sim_eval import add_pace_option, add_track_option
from car.errors import CarError, TrackError
from car.loop import MAX_RATE_HZ
from car.sim.expert import DartNoise
from car.sim.pace import make_expert
from car.sim.record import SIM_FIELDS, record_expert
from car.sim.tracks import builtin_names, load_track_for
from car.sim.vehicle import VehicleParams
from car.sim.view import draw_view
from car.sim.world import Simulator, variation_for_lap
from car.tub.reader import Tub
from car.tub.writer import TubWriter
from car.world import SimStatus


def register(commands: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Adds `car sim` and its actions; returns its subparsers (cli.py adds `serve`)."""
    parser = commands.add_parser("sim", help="the embedded simulator: tracks, recordings, views")
    sub = parser.add_subparsers(dest="sim_command", metavar="ACTION", required=True)

    tracks = sub.add_parser("tracks", help="list the built-in tracks")
    tracks.add_argument("--json", action="store_true", help="print JSON")
    tracks.add_argument("--track", nargs="+", metavar="T",
                        help="also show these tracks (random:SEED or .json files)")
    add_config_options(tracks)
    tracks.set_defaults(handler=tracks_command)

    record = sub.add_parser("record", help="record the expert driver into a tub")
    add_track_option(record)
    record.add_argument("--laps", type=bounded(int, 1, 1000), default=3,
                        help="laps to drive, 1 to 1000 (default 3)")
    record.add_argument("--out", required=True, metavar="DIR",
                        help="tub folder (created, or appended to as a new session)")
    record.add_argument("--noise", type=bounded(float, 0.0, 1.0),
                        help="DART steering noise std, 0 to 1 (default: sim.expert_noise)")
    record.add_argument("--seed", type=bounded(int, 0, 2**63 - 1), default=0,
                        help="seed for noise and randomisation (default 0)")
    record.add_argument("--randomize", action="store_true",
                        help="domain randomisation every lap: a new look (floor, lines, light, "
                             "camera mount, noise) and new physics (grip, motor, steering "
                             "trim, latency)")
    add_pace_option(record)
    record.add_argument("--hz", type=bounded(float, 5.0, MAX_RATE_HZ),
                        help=f"records per simulated second, 5 to {MAX_RATE_HZ:g} (default: "
                             "drive.rate_hz)")
    add_config_options(record)
    record.set_defaults(handler=record_command)

    sim_eval.register(sub)

    view = sub.add_parser("view", help="draw a track's map beside camera frames as a PNG")
    add_track_option(view)
    view.add_argument("--out", required=True, help="PNG to write")
    view.add_argument("--frames", type=bounded(int, 1, 32), default=8,
                      help="camera frames to show, 1 to 32 (default 8)")
    view.add_argument("--seed", type=bounded(int, 0, 2**63 - 1), default=0,
                    help="simulator seed: the randomised look and the start (default 0)")
    view.add_argument("--randomize", action="store_true", help="show a randomised look")
    add_config_options(view)
    view.set_defaults(handler=view_command)
    return sub


def tracks_command(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    params = VehicleParams.from_config(config.sim)
    rows = []
    for name in [*builtin_names(), *(args.track or [])]:
        try:
            t = load_track_for(name, config)
        except TrackError as exc:  # e.g. a car configured to turn wider than the track
            print(f"car: warning: {exc}", file=sys.stderr)
            continue
        cruise = make_expert(t, params, config, "cruise").planned_lap_s()
        race = make_expert(t, params, config, "race").planned_lap_s()
        rows.append({"name": name, "length_m": round(t.length_m, 2), "width_m": t.width_m,
                     "min_radius_m": round(t.min_radius_m, 2), "cruise_lap_s": round(cruise, 2),
                     "race_lap_s": round(race, 2), "description": t.description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'NAME':<13}{'LENGTH':>8}{'WIDTH':>7}{'MIN R':>7}{'CRUISE':>8}{'RACE':>7}  DESCRIPTION")
    for r in rows:
        print(f"{r['name']:<13}{r['length_m']:>7.1f}m{r['width_m']:>6.2f}m"
              f"{r['min_radius_m']:>6.2f}m{r['cruise_lap_s']:>7.2f}s{r['race_lap_s']:>6.2f}s  "
              f"{r['description']}")
    print(f"\nCRUISE and RACE: the planned lap of the expert at each pace (--pace), for this car "
          f"({config.sim.model}, mu {config.sim.mu:g}).\nAlso: random:SEED for a procedural "
          "track, or a path to a track .json file (docs/simulator.md); --track shows them here.")


def record_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    track = load_track_for(args.track, config)
    hz = args.hz or config.drive.rate_hz
    if hz < 5.0:
        raise CarError(f"drive.rate_hz = {hz:g}: the expert needs at least 5 Hz to drive; "
                       "pass --hz")
    noise_sigma = config.sim.expert_noise if args.noise is None else args.noise
    sim = Simulator(track, config.sim, width=config.camera.width, height=config.camera.height,
                    seed=args.seed, randomize=args.randomize)
    cruise = args.pace == "cruise"
    sim.reset(0.0, config.sim.expert_line_m if cruise else 0.0)
    expert = make_expert(track, sim.params, config, args.pace)
    noise = DartNoise(noise_sigma, sim.streams["noise"])
    rec = config.record
    settings = {"track": track.name, "track_spec": args.track, "seed": args.seed,
                "noise": noise_sigma, "randomize": args.randomize, "hz": hz, "laps": args.laps,
                "line_m": config.sim.expert_line_m if cruise else "racing line",
                "pace": args.pace, "model": config.sim.model, "mu": config.sim.mu}
    if args.randomize:  # the physics of each lap, drawn from the seed
        settings["physics"] = [variation_for_lap(args.seed, k).to_json()
                               for k in range(args.laps)]
    _check_existing_frames(Path(args.out), sim.size)
    print(f"recording {args.laps} lap(s) of {track.name} ({track.length_m:.1f} m) at {hz:g} Hz "
          f"into {args.out} ({args.pace} pace, planned lap {expert.planned_lap_s():.2f} s, "
          f"noise {noise_sigma:g}, seed {args.seed}"
          f"{', randomized' if args.randomize else ''})", file=sys.stderr)
    writer = TubWriter(Path(args.out), [k for k, _ in SIM_FIELDS], [t for _, t in SIM_FIELDS],
                       {"source": "car sim record"}, queue_size=rec.queue_size,
                       jpeg_quality=rec.jpeg_quality,
                       checkpoint_interval_s=rec.checkpoint_interval_s,
                       max_len=rec.catalog_max_len, drop_when_full=False,
                       session_info={"sim": settings})
    bar = tqdm(total=args.laps, unit="lap", bar_format="{l_bar}{bar}| {n:.2f}/{total} laps "
               "[{elapsed}<{remaining}{postfix}]", file=sys.stderr, disable=None)

    def on_step(status: SimStatus) -> None:
        done = min(float(args.laps), sim.progress.distance_m / track.length_m)
        if done > bar.n:
            bar.update(done - bar.n)
        bar.set_postfix_str(f"off-track {status.off_track_events}", refresh=False)

    with CtrlC() as ctrl_c:  # Ctrl-C stops at a record boundary; the writer then flushes
        try:
            summary = record_expert(sim, expert, noise, writer, laps=args.laps,
                                    period_s=1.0 / hz, on_step=on_step,
                                    should_stop=lambda: ctrl_c.pressed)
        finally:
            bar.close()
            stats = writer.close()  # flushes every queued record, also on an error
    times = ", ".join(f"{t:.1f} s" for t in summary.lap_times_s)
    print(f"{stats.summary()} to {writer.path}: {summary.laps} lap(s)"
          f"{f' ({times})' if times else ''}, {summary.off_track_events} off-track event(s), "
          f"{summary.resets} reset(s), {summary.sim_time_s:.1f} s simulated")
    if summary.interrupted:
        print(f"car: interrupted; the {summary.records} records so far are kept in a valid tub",
              file=sys.stderr)
        return 130
    return 0


def _check_existing_frames(out: Path, size: tuple[int, int]) -> None:
    """Appending to a tub is a new session; its frames must match the ones already there."""
    if not (out / "manifest.json").exists():
        return
    tub = Tub(out)
    first = next(tub.records(), None)
    if first is None or "cam/image_array" not in tub.inputs:
        return
    height, width = tub.load_image(first, "cam/image_array").shape[:2]
    if (width, height) != size:
        raise CarError(f"{out} holds {width}x{height} frames; this recording would add "
                       f"{size[0]}x{size[1]} ones; record into another --out")


def view_command(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise CarError(f"{out}: --out must name a .png file")
    track = load_track_for(args.track, config)
    sim = Simulator(track, config.sim, width=config.camera.width, height=config.camera.height,
                    seed=args.seed, randomize=args.randomize)
    image = draw_view(sim, args.frames)
    if not cv2.imwrite(str(out), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise CarError(f"{out}: could not write the image (does the folder exist?)")
    print(f"wrote {out} ({image.shape[1]}x{image.shape[0]}): {track.name}, "
          f"{track.length_m:.1f} m, {args.frames} camera frame(s)")
