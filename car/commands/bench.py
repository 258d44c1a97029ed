"""`car bench` (engine latency) and `car replay` (a tub through the loop, against a
reference: process replay, see ``car.replay``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from car.commands import add_config_options, bounded, config_from_args
from car.errors import CarError


def register(commands: argparse._SubParsersAction) -> None:
    b = commands.add_parser("bench", help="preprocessing and inference latency of a model on "
                            "every engine and provider available")
    b.add_argument("--model", required=True, metavar="PATH",
                   help="pilot.onnx (its .pt2 and .trt siblings are benched too)")
    b.add_argument("--runs", type=bounded(int, 10, 100_000), default=300,
                   help="timed runs per engine (default 300)")
    b.add_argument("--json", action="store_true", help="print JSON")
    b.set_defaults(handler=bench_command)

    r = commands.add_parser("replay", help="run a tub through the engine and the loop logic, "
                            "and compare with a reference")
    r.add_argument("tub", metavar="TUB", help="tub folder to replay")
    r.add_argument("--model", required=True, metavar="PATH",
                   help="pilot.onnx, pilot.trt or pilot.pt2, with its .json manifest beside it")
    r.add_argument("--ref", metavar="REF.json",
                   help="reference outputs (default: MODEL's folder/<model>.replay.json)")
    r.add_argument("--update-ref", action="store_true",
                   help="write the reference from this run (on purpose: it is what later runs "
                        "must match)")
    r.add_argument("--tolerance", type=bounded(float, 0.0, 1.0),
                   help="largest allowed |difference| (default: the reference's, else 1e-3)")
    r.add_argument("--budget-ms", type=bounded(float, 0.01, 10_000.0),
                   help="frame-to-command p99 budget (default: one loop period)")
    r.add_argument("--provider", help="ONNX Runtime provider: tensorrt, cuda or cpu")
    r.add_argument("--json", action="store_true", help="print JSON")
    add_config_options(r)
    r.set_defaults(handler=replay_command)


def bench_command(args: argparse.Namespace) -> int:
    from car.bench import bench_model, format_table

    model = Path(args.model)
    if not model.exists():
        raise CarError(f"{model}: no such model file")
    rows = bench_model(model, runs=args.runs)
    if args.json:
        print(json.dumps({"model": str(model), "runs": args.runs,
                          "rows": [r.to_json() for r in rows]}))
    else:
        print(format_table(rows))
    return 0 if any(not r.skipped for r in rows) else 1


def replay_command(args: argparse.Namespace) -> int:
    from car.pilot import open_pilot
    from car.replay import (
        DEFAULT_TOLERANCE,
        check_same_tub,
        compare,
        load_reference,
        replay,
        write_reference,
    )

    config = config_from_args(args)
    model = Path(args.model)
    engine = open_pilot(args.model, args.provider)
    hz = config.drive.rate_hz
    try:
        run = replay(engine, args.tub, config.drive, hz)
    finally:
        engine.close()
    ref_path = Path(args.ref) if args.ref else model.with_name(f"{model.stem}.replay.json")
    budget = args.budget_ms or 1000.0 / hz
    p99 = run.latency_ms["frame_to_command"]["p99"]
    within = p99 is not None and p99 <= budget
    out: dict = {"tub": args.tub, "records": len(run.outputs), "skipped": run.skipped,
                 "engine": run.engine, "reference": str(ref_path),
                 "latency_ms": {k: run.latency_ms[k] for k in
                                ("preprocess", "infer", "frame_to_command")},
                 "budget_ms": round(budget, 3), "within_budget": within}
    status = 0 if within else 1
    if args.update_ref:
        tol = args.tolerance if args.tolerance is not None else DEFAULT_TOLERANCE
        write_reference(ref_path, run, model, args.tub, tol, hz)
        out["updated"] = True
    elif not ref_path.is_file():
        raise CarError(f"{ref_path}: no reference to compare with; write one with "
                       "--update-ref (or name it with --ref)")
    else:
        reference = load_reference(ref_path)
        check_same_tub(run, reference, ref_path)
        cmp = compare(run, reference, args.tolerance)
        out["comparison"] = {"passed": cmp.passed, "compared": cmp.compared,
                             "max_abs_diff": cmp.max_abs_diff, "tolerance": cmp.tolerance,
                             "nan_mismatches": cmp.nan_mismatches,
                             "worst_record": cmp.worst_index, "worst_column": cmp.worst_column,
                             "missing": len(cmp.missing), "extra": len(cmp.extra)}
        status = max(status, 0 if cmp.passed else 1)
    if args.json:
        print(json.dumps(out))
        return status
    lat = out["latency_ms"]
    print(f"replayed {out['records']} records of {args.tub} with {run.engine}"
          f"{f' ({run.skipped} skipped: unreadable frame)' if run.skipped else ''}")
    print(f"latency ms: preprocess p50 {lat['preprocess']['p50']} p99 "
          f"{lat['preprocess']['p99']}, infer p50 {lat['infer']['p50']} p99 "
          f"{lat['infer']['p99']}, frame to command p99 {p99} against a budget of "
          f"{budget:g}: {'OK' if within else 'OVER BUDGET'}")
    if args.update_ref:
        print(f"wrote the reference {ref_path}")
    else:
        c = out["comparison"]
        verdict = "PASS" if c["passed"] else "FAIL"
        detail = (f"max |diff| {c['max_abs_diff']:.2e} (record {c['worst_record']}, "
                  f"{c['worst_column']}) against a tolerance of {c['tolerance']:g}")
        if c["nan_mismatches"]:
            detail += f"; {c['nan_mismatches']} record(s) NaN on one side only"
        if c["missing"] or c["extra"]:
            detail += f"; {c['missing']} reference record(s) missing, {c['extra']} extra"
        print(f"{verdict}: {c['compared']} records compared with {ref_path}: {detail}")
    return status
