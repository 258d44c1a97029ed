"""`car sim dagger`: DAgger rounds on the embedded simulator (docs/dagger.md). Collection and
the table are ``car.sim.dagger``'s; training is ``training.train``'s, imported when it runs
(the car's install has no torch)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from car import model_db
from car.commands import CtrlC, add_config_options, bounded, config_from_args
from car.commands.sim_eval import add_pace_option, lap_bar
from car.commands.train import training_module
from car.config import Config
from car.errors import CarError
from car.loop import MAX_RATE_HZ
from car.sim.dagger import (
    DAGGER_FIELDS,
    BetaSchedule,
    CollectSummary,
    RoundRow,
    TrackScore,
    best_round,
    collect,
    default_eval_tracks,
    format_table,
    keep_best,
    session_seed,
    write_json,
)
from car.sim.eval import EvalResult, evaluate, expert_pilot
from car.sim.link import SimLink
from car.sim.pace import make_expert, pace_config
from car.sim.track import Track
from car.sim.tracks import TRACK_HELP, load_track_for
from car.sim.world import Simulator
from car.tub.writer import TubWriter
from deploy.engine import Engine
from deploy.manifest import Manifest, ManifestError, load_manifest


def register(sub: argparse._SubParsersAction) -> None:
    """Adds `dagger` to `car sim`'s subcommands."""
    p = sub.add_parser("dagger", help="DAgger: drive a model, label its states with the "
                       "expert, retrain on everything, and score each round on held-out tracks")
    p.add_argument("--model", required=True, metavar="DIR",
                   help="a `car train` output folder (pilot.pt, pilot.onnx, pilot.json)")
    p.add_argument("--track", nargs="+", required=True, metavar="T",
                   help=f"tracks to collect on: {TRACK_HELP}")
    p.add_argument("--rounds", type=bounded(int, 1, 100), required=True,
                   help="DAgger rounds after the baseline, 1 to 100")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="a new folder: data/ (the tub), round_N/, best/, dagger.json")
    add_pace_option(p)
    p.add_argument("--laps", type=bounded(int, 1, 1000), default=2,
                   help="laps per track and round to collect (default 2)")
    p.add_argument("--beta0", type=bounded(float, 0.0, 1.0), default=0.5,
                   help="round 1's chance that a tick runs the expert (default 0.5)")
    p.add_argument("--decay", type=bounded(float, 0.0, 1.0), default=0.5,
                   help="β is multiplied by this each round (default 0.5)")
    p.add_argument("--epochs", type=bounded(int, 1, 10_000), default=5,
                   help="training epochs per round, from the last round's weights (default 5)")
    p.add_argument("--lr", type=bounded(float, 1e-7, 10.0),
                   help="peak learning rate per round (default: car train's, 2e-3)")
    p.add_argument("--eval-track", nargs="+", metavar="T",
                   help="held-out tracks to score each round on (default: two of random:101, "
                        "random:102, ... that are not in --track)")
    p.add_argument("--eval-laps", type=bounded(int, 1, 1000), default=2,
                   help="laps per eval track (default 2)")
    p.add_argument("--hz", type=bounded(float, 5.0, MAX_RATE_HZ),
                   help=f"loop rate, 5 to {MAX_RATE_HZ:g} Hz (default: drive.rate_hz)")
    p.add_argument("--latency-ms", type=bounded(float, 0.0, 1000.0), metavar="MS",
                   help="charge this fixed model latency when collecting and scoring, instead "
                        "of the measured one (for repeatable runs)")
    p.add_argument("--seed", type=bounded(int, 0, 2**31 - 1), default=0,
                   help="seed of the sessions, the β draws, the evals and the trainings")
    p.add_argument("--randomize", action="store_true",
                   help="a new look and new physics every lap, collecting and scoring")
    p.add_argument("--provider", help="ONNX Runtime provider: tensorrt, cuda or cpu")
    p.add_argument("--json", action="store_true", help="print dagger.json instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_options(p)
    p.set_defaults(handler=dagger_command)


@dataclass
class Plan:
    """Everything a run needs, checked before anything is driven or written."""

    args: argparse.Namespace
    config: Config  # at the run's pace
    hz: float
    start: Path  # the starting model's folder
    manifest: Manifest
    tracks: list[tuple[str, Track]]
    eval_tracks: list[tuple[str, Track]]
    out: Path
    tubs: list[Path]  # the starting model's training tubs that still exist, then out/data
    missing: list[str]
    schedule: BetaSchedule
    latency_s: float | None
    experts: dict[str, EvalResult] = field(default_factory=dict)  # per eval track, once

    @property
    def data(self) -> Path:
        return self.out / "data"


def dagger_command(args: argparse.Namespace) -> int:
    plan = _plan(args)
    _open(plan, plan.start).close()  # the model loads, and takes the camera's frames
    module = training_module()  # before any driving: a car without torch cannot retrain
    progress = not (args.quiet or args.json)
    if plan.missing:
        print(f"car: warning: {len(plan.missing)} of the model's training tubs are gone "
              f"({', '.join(plan.missing)}); training on the rest and {plan.data}",
              file=sys.stderr)
    plan.out.mkdir(parents=True, exist_ok=True)
    rows: list[RoundRow] = []
    with CtrlC() as ctrl_c:
        stop = lambda: ctrl_c.pressed  # noqa: E731 - read at every tick
        try:
            _run_rounds(plan, module, rows, stop, progress)
        finally:
            if rows:  # every finished round is kept, whatever stopped the run
                _save(plan, rows, ctrl_c.pressed)
    report = _report(plan, rows, ctrl_c.pressed)
    if args.json:
        print(json.dumps(report))
    else:
        best = report["best_round"]
        print(format_table(rows, best))
        if best is not None:
            print(f"best: round {best} ({rows[best].autonomy_pct:.2f}% autonomy), copied to "
                  f"{plan.out / 'best'}; every row in {plan.out / 'dagger.json'}")
    if ctrl_c.pressed:
        print(f"car: interrupted; the {len(rows)} round(s) scored are kept in {plan.out}",
              file=sys.stderr)
        return 130
    return 0


def _run_rounds(plan: Plan, module: ModuleType, rows: list[RoundRow],
                stop: Callable[[], bool], progress: bool) -> None:
    """Round 0 scores the starting model; each round then collects with the last model,
    retrains from its weights on all the data, and scores the new model. ``rows`` gets
    each scored round; ``stop()`` ends the run at the next boundary."""
    args = plan.args
    model = plan.start
    row = RoundRow(0, str(model), valid_loss=_valid_loss(plan.manifest))
    for i in range(args.rounds + 1):
        if i > 0:
            beta = plan.schedule.beta(i)
            summaries = _collect_round(plan, model, i, beta, stop, progress)
            if stop():
                return
            if progress:
                print(f"round {i}: training {plan.manifest.model_type} from {model} on "
                      f"{len(plan.tubs)} tub(s), {args.epochs} epoch(s)", file=sys.stderr)
            result = _retrain(module, plan, model / "pilot.pt", plan.out / f"round_{i}",
                              progress)
            model = plan.out / f"round_{i}"
            row = RoundRow(i, str(model), beta, sum(s.records for s in summaries),
                           sum(s.interventions for s in summaries),
                           result.metrics.get("valid_loss"))
        scored = None if stop() else _score(plan, row, model, stop, progress)
        if scored is None:
            return
        rows.append(scored)
        _save(plan, rows, False)


def _plan(args: argparse.Namespace) -> Plan:
    config = pace_config(config_from_args(args), args.pace)
    start = Path(args.model)
    manifest = _start_manifest(start)
    hz = args.hz or config.drive.rate_hz
    if hz < 5.0:
        raise CarError(f"drive.rate_hz = {hz:g}: the expert needs at least 5 Hz to drive; "
                       "pass --hz")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CarError(f"--out {out} already exists and is not an empty folder; give a new "
                       "folder for this run")
    tracks = [(spec, load_track_for(spec, config)) for spec in args.track]
    eval_specs = args.eval_track or default_eval_tracks(args.track)
    shared = sorted(set(eval_specs) & set(args.track))
    if shared:
        print(f"car: warning: {', '.join(shared)} is also a collection track: its scores are "
              "not held out", file=sys.stderr)
    eval_tracks = [(spec, load_track_for(spec, config)) for spec in eval_specs]
    tubs, missing = [], []
    for tub in manifest.training.get("tubs", []):
        (tubs if (Path(tub) / "manifest.json").is_file() else missing).append(tub)
    return Plan(args, config, hz, start, manifest, tracks, eval_tracks, out,
                [Path(t) for t in tubs] + [out / "data"], missing,
                BetaSchedule(args.beta0, args.decay),
                None if args.latency_ms is None else args.latency_ms / 1000.0)


def _start_manifest(start: Path) -> Manifest:
    if not start.is_dir():
        raise CarError(f"--model {start}: give the folder `car train --out` wrote (with "
                       "pilot.pt, pilot.onnx and pilot.json), not a file")
    if not (start / "pilot.pt").is_file():
        raise CarError(f"--model {start} holds no pilot.pt: DAgger retrains from that "
                       "checkpoint; give a folder written by `car train`")
    if not (start / "pilot.onnx").is_file():
        raise CarError(f"--model {start} holds no pilot.onnx to drive with; run `car export "
                       f"{start / 'pilot.pt'}`")
    try:
        return load_manifest(start / "pilot.onnx")
    except ManifestError as exc:
        raise CarError(str(exc)) from None


def _valid_loss(manifest: Manifest) -> float | None:
    value = manifest.training.get("validation", {}).get("valid_loss")
    return float(value) if isinstance(value, (int, float)) else None


def _open(plan: Plan, model: Path) -> Engine:
    from car.pilot import open_pilot

    cam = plan.config.camera
    return open_pilot(model / "pilot.onnx", plan.args.provider, frame_size=(cam.width, cam.height))


def _collect_round(plan: Plan, model: Path, round_i: int, beta: float,
                   stop: Callable[[], bool], progress: bool) -> list[CollectSummary]:
    """One session per collection track into out/data, driven by the β mixture."""
    args, config = plan.args, plan.config
    rec = config.record
    summaries = []
    engine = _open(plan, model)
    try:
        for k, (spec, track) in enumerate(plan.tracks):
            seed = session_seed(args.seed, round_i, k)
            sim = Simulator(track, config.sim, width=config.camera.width,
                            height=config.camera.height, seed=seed, randomize=args.randomize)
            sim.reset(0.0, config.sim.expert_line_m if args.pace == "cruise" else 0.0)
            expert = make_expert(track, sim.params, config, args.pace)
            info = {"round": round_i, "beta": beta, "track": track.name, "track_spec": spec,
                    "pace": args.pace, "seed": seed, "laps": args.laps, "hz": plan.hz,
                    "randomize": args.randomize, "model": str(model.resolve()),
                    "latency": plan.latency_s if plan.latency_s is not None else "measured"}
            writer = TubWriter(plan.data, [k for k, _ in DAGGER_FIELDS],
                               [t for _, t in DAGGER_FIELDS], {"source": "car sim dagger"},
                               queue_size=rec.queue_size, jpeg_quality=rec.jpeg_quality,
                               checkpoint_interval_s=rec.checkpoint_interval_s,
                               max_len=rec.catalog_max_len, drop_when_full=False,
                               session_info={"dagger": info})
            bar, on_step = lap_bar(f"round {round_i} (β {beta:.3f}) on {track.name}",
                                    args.laps, progress)
            try:
                summary = collect(sim, expert, engine, writer, config=config, round_i=round_i,
                                  beta=beta, laps=args.laps, period_s=1.0 / plan.hz,
                                  rng=np.random.default_rng(seed), latency_s=plan.latency_s,
                                  should_stop=stop, on_step=on_step)
            finally:
                bar.close()
                writer.close()  # flushes every queued record, also on an error
            summaries.append(summary)
            if summary.stop_reason != "laps done":
                print(f"round {round_i} on {track.name}: {summary.stop_reason} after "
                           f"{summary.laps} lap(s), {summary.records} records", file=sys.stderr)
            if summary.stop_reason == "interrupted":
                break
    finally:
        engine.close()
    return summaries


def _retrain(module: ModuleType, plan: Plan, init: Path, out: Path, progress: bool) -> Any:
    """The starting model's type, sequence length, crop and augmentations, from ``init``'s
    weights, on every tub; fastai's output goes to stderr (stdout is the table's)."""
    training = plan.manifest.training
    cfg = module.TrainConfig(
        tubs=plan.tubs, model_type=plan.manifest.model_type, out=out, epochs=plan.args.epochs,
        batch_size=int(training.get("batch_size", 32)), lr=plan.args.lr,
        seq_len=int(training["sequence_length"]) if training.get("sequence_length") else None,
        burn_in=training.get("burn_in"),
        augmentations=tuple(training.get("augmentations", ())), seed=plan.args.seed,
        crop_top=plan.manifest.preprocess.crop_top, init_from=init,
        progress=progress and sys.stderr.isatty())  # fastai's bars need a terminal
    with contextlib.redirect_stdout(sys.stderr):
        result = module.train(cfg)
    try:
        model_db.record_training(plan.config.paths.models_dir, out / "pilot.onnx",
                                 plan.manifest.model_type, result.manifest.training,
                                 result.duration_s)
    except OSError as exc:
        print(f"car: warning: {out} was not added to the models database: {exc}",
              file=sys.stderr)
    return result


def _score(plan: Plan, row: RoundRow, model: Path, stop: Callable[[], bool],
           progress: bool) -> RoundRow | None:
    """``row`` with its scores on every eval track (the expert's run once per track), or
    None if interrupted."""
    engine = _open(plan, model)
    try:
        for spec, track in plan.eval_tracks:
            if spec not in plan.experts:
                reference = _evaluate(plan, track, None, f"expert on {track.name}", stop,
                                      progress)
                if reference is None:
                    return None
                plan.experts[spec] = reference
            result = _evaluate(plan, track, engine, f"round {row.round} on {track.name}", stop,
                               progress)
            if result is None:
                return None
            row.scores.append(TrackScore.of(result, plan.experts[spec]))
            _record_eval(plan, model, result, plan.experts[spec])
    finally:
        engine.close()
    return row


def _evaluate(plan: Plan, track: Track, engine: Engine | None, desc: str,
              stop: Callable[[], bool], progress: bool) -> EvalResult | None:
    """One closed-loop eval (the expert when ``engine`` is None); None if interrupted."""
    args = plan.args
    world = SimLink.on_track(track, plan.config, 1.0 / plan.hz, lockstep=True, seed=args.seed,
                             randomize=args.randomize, latency_s=plan.latency_s, pace=args.pace)
    pilot = expert_pilot(world, plan.config) if engine is None else engine
    bar, on_tick = lap_bar(desc, args.eval_laps, progress)
    try:
        result = evaluate(world, pilot, plan.config, laps=args.eval_laps, rate_hz=plan.hz,
                          should_stop=stop, on_tick=on_tick)
    finally:
        bar.close()
        world.close()
    return None if stop() or result.stop_reason == "interrupted" else result


def _record_eval(plan: Plan, model: Path, result: EvalResult, expert: EvalResult) -> None:
    """Each score goes into the models database, as `car sim eval --vs-expert` adds it."""
    out = result.to_json()
    ratio = TrackScore.of(result, expert).lap_ratio
    out["lap_time_vs_expert_pct"] = None if ratio is None else round(100 * (ratio - 1), 2)
    try:
        model_db.record_eval(plan.config.paths.models_dir, model / "pilot.onnx", out)
    except OSError as exc:
        print(f"car: warning: the score was not added to the models database: {exc}",
              file=sys.stderr)


def _save(plan: Plan, rows: list[RoundRow], interrupted: bool) -> None:
    """best/ and dagger.json for the rounds so far."""
    keep_best(rows, plan.out / "best")
    write_json(plan.out / "dagger.json", _report(plan, rows, interrupted))


def _report(plan: Plan, rows: list[RoundRow], interrupted: bool) -> dict[str, Any]:
    args = plan.args
    return {
        "model": str(plan.start.resolve()), "out": str(plan.out.resolve()),
        "model_type": plan.manifest.model_type, "pace": args.pace,
        "tracks": [spec for spec, _ in plan.tracks],
        "eval_tracks": [spec for spec, _ in plan.eval_tracks],
        "rounds": args.rounds, "rounds_done": max(0, len(rows) - 1), "beta0": args.beta0,
        "decay": args.decay, "laps": args.laps, "eval_laps": args.eval_laps, "hz": plan.hz,
        "epochs": args.epochs, "seed": args.seed, "randomize": args.randomize,
        "latency": "measured" if plan.latency_s is None else f"fixed {args.latency_ms:g} ms",
        "tubs": [str(t) for t in plan.tubs], "missing_tubs": plan.missing,
        "expert": [{"track": e.track, "autonomy_pct": round(e.autonomy_pct, 3),
                    "lap_times_s": [round(t, 3) for t in e.lap_times_s]}
                   for e in plan.experts.values()],
        "rows": [r.to_json() for r in rows],
        "best_round": best_round(rows).round if rows else None,
        "best": str(plan.out / "best") if rows else None, "interrupted": interrupted,
    }
