"""`car models`: the models database (``<paths.models_dir>/database.jsonl``), one row per
model, newest first, with its validation error and its latest closed-loop score."""

from __future__ import annotations

import argparse
import json
import sys

from car.commands import add_config_options, config_from_args
from car.model_db import ModelRow, database_path, model_rows, read_entries


def register(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="list the trained models (the models "
                                                "database in paths.models_dir), newest first")
    models.add_argument("--json", action="store_true", help="print one JSON list")
    add_config_options(models)
    models.set_defaults(handler=models_command)


def models_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    path = database_path(config.paths.models_dir)
    if not path.is_file():
        print(f"no models database at {path} yet: `car train` adds a line for each model it "
              "trains (paths.models_dir sets where)", file=sys.stderr if args.json else
              sys.stdout)
        if args.json:
            print("[]")
        return 0
    try:
        entries, corrupt = read_entries(path)
    except OSError as exc:
        print(f"car: cannot read the models database {path}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    if corrupt:
        print(f"car: skipped {corrupt} corrupt line(s) in {path}", file=sys.stderr)
    rows = model_rows(entries)
    if args.json:
        print(json.dumps([row.to_json() for row in rows], indent=2))
    else:
        print(format_rows(rows))
    return 0


def format_rows(rows: list[ModelRow]) -> str:
    if not rows:
        return "the models database has no models yet"
    lines = [f"{'TRAINED':<20}{'TYPE':<10}{'DATA':<22}{'STEER MAE':>10}  "
             f"{'CLOSED LOOP':<48}MODEL"]
    for r in rows:
        data = (f"{r.tubs} tub(s), {r.records if r.records is not None else '?'} rec"
                if r.tubs else "-")
        mae = f"{r.steering_mae:.3f}" if isinstance(r.steering_mae, (int, float)) else "-"
        lines.append(f"{r.time[:19]:<20}{r.type[:9]:<10}{data[:21]:<22}{mae:>10}  "
                     f"{_score(r.eval):<47} {r.model}")
    return "\n".join(lines)


def _score(evaluation: dict | None) -> str:
    """``92.1% 3/3 laps oval, lap +4% vs expert, |cte| 0.12 m`` or ``-``."""
    if not evaluation or evaluation.get("autonomy_pct") is None:
        return "-"
    text = (f"{evaluation['autonomy_pct']:.1f}% {evaluation.get('laps_completed', '?')}/"
            f"{evaluation.get('laps', '?')} laps {evaluation.get('track') or ''}").rstrip()
    ratio = evaluation.get("lap_time_vs_expert_pct")
    if isinstance(ratio, (int, float)):
        text += f", lap {ratio:+.0f}% vs expert"
    cte = evaluation.get("mean_abs_cte_m")
    if isinstance(cte, (int, float)):
        text += f", |cte| {cte:.2f} m"
    return text
