"""`car sim eval`: a model (or the expert) scored in closed loop on the embedded simulator or
a donkey simulator: autonomy, lap times, |cte|, and the map."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
from tqdm import tqdm

from car.commands import CtrlC, add_config_options, bounded, config_from_args
from car.errors import CarError
from car.loop import MAX_RATE_HZ, MIN_RATE_HZ
from car.sim.pace import DEFAULT_PACE, PACES, pace_config
from car.sim.tracks import DEFAULT_TRACK, TRACK_HELP, load_track_for


def add_track_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--track", default=DEFAULT_TRACK, metavar="T",
                        help=f"{TRACK_HELP} (default: {DEFAULT_TRACK})")


def add_pace_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pace", choices=PACES, default=DEFAULT_PACE,
                        help="cruise: the expert at sim.expert_speed_mps, throttle capped by "
                             "drive.max_throttle; race: the racing line at the grip limit, "
                             f"throttle uncapped (default {DEFAULT_PACE})")


def register(sub: argparse._SubParsersAction) -> None:
    """Adds `car sim eval` to `car sim`'s subcommands."""
    ev = sub.add_parser("eval", help="closed-loop score: autonomy, lap times and |cte| of a "
                        "model (or the expert) driving a track")
    who = ev.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", metavar="PATH", help="pilot.onnx, .trt or .pt2 with its manifest")
    who.add_argument("--expert", action="store_true", help="score the expert, for reference")
    add_track_option(ev)
    ev.add_argument("--laps", type=bounded(int, 1, 1000), default=3,
                    help="laps to drive, 1 to 1000 (default 3)")
    ev.add_argument("--seed", type=bounded(int, 0, 2**63 - 1), default=0,
                    help="simulator seed: the randomised look and the start (default 0)")
    ev.add_argument("--randomize", action="store_true",
                    help="a new look and new physics every lap")
    add_pace_option(ev)
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
    ev.add_argument("--plot", metavar="PNG", help="write the map with the driven path (and "
                    "the expert's, with --vs-expert)")

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


def eval_command(args: argparse.Namespace) -> int:
    from car.devices import open_world
    from car.pilot import open_pilot
    from car.sim.eval import EvalResult, evaluate, expert_pilot
    from car.sim.eval_plot import draw_eval_map
    from car.sim.link import SimLink

    config = pace_config(config_from_args(args), args.pace)
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
                                     randomize=args.randomize, latency_s=latency_s,
                                     pace=args.pace)
            pilot = expert_pilot(world, config) if expert else engine
            variations = world.sim.variations  # --randomize: each lap's physics
        else:
            variations = []
            world = open_world(args.sim, args.scene, config, 1.0 / hz, lockstep=args.lockstep,
                               max_cte=args.max_cte)
            pilot = engine
        who = "expert" if expert else Path(args.model).name
        bar, on_tick = lap_bar(f"{who} on {world.name}", args.laps)
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
        result.physics = [v.to_json() for v in variations]
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
        image = draw_eval_map(track, result, reference)
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
    if args.pace == "race":
        raise CarError("--pace race cannot be used with --sim: the racing expert drives the "
                       "embedded simulator only; lift the throttle cap with --set "
                       "drive.max_throttle=1")
    for flag, why in (("expert", "the expert drives the embedded simulator only"),
                      ("vs_expert", "the expert drives the embedded simulator only"),
                      ("plot", "the map needs the embedded simulator's track"),
                      ("latency_ms", "the donkey simulator keeps its own time")):
        if getattr(args, flag):
            raise CarError(f"--{flag.replace('_', '-')} cannot be used with --sim: {why}")


def lap_bar(desc: str, laps: int, show: bool = True) -> tuple[tqdm, Callable[[float], None]]:
    """A progress bar in laps (hidden unless ``show`` and a terminal), and the ``on_tick``
    that moves it."""
    bar = tqdm(total=laps, unit="lap", file=sys.stderr, disable=None if show else True,
               desc=desc, bar_format="{desc}: {bar}| {n:.2f}/{total} laps [{elapsed}]")

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
