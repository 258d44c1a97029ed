"""Try against the normal model: every family trained by one recipe with several seeds and
scored in closed loop on tracks it never saw, against the expert.

    python benchmarks/compare_models.py --out DIR [--families linear,categorical,resnet18,3d,rnn]
        [--seeds 0,1,2] [--paces cruise[,race]] [--epochs 10] [--laps 3]
        [--train-tracks oval,technical,random:1,...] [--eval-tracks diyrobocars,random:11]
        [--eval-laps 3] [--family-args resnet18=--pretrained] [--markdown BENCHMARKS.md]

The recipe, the same for every family and seed, all through the `car` CLI:
1. per pace, the expert is recorded once (``car sim record --pace P --randomize --noise
   0.15``, bench_race's recorder) for ``--laps`` laps on each training track, one tub each,
   shared by every family and seed;
2. ``car train --type F --seed S --epochs E --quiet`` on those tubs (car train's default
   batch size, learning rate and augmentations; ``--train-args`` and ``--family-args`` add
   flags, printed with the recipe);
3. the model's latency on this CPU is measured: ONNX Runtime, CPU provider, batch 1,
   preprocess + inference p50 over random frames;
4. ``car sim eval --pace P --vs-expert --latency-ms L --provider cpu`` on each unseen track
   for ``--eval-laps`` laps, with that latency charged to the model and the expert alike.

Resumable: DIR keeps tubs/<pace>/<track>, models/<pace>/<family>/seed<k> (with compare.json:
training time, latency, parameters) and evals/<pace>/<family>/seed<k>/<track>.json; a rerun
skips what exists and retries what failed. A model scored on every track needs only its
compare.json and evals, so benchmarks/results/compare_models keeps those (and no models or
tubs) in git: a study spread over several sessions goes on from there. Writes DIR/runs.csv,
runs.json, table.md and compare.png after every model; a broken step is one line and a
failed row, not a crash.
``--report-only`` writes the report from what was scored, running nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_race import CAR, EVAL_TRACKS, ROOT, TRAIN_TRACKS, record
from compare_report import (
    aggregate,
    failed_row,
    format_table,
    plot,
    replace_section,
    run_row,
    write_csv,
)

from car.sim.pace import PACES

FAMILIES = ("linear", "categorical", "resnet18", "3d", "rnn")


def slug(track: str) -> str:
    return track.replace(":", "_").replace("/", "_")


def car_step(*argv: str) -> tuple[int, str, str]:
    """Runs `car ARGV`: (exit code, stdout, the last line of stderr)."""
    done = subprocess.run([*CAR, *argv], cwd=ROOT, capture_output=True, text=True)
    last = next((ln.strip() for ln in reversed(done.stderr.splitlines()) if ln.strip()), "")
    return done.returncode, done.stdout, last[:200]


def record_data(out: Path, pace: str, tracks: list[str], laps: int) -> list[Path]:
    """One tub per training track at ``pace``; a tub without its .done marker is redone."""
    tubs = []
    for k, track in enumerate(tracks):
        tub = out / "tubs" / pace / slug(track)
        if not (tub / ".done").exists():
            shutil.rmtree(tub, ignore_errors=True)
            start = time.monotonic()
            record(tub, pace, (track,), seed0=10 + k, laps=laps)  # a failure ends the study
            (tub / ".done").write_text(f"{time.monotonic() - start:.1f}\n")
            print(f"recorded {pace} expert on {track} ({laps} laps) in "
                  f"{time.monotonic() - start:.0f} s", flush=True)
        tubs.append(tub)
    return tubs


def measure_latency(onnx: Path, runs: int = 200) -> float:
    """ONNX Runtime CPU, batch 1: preprocess + inference p50 in ms (after a warm-up)."""
    import numpy as np

    from car.bench import time_engine
    from deploy.engine import load_engine

    engine = load_engine(onnx, "cpu")
    try:
        p = engine.manifest.preprocess
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (p.source_height, p.source_width, 3), np.uint8)
                  for _ in range(8)]
        time_engine(engine, frames, 20)
        pre, inf = time_engine(engine, frames, runs)
    finally:
        engine.close()
    return round(pre.percentile_ms(50) + inf.percentile_ms(50), 2)


def count_params(checkpoint: Path) -> int:
    """Trainable parameters of the model in ``pilot.pt``."""
    from training.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    return sum(p.numel() for p in model.parameters())


def train_model(tubs: list[Path], family: str, seed: int, model: Path, epochs: int,
                extra: list[str]) -> dict[str, Any]:
    """The trained model's compare.json (train_s, latency_ms, params); trains, measures and
    counts only what is missing. Raises RuntimeError with one line when a step fails."""
    info_path = model / "compare.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if not ((model / "pilot.onnx").is_file() and "train_s" in info):
        info = {}
        start = time.monotonic()
        rc, _, err = car_step("train", "--tub", *map(str, tubs), "--type", family, "--seed",
                              str(seed), "--out", str(model), "--epochs", str(epochs),
                              "--quiet", "--force", *extra)
        if rc != 0:
            raise RuntimeError(f"train: {err or f'exit {rc}'}")
        info["train_s"] = round(time.monotonic() - start, 1)
    model.mkdir(parents=True, exist_ok=True)
    try:
        if "latency_ms" not in info:
            info["latency_ms"] = measure_latency(model / "pilot.onnx")
        if "params" not in info:
            info["params"] = count_params(model / "pilot.pt")
    except Exception as exc:  # an engine or checkpoint error: the run fails, the study goes on
        why = str(exc).replace(f"{model}{os.sep}", "")[:160]
        raise RuntimeError(f"measure: {type(exc).__name__}: {why}") from None
    finally:
        info_path.write_text(json.dumps(info, indent=1) + "\n")
    return info


def score(model: Path, track: str, pace: str, laps: int, latency_ms: float,
          path: Path) -> dict[str, Any]:
    """`car sim eval --json --vs-expert`'s object, from ``path`` when it is there.
    Raises RuntimeError with one line when the eval breaks (an unfinished run is a score)."""
    if path.is_file():
        return json.loads(path.read_text())
    rc, out, err = car_step("sim", "eval", "--model", str(model / "pilot.onnx"), "--track",
                            track, "--laps", str(laps), "--pace", pace, "--vs-expert",
                            "--latency-ms", f"{latency_ms:.2f}", "--provider", "cpu", "--json")
    try:
        result = json.loads(out) if rc in (0, 1) else None
    except json.JSONDecodeError:
        result = None
    if not isinstance(result, dict):
        raise RuntimeError(f"eval: {err or f'exit {rc}'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result) + "\n")
    return result


def complete(out: Path, pace: str, family: str, seed: int, tracks: list[str]) -> bool:
    """Whether a model was trained, measured and scored on every track."""
    info_path = out / "models" / pace / family / f"seed{seed}" / "compare.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    evals = out / "evals" / pace / family / f"seed{seed}"
    return {"train_s", "latency_ms", "params"} <= set(info) and all(
        (evals / f"{slug(track)}.json").is_file() for track in tracks)


def study_model(out: Path, pace: str, family: str, seed: int, tubs: list[Path],
                extra: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One family × seed × pace: trained, measured and scored on every eval track; a row
    per track, failed rows for the steps that broke (each said in one line)."""
    model = out / "models" / pace / family / f"seed{seed}"
    done = complete(out, pace, family, seed, args.eval_tracks)
    if args.report_only and not done:
        print(f"not run yet: {pace} {family} seed {seed} (left out of the report)", flush=True)
        return []
    try:  # a scored model needs only its compare.json and evals (kept in git; not the model)
        info = json.loads((model / "compare.json").read_text()) if done else \
            train_model(tubs, family, seed, model, args.epochs, extra)
    except RuntimeError as exc:
        print(f"FAILED {pace} {family} seed {seed}: {exc}", flush=True)
        return [failed_row(pace, family, seed, t, str(exc)) for t in args.eval_tracks]
    rows = []
    for track in args.eval_tracks:
        path = out / "evals" / pace / family / f"seed{seed}" / f"{slug(track)}.json"
        try:
            result = score(model, track, pace, args.eval_laps, info["latency_ms"], path)
        except RuntimeError as exc:
            print(f"FAILED {pace} {family} seed {seed} on {track}: {exc}", flush=True)
            rows.append(failed_row(pace, family, seed, track, str(exc)))
            continue
        r = run_row(pace, family, seed, track, result, info["latency_ms"], info["params"],
                    info["train_s"])
        rows.append(r)
        print(f"{pace} {family} seed {seed} on {track}: autonomy {r['autonomy_pct']:.1f}%, "
              f"lap time / expert's {r['lap_ratio'] or 'no lap'}, |cte| "
              f"{r['mean_abs_cte_m']:.3f} m (latency {info['latency_ms']} ms, trained in "
              f"{info['train_s'] / 60:.1f} min)", flush=True)
    return rows


def parse_family_args(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        family, sep, flags = item.partition("=")
        if not sep:
            sys.exit(f"--family-args {item!r}: give FAMILY=FLAGS, e.g. resnet18=--pretrained")
        out.setdefault(family, []).extend(shlex.split(flags))
    return out


def recipe_lines(args: argparse.Namespace, family_args: dict[str, list[str]]) -> list[str]:
    lines = [f"families {', '.join(args.families)}; seeds {', '.join(map(str, args.seeds))}; "
             f"paces {', '.join(args.paces)}",
             f"record: the expert at each pace with --randomize and DART noise 0.15, "
             f"{args.laps} lap(s) on each of {', '.join(args.train_tracks)}",
             f"train: car train --type F --seed S --epochs {args.epochs} --quiet"
             + (f" {' '.join(args.train_args)}" if args.train_args else "")
             + " (car train's defaults otherwise)",
             f"score: car sim eval --pace P --vs-expert --latency-ms L --provider cpu, "
             f"{args.eval_laps} lap(s) on each of {', '.join(args.eval_tracks)} (unseen); L = "
             f"the model's ONNX Runtime CPU batch-1 preprocess + inference p50 on this machine"]
    lines += [f"extra flags for {f}: {' '.join(a)}" for f, a in family_args.items()]
    return lines


def write_outputs(out: Path, rows: list[dict[str, Any]], recipe: list[str],
                  markdown: Path | None, argv: list[str]) -> str:
    """runs.csv, runs.json, table.md, compare.png (and the --markdown section); the table."""
    write_csv(out / "runs.csv", rows)
    (out / "runs.json").write_text(json.dumps(rows, indent=1) + "\n")
    groups = aggregate(rows)
    table = format_table(groups)
    (out / "table.md").write_text(table + "\n")
    png = out / "compare.png"
    try:
        plot(groups, png)
    except Exception as exc:  # a plot is not worth the study
        print(f"plot: {type(exc).__name__}: {exc}", file=sys.stderr)
    if markdown is not None:
        rel = Path(os.path.relpath(png.resolve(), markdown.resolve().parent))
        section = "\n".join(
            ["## Every family by one recipe: `python benchmarks/compare_models.py`", "",
             f"`python benchmarks/compare_models.py {' '.join(map(shlex.quote, argv))}`", "",
             *[f"- {line}" for line in recipe], "",
             "Mean ± std over the seeds that ran; lap time / expert's: the model's mean lap "
             "over the expert's on the same track, loop and latency.", "", table, "",
             f"![autonomy and lap time per family]({rel.as_posix()})"])
        text = markdown.read_text() if markdown.is_file() else ""
        markdown.write_text(replace_section(text, section))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    csv_list = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--families", type=csv_list, default=list(FAMILIES))
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in csv_list(s)],
                        default=[0, 1, 2])
    parser.add_argument("--paces", type=csv_list, default=["cruise"],
                        help="cruise and/or race (default cruise)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--laps", type=int, default=3, help="recorded laps per training track")
    parser.add_argument("--train-tracks", type=csv_list,
                        default=[*TRAIN_TRACKS[2:], *TRAIN_TRACKS[:2]])
    parser.add_argument("--eval-tracks", type=csv_list, default=list(EVAL_TRACKS))
    parser.add_argument("--eval-laps", type=int, default=3)
    parser.add_argument("--train-args", type=shlex.split, default=[],
                        help="more `car train` flags for every family, given with '=': "
                             "--train-args='--batch-size 64'")
    parser.add_argument("--family-args", action="append", default=[], metavar="F=FLAGS",
                        help="more `car train` flags for one family (repeatable)")
    parser.add_argument("--markdown", type=Path,
                        help="also write the table into this file's compare_models section")
    parser.add_argument("--report-only", action="store_true",
                        help="record, train and score nothing: write the report from the "
                             "models already scored (an interrupted study's)")
    args = parser.parse_args()
    if set(args.paces) - set(PACES):
        parser.error(f"--paces: {args.paces} is not among {', '.join(PACES)}")
    family_args = parse_family_args(args.family_args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    recipe = recipe_lines(args, family_args)
    print("Recipe:\n" + "\n".join(f"  {line}" for line in recipe), flush=True)
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    for pace in args.paces:
        tubs = [] if args.report_only else record_data(out, pace, args.train_tracks, args.laps)
        for seed in args.seeds:  # seed-major: an interrupted study has every family early
            for family in args.families:
                extra = [*args.train_args, *family_args.get(family, [])]
                rows += study_model(out, pace, family, seed, tubs, extra, args)
                write_outputs(out, rows, recipe, None, sys.argv[1:])
    table = write_outputs(out, rows, recipe, args.markdown, sys.argv[1:])
    print(f"\n{table}\n\nwrote {out}/runs.csv, runs.json, table.md, compare.png"
          + (f" and the section in {args.markdown}" if args.markdown else "")
          + f" ({(time.monotonic() - started) / 60:.1f} min)")


if __name__ == "__main__":
    main()
