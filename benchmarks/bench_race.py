"""Driving at race pace: every family trained by one recipe and scored on tracks it never saw,
against the racing expert; and what DAgger adds over plain cloning on the same data budget.

    python benchmarks/bench_race.py --out /tmp/race [--families linear,resnet18,3d,rnn]
                                    [--epochs 12] [--laps 2] [--dagger-rounds 2] [--cruise]

The recipe, all through the `car` CLI as a user runs it:
1. record the racing expert (``--pace race --randomize``, DART noise 0.15) for ``--laps``
   laps on each training track (oval, technical and four procedural tracks), one session
   each;
2. ``car train --type F --epochs E`` on that tub;
3. ``car sim eval --pace race --vs-expert --latency-ms L`` on ``diyrobocars`` and
   ``random:11``, 3 laps at 20 Hz, with each family's fixed latency (its preprocess +
   inference p50 on this CPU, from bench_infer.py) charged to the model and the expert alike.
The baseline of every row is the racing expert driving the same track in the same run.

DAgger (linear): ``car sim dagger`` from the cloned model, and, for the same data budget,
plain cloning retrained from scratch on the first recording plus as many more expert
records as DAgger collected. Linear is also scored on a floor at μ 0.5 (trained at 0.8,
±20 %). ``--cruise`` adds linear at cruise pace (the demo recipe).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAR = [str(Path(sys.executable).with_name("car"))]  # the venv's console script
TRAIN_TRACKS = ("oval", "technical", "random:1", "random:2", "random:3", "random:4")
EVAL_TRACKS = ("diyrobocars", "random:11")
LATENCY_MS = {"linear": 0.9, "categorical": 0.9, "resnet18": 9.6, "resnet34": 16.0, "3d": 4.8,
              "rnn": 1.0}  # ONNX Runtime CPU p50 (BENCHMARKS.md, Inference)
SEQ_FAMILIES = ("3d", "rnn")


def car(*argv: str) -> str:
    """Runs `car ARGV`; its stdout (a failure stops the benchmark with its stderr)."""
    done = subprocess.run([*CAR, *argv], cwd=ROOT, capture_output=True, text=True)
    if done.returncode not in (0, 1):  # eval exits 1 for an unfinished run: still a row
        sys.exit(f"car {' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def record(tub: Path, pace: str, tracks: tuple[str, ...], seed0: int, laps: int = 2) -> None:
    for k, track in enumerate(tracks):
        car("sim", "record", "--track", track, "--laps", str(laps), "--out", str(tub),
            "--pace", pace, "--randomize", "--seed", str(seed0 + k), "--noise", "0.15")


def train(tubs: list[Path], family: str, out: Path, epochs: int) -> float:
    start = time.monotonic()
    car("train", "--tub", *map(str, tubs), "--type", family, "--out", str(out), "--epochs",
        str(epochs), "--quiet", "--force")
    return time.monotonic() - start


def score(model: Path, family: str, track: str, pace: str, *extra: str) -> dict:
    out = car("sim", "eval", "--model", str(model / "pilot.onnx"), "--track", track,
              "--laps", "3", "--pace", pace, "--vs-expert", "--latency-ms",
              str(LATENCY_MS.get(family, 1.0)), "--json", *extra)
    return json.loads(out)


def row(label: str, track: str, r: dict) -> str:
    ratio = r.get("lap_time_vs_expert_pct")
    expert = r.get("expert", {})
    vs = f"{1 + ratio / 100:.3f}x" if ratio is not None else "n/a"
    return (f"| {label} | {track} | **{r['autonomy_pct']:.1f}%** | {r['interventions']} | "
            f"{r['mean_lap_time_s'] or float('nan'):.2f} | {expert.get('mean_lap_time_s')} | "
            f"{vs} | {r['mean_abs_cte_m']:.3f} / {r['max_abs_cte_m']:.3f} | "
            f"{r['top_speed_mps']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--families", default="linear,resnet18,3d,rnn")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--dagger-rounds", type=int, default=2)
    parser.add_argument("--cruise", action="store_true")
    parser.add_argument("--laps", type=int, default=2, help="recorded laps per training track")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = out / "race_data"
    if not (data / "manifest.json").exists():
        record(data, "race", TRAIN_TRACKS, seed0=10, laps=args.laps)
    rows = ["| family | track | autonomy | interventions | mean lap (s) | racing expert (s) | "
            "vs expert | mean / max \\|cte\\| (m) | top speed (m/s) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for family in args.families.split(","):
        model = out / family
        seconds = train([data], family, model, args.epochs)
        notes.append(f"{family}: trained in {seconds:.0f} s")
        for track in EVAL_TRACKS:
            rows.append(row(family, track, score(model, family, track, "race")))
        if family == "linear":  # the same model on a slippery floor: the grip limit is felt
            for track in EVAL_TRACKS:
                rows.append(row("linear, floor at mu 0.5", track,
                                score(model, family, track, "race", "--set", "sim.mu=0.5")))
        print("\n".join(rows[2:]), flush=True)
    if args.dagger_rounds and "linear" in args.families.split(","):
        dagger = out / "dagger"
        car("sim", "dagger", "--model", str(out / "linear"), "--track", *TRAIN_TRACKS,
            "--rounds", str(args.dagger_rounds), "--out", str(dagger), "--pace", "race",
            "--randomize", "--latency-ms", str(LATENCY_MS["linear"]), "--epochs", "5",
            "--quiet", "--eval-track", *EVAL_TRACKS)
        summary = json.loads((dagger / "dagger.json").read_text())
        collected = sum(r.get("records", 0) for r in summary["rows"])
        for track in EVAL_TRACKS:
            rows.append(row(f"linear + DAgger ({args.dagger_rounds} rounds, best)", track,
                            score(dagger / "best", "linear", track, "race")))
        # Plain cloning with the same budget: as many more expert records, from scratch.
        extra = out / "race_data_more"
        if not (extra / "manifest.json").exists():
            laps = max(1, round(args.laps * args.dagger_rounds))
            record(extra, "race", TRAIN_TRACKS, seed0=100, laps=laps)
        train([data, extra], "linear", out / "linear_more", args.epochs)
        for track in EVAL_TRACKS:
            rows.append(row("linear, plain cloning, same data budget", track,
                            score(out / "linear_more", "linear", track, "race")))
        notes.append(f"DAgger collected {collected} records in {args.dagger_rounds} round(s)")
    if args.cruise:
        cruise = out / "cruise_data"
        if not (cruise / "manifest.json").exists():
            record(cruise, "cruise", ("oval", "technical"), seed0=3)
        train([cruise], "linear", out / "linear_cruise", args.epochs)
        for track in EVAL_TRACKS:
            rows.append(row("linear at cruise pace", track,
                            score(out / "linear_cruise", "linear", track, "cruise")))
    print("\nRace pace on tracks the models never saw (3 laps, 20 Hz, fixed latency)\n")
    print("\n".join(rows))
    print("\n" + "; ".join(notes))


if __name__ == "__main__":
    main()
