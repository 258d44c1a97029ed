"""`car sim`: the embedded simulator's tracks, expert recordings, track views, and the
closed-loop eval (on the embedded simulator or a donkey simulator). `car sim serve` is
``car.commands.sim_serve``'s; cli.py adds it to these subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
from tqdm import tqdm

from car.commands import CtrlC, add_config_options, bounded, config_from_args
from car.errors import CarError, TrackError
from car.loop import MAX_RATE_HZ, MIN_RATE_HZ
from car.sim.expert import DartNoise, Expert
from car.sim.record import SIM_FIELDS, record_expert
from car.sim.tracks import DEFAULT_TRACK, TRACK_HELP, builtin_names, load_track_for
from car.sim.view import draw_view
from car.sim.world import Simulator
from car.tub.reader import Tub
from car.tub.writer import TubWriter
from car.world import SimStatus


def add_track_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--track", default=DEFAULT_TRACK, metavar="T",
                        help=f"{TRACK_HELP} (default: {DEFAULT_TRACK})")


def register(commands: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Adds `car sim` and its actions; returns its subparsers (cli.py adds `serve`)."""
    parser = commands.add_parser("sim", help="the embedded simulator: tracks, recordings, views")
    sub = parser.add_subparsers(dest="sim_command", metavar="ACTION", required=True)

    tracks = sub.add_parser("tracks", help="list the built-in tracks")
    tracks.add_argument("--json", action="store_true", help="print JSON")
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
                        help="domain randomisation: a new look (floor, lines, light, camera "
                             "mount, noise) every lap")
    record.add_argument("--hz", type=bounded(float, 5.0, MAX_RATE_HZ),
                        help=f"records per simulated second, 5 to {MAX_RATE_HZ:g} (default: "
                             "drive.rate_hz)")
    add_config_options(record)
    record.set_defaults(handler=record_command)

    ev = sub.add_parser("eval", help="closed-loop score: autonomy, lap times and |cte| of a "
                        "model (or the expert) driving a track")
    who = ev.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", metavar="PATH", help="pilot.onnx, .trt or .pt2 with its manifest")
    who.add_argument("--expert", action="store_true", help="score the expert, for reference")
    add_track_option(ev)
    ev.add_argument("--laps", type=bounded(int, 1, 1000), default=3,
                    help="laps to drive, 1 to 1000 (default 3)")
    ev.add_argument("--seed", type=bounded(int, 0, 2**63 - 1), default=0)
    ev.add_argument("--randomize", action="store_true", help="a new look every lap")
    ev.add_argument("--hz", type=bounded(float, MIN_RATE_HZ, MAX_RATE_HZ),
                    help=f"loop rate, {MIN_RATE_HZ:g} to {MAX_RATE_HZ:g} Hz (default: "
                         "drive.rate_hz)")
    ev.add_argument("--latency-ms", type=bounded(float, 0.0, 1000.0), metavar="MS",
                    help="charge this fixed pilot latency instead of the measured one (for "
                         "runs that must be repeatable)")
    ev.add_argument("--provider", help="ONNX Runtime provider: tensorrt, cuda or cpu")
    ev.add_argument("--vs-expert", action="store_true",
                    help="also drive the expert under the same settings and compare")
    ev.add_argument("--json", action="store_true", help="print exactly one JSON object")
    ev.add_argument("--plot", metavar="PNG", help="write the map with the driven path")

    ev.add_argument("--sim", metavar="donkey://HOST:PORT",
                    help="score on a donkey simulator (the Unity sim, or `car sim serve`) "
                         "instead of the embedded one, from its cte, hit and lap messages")
    ev.add_argument("--scene", help="with --sim: the scene to load (default: the simulator's "
                    "first)")
    ev.add_argument("--lockstep", action="store_true",
                    help="with --sim: ask the simulator to wait for each control (step_mode "
                         "synchronous; `car sim serve` does, Unity builds vary)")
    ev.add_argument("--max-cte", type=bounded(float, 0.01, 1000.0), default=8.0,
                    help="with --sim: |cte| above this is an intervention (default 8, as "
                         "gym-donkeycar; `car sim serve` also reports leaving the track as a "
                         "hit)")
    ev.add_argument("--lap-limit-s", type=bounded(float, 5.0, 3600.0), default=120.0,
                    help="with --sim: a lap not done in this much simulated time ends the run "
                         "unfinished (default 120)")
    add_config_options(ev)
    ev.set_defaults(handler=eval_command)

    view = sub.add_parser("view", help="draw a track's map beside camera frames as a PNG")
    add_track_option(view)
    view.add_argument("--out", required=True, help="PNG to write")
    view.add_argument("--frames", type=bounded(int, 1, 32), default=8,
                      help="camera frames to show, 1 to 32 (default 8)")
    view.add_argument("--seed", type=bounded(int, 0, 2**63 - 1), default=0)
    view.add_argument("--randomize", action="store_true", help="show a randomised look")
    add_config_options(view)
    view.set_defaults(handler=view_command)
    return sub


def tracks_command(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    rows = []
    for name in builtin_names():
        try:
            t = load_track_for(name, config)
        except TrackError as exc:  # e.g. a car configured to turn wider than the track
            print(f"car: warning: {exc}", file=sys.stderr)
            continue
        rows.append({"name": name, "length_m": round(t.length_m, 2), "width_m": t.width_m,
                     "min_radius_m": round(t.min_radius_m, 2), "description": t.description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'NAME':<13}{'LENGTH':>8}{'WIDTH':>7}{'MIN R':>7}  DESCRIPTION")
    for r in rows:
        print(f"{r['name']:<13}{r['length_m']:>7.1f}m{r['width_m']:>6.2f}m"
              f"{r['min_radius_m']:>6.2f}m  {r['description']}")
    print("\nAlso: random:SEED for a procedural track, or a path to a track .json file "
          "(docs/simulator.md).")


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
    sim.reset(0.0, config.sim.expert_line_m)
    expert = Expert(track, sim.params, config.sim.expert_speed_mps,
                    line_m=config.sim.expert_line_m)
    noise = DartNoise(noise_sigma, sim.streams["noise"])
    rec = config.record
    settings = {"track": track.name, "track_spec": args.track, "seed": args.seed,
                "noise": noise_sigma, "randomize": args.randomize, "hz": hz, "laps": args.laps,
                "line_m": config.sim.expert_line_m}
    _check_existing_frames(Path(args.out), sim.size)
    print(f"recording {args.laps} lap(s) of {track.name} ({track.length_m:.1f} m) at {hz:g} Hz "
          f"into {args.out} (noise {noise_sigma:g}, seed {args.seed}"
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


def eval_command(args: argparse.Namespace) -> int:
    from car.devices import open_world
    from car.pilot import open_pilot
    from car.sim.eval import EvalResult, evaluate, expert_pilot
    from car.sim.eval_plot import draw_eval_map
    from car.sim.link import SimLink

    config = config_from_args(args)
    hz = args.hz or config.drive.rate_hz
    _check_eval_flags(args)
    track = None if args.sim else load_track_for(args.track, config)
    engine = None
    if args.model:
        engine = open_pilot(args.model, args.provider,
                            frame_size=(config.camera.width, config.camera.height))
    latency_s = None if args.latency_ms is None else args.latency_ms / 1000.0

    def run(expert: bool) -> EvalResult:
        if track is not None:
            world = SimLink.on_track(track, config, 1.0 / hz, lockstep=True, seed=args.seed,
                                     randomize=args.randomize, latency_s=latency_s)
            pilot = expert_pilot(world, config) if expert else engine
        else:
            world = open_world(args.sim, args.scene, config, 1.0 / hz, lockstep=args.lockstep,
                               max_cte=args.max_cte)
            pilot = engine
        who = "expert" if expert else Path(args.model).name
        bar, on_tick = _lap_bar(f"{who} on {world.name}", args.laps)
        with CtrlC() as ctrl_c:
            try:
                result = evaluate(world, pilot, config, laps=args.laps, rate_hz=hz,
                                  lap_limit_s=args.lap_limit_s,
                                  should_stop=lambda: ctrl_c.pressed, on_tick=on_tick)
            finally:
                bar.close()
                world.close()
        health = world.health()
        if health is not None:
            print(health.line, file=sys.stderr)
        if ctrl_c.pressed:
            result.stop_reason = "interrupted"
        return result

    try:
        result = run(expert=args.expert)
        reference = None
        if args.vs_expert and not args.expert and result.stop_reason != "interrupted":
            reference = run(expert=True)
    finally:
        if engine is not None:
            engine.close()
    out = result.to_json()
    if reference is not None:
        out["expert"] = reference.to_json()
        out["lap_time_vs_expert_pct"] = _lap_ratio(result, reference)
    if args.model and result.stop_reason != "interrupted":
        _record_score(config.paths.models_dir, args.model, out)
    if args.plot and track is not None:
        image = draw_eval_map(track, result)
        if not cv2.imwrite(args.plot, image):
            raise CarError(f"{args.plot}: could not write the image (does the folder exist?)")
    if args.json:
        print(json.dumps(out))
    else:
        print(_eval_text(out))
        if args.plot:
            print(f"wrote {args.plot}")
    if result.stop_reason == "interrupted":
        return 130
    return 0 if result.finished else 1  # unfinished laps are a failed run


def _record_score(models_dir: str, model: str, out: dict) -> None:
    """The score goes into the models database, for `car models`; a failure only warns."""
    from car.model_db import database_path, record_eval

    try:
        record_eval(models_dir, model, out)
    except OSError as exc:
        print(f"car: warning: the score was not added to {database_path(models_dir)}: {exc}",
              file=sys.stderr)


def _check_eval_flags(args: argparse.Namespace) -> None:
    """Flags for the other kind of simulator are refused, in one line."""
    if args.sim is None:
        if args.plot and Path(args.plot).suffix.lower() != ".png":
            raise CarError(f"{args.plot}: --plot must name a .png file")
        for flag in ("scene", "lockstep"):
            if getattr(args, flag):
                raise CarError(f"--{flag} is for a donkey simulator: add --sim "
                               "donkey://HOST:PORT")
        return
    from car.sim.donkey.link import is_donkey_address

    if not is_donkey_address(args.sim):
        raise CarError(f"--sim {args.sim}: car sim eval takes donkey://HOST:PORT here; for the "
                       "embedded simulator use --track")
    for flag, why in (("expert", "the expert drives the embedded simulator only"),
                      ("vs_expert", "the expert drives the embedded simulator only"),
                      ("plot", "the map needs the embedded simulator's track"),
                      ("latency_ms", "the donkey simulator keeps its own time")):
        if getattr(args, flag):
            raise CarError(f"--{flag.replace('_', '-')} cannot be used with --sim: {why}")


def _lap_bar(desc: str, laps: int) -> tuple[tqdm, Callable[[float], None]]:
    """A progress bar in laps, and the ``on_tick`` that moves it."""
    bar = tqdm(total=laps, unit="lap", file=sys.stderr, disable=None, desc=desc,
               bar_format="{desc}: {bar}| {n:.2f}/{total} laps [{elapsed}]")

    def on_tick(done: float) -> None:
        if done > bar.n:
            bar.update(done - bar.n)

    return bar, on_tick


def _lap_ratio(result, reference) -> float | None:
    if not result.lap_times_s or not reference.lap_times_s:
        return None
    mine = sum(result.lap_times_s) / len(result.lap_times_s)
    theirs = sum(reference.lap_times_s) / len(reference.lap_times_s)
    return round(100.0 * (mine / theirs - 1.0), 2)


def _eval_text(out: dict) -> str:
    laps = ", ".join(f"{t:.2f} s" for t in out["lap_times_s"]) or "none"
    lat = out["loop"]["latency_ms"]
    lines = [f"{out['track']}: autonomy {out['autonomy_pct']:.2f}% ({out['interventions']} "
             f"intervention(s) in {out['elapsed_s']:.1f} s simulated); laps "
             f"{out['laps_completed']}/{out['laps']} ({laps}); |cte| mean "
             f"{out['mean_abs_cte_m']:.3f} m, max {out['max_abs_cte_m']:.3f} m",
             f"pilot: {out['pilot']}; latency {out['latency']}: frame to command p50 "
             f"{lat['p50']} ms, p99 {lat['p99']} ms; loop {out['loop']['overruns']} overrun(s)"]
    if out["stop_reason"] != "laps done":
        lines.append(f"DID NOT FINISH: {out['stop_reason']}")
    if "expert" in out:
        e = out["expert"]
        ratio = out["lap_time_vs_expert_pct"]
        mean = out["mean_lap_time_s"]
        lines.append(f"expert: autonomy {e['autonomy_pct']:.2f}%, mean lap "
                     f"{e['mean_lap_time_s']} s; model mean lap {mean} s"
                     f"{f' ({ratio:+.1f}% vs expert)' if ratio is not None else ''}")
    return "\n".join(lines)
