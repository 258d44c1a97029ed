"""`car tub info | check | delete | restore | hist | movie | plot`, and the actions other
modules register on the same `car tub` parser."""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from car.commands import add_config_options, bounded, config_from_args
from car.commands.tub_clean import register as register_clean
from car.commands.tub_lerobot import register as register_lerobot
from car.errors import CarError, TubError
from car.tub.check import CheckReport, check_tub
from car.tub.format import index_ranges, slices
from car.tub.hist import write_histograms
from car.tub.lock import lock_holder
from car.tub.marks import set_deleted
from car.tub.movie import write_movie
from car.tub.paths import expand_paths
from car.tub.reader import Tub
from car.tub.repair import check_and_repair

SHOW_PER_KIND = 8  # problems listed per kind before "... and N more"


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("tub", help="inspect and edit recorded tubs")
    sub = parser.add_subparsers(dest="tub_command", metavar="ACTION", required=True)

    info = sub.add_parser("info", help="summarise one or more tubs")
    info.add_argument("paths", nargs="+", metavar="PATH", help="tub folders or globs")
    info.add_argument("--json", action="store_true", help="print JSON (a list for several)")
    info.set_defaults(handler=info_command)

    check = sub.add_parser("check", help="find torn lines, missing or corrupt images, ...")
    check.add_argument("path", metavar="PATH", help="the tub folder")
    check.add_argument("--repair", action="store_true",
                       help="fix what can be fixed (removed lines go to repair_log.jsonl)")
    check.add_argument("--quick", action="store_true",
                       help="check image files' markers without decoding them")
    check.set_defaults(handler=check_command)

    for name, verb in (("delete", "soft-delete"), ("restore", "undo a soft delete of")):
        edit = sub.add_parser(name, help=f"{verb} records by index range")
        edit.add_argument("path", metavar="PATH", help="the tub folder")
        edit.add_argument("ranges", nargs="+", metavar="START:END",
                          help="half-open index ranges like Python slices (100:200 is "
                               "100..199); also N, START: or :END")
        edit.set_defaults(handler=delete_command if name == "delete" else restore_command)

    hist = sub.add_parser("hist", help="steering and throttle histograms as a PNG")
    hist.add_argument("paths", nargs="+", metavar="PATH", help="tub folders or globs")
    hist.add_argument("--out", required=True, help="PNG to write")
    add_key_options(hist)
    hist.set_defaults(handler=hist_command)

    movie = sub.add_parser("movie", help="a video of the frames with steering and throttle")
    movie.add_argument("path", metavar="PATH", help="the tub folder")
    movie.add_argument("--out", required=True,
                       help="video to write: .mp4 is H.264 that browsers play (needs PyAV), "
                            ".avi is Motion JPEG")
    movie.add_argument("--scale", type=bounded(int, 1, 16), default=3,
                       help="enlarge frames, 1 to 16 (default 3)")
    movie.add_argument("--fps", type=bounded(float, 1, 240),
                       help="frame rate, 1 to 240 (default: the capture rate, from the "
                            "frames' capture timestamps)")
    movie.add_argument("--start", type=int, help="first index")
    movie.add_argument("--end", type=int, help="stop before this index")
    movie.add_argument("--skip-broken", action="store_true",
                       help="skip records whose image is missing or corrupt, and count them")
    movie.add_argument("--model", metavar="PILOT.onnx",
                       help="also draw this pilot's steering and throttle next to the "
                            "recorded ones (an ONNX model with its .json manifest beside it)")
    add_key_options(movie)
    add_config_options(movie)
    movie.set_defaults(handler=movie_command)

    plot = sub.add_parser("plot", help="a model's predictions against the recorded labels")
    plot.add_argument("path", metavar="PATH", help="the tub folder")
    plot.add_argument("--model", required=True, metavar="PILOT.onnx",
                      help="an ONNX model with its .json manifest beside it")
    plot.add_argument("--out", required=True, help="PNG to write")
    plot.add_argument("--start", type=int, help="first index")
    plot.add_argument("--end", type=int, help="stop before this index")
    add_key_options(plot)
    plot.add_argument("--csv", metavar="PATH", help="also write the rows (index, recorded "
                      "steering and throttle, the model's) as CSV")
    add_config_options(plot)
    plot.set_defaults(handler=plot_command)
    register_clean(sub)
    register_lerobot(sub)


# ---------------------------------------------------------------------------- helpers


def add_key_options(p: argparse.ArgumentParser) -> None:
    """Which record fields are the steering and the throttle."""
    p.add_argument("--steering-key", default="user/angle",
                   help="the record field holding the steering (default user/angle; "
                        "pilot/angle for what a pilot drove)")
    p.add_argument("--throttle-key", default="user/throttle",
                   help="the record field holding the throttle (default user/throttle)")


RANGE_FORM = ("a range is N, START:END (half-open like Python slices: 100:200 is 100..199), "
              "START: or :END")


def parse_ranges(texts: list[str]) -> list[range]:
    """``START:END`` (half-open), ``N``, ``START:`` or ``:END`` as ranges (open ends to 2**62).

    A blank range, or ``:`` alone, is an error: an empty shell variable must not name
    record 0, or every record.
    """
    out = []
    for text in texts:
        start_text, colon, end_text = (part.strip() for part in text.partition(":"))
        if not start_text and not end_text:
            what = "is empty" if not colon else "has neither START nor END (all: say 0:)"
            raise CarError(f"range {text!r} {what}; {RANGE_FORM}")
        try:
            start = _whole(start_text) if start_text else 0
            end = (_whole(end_text) if end_text else 2**62) if colon else start + 1
        except ValueError:
            raise CarError(f"range {text!r}: expected whole numbers; {RANGE_FORM}") from None
        if start < 0 or end <= start:
            raise CarError(f"range {text!r}: need 0 <= START < END; {RANGE_FORM}")
        out.append(range(start, end))
    return out


def _whole(text: str) -> int:
    """Digits only (``int()`` also takes ``1_000``, ``+5`` and other scripts' digits)."""
    if not (text.isascii() and text.lstrip("-").isdigit()):
        raise ValueError(text)
    return int(text)


def check_span(start: int | None, end: int | None) -> None:
    """``--start`` and ``--end`` of `car tub movie` / `plot`: 0 <= START < END."""
    if start is not None and start < 0:
        raise CarError(f"--start {start}: an index is 0 or more")
    if end is not None and end <= (start or 0):
        raise CarError(f"--end {end}: must be past --start ({start or 0}); END is the first "
                       "index left out")


def _progress(items: Any, desc: str) -> Any:
    return tqdm(items, desc=desc, unit="rec", leave=False, disable=None, file=sys.stderr)


# ---------------------------------------------------------------------------- handlers


def info_command(args: argparse.Namespace) -> None:
    tubs = [Tub(p) for p in expand_paths(args.paths)]
    infos = [tub.info() for tub in tubs]
    if args.json:
        print(json.dumps(infos[0] if len(infos) == 1 and not glob.has_magic(args.paths[0])
                         else infos, indent=2))
        return
    for info in infos:
        print(format_info(info))


def format_info(info: dict[str, Any]) -> str:
    lines = [f"tub       {info['path']}  ({info['format']})"]
    extra = f", {info['tombstones']} crash tombstones" if info["tombstones"] else ""
    lines.append(f"records   {info['records']} live, {info['deleted']} deleted{extra}; "
                 f"next index {info['current_index']}, {info['catalogs']} catalog(s)")
    for session in info["sessions"]:
        about = session.get("info")
        settings = ""
        if isinstance(about, dict) and about:
            parts = [f"{k}: " + ", ".join(f"{kk} {vv}" for kk, vv in v.items())
                     if isinstance(v, dict) else f"{k} {v}" for k, v in about.items()]
            settings = " (" + "; ".join(parts) + ")"
        lines.append(f"session   {session['id'] or '(no session id)'}: "
                     f"{session['records']} records{settings}")
    if info["first_timestamp_ms"]:
        first_s = info["first_timestamp_ms"] / 1000
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(first_s))
        duration = info["duration_s"] or 0.0
        captured = info.get("capture_duration_s")
        if captured and abs(captured - duration) > max(1.0, 0.1 * captured):
            # Simulated or replayed time: the capture rate is the one that matters (training
            # windows, movies); the write rate only says how fast the disk took it.
            lines.append(f"captured  {start}, {captured:.1f} s, "
                         f"{(info['records'] - 1) / captured:.1f} Hz (simulated time)")
            written = f", {(info['records'] - 1) / duration:.1f} Hz" if duration > 0 else ""
            lines.append(f"written   in {duration:.1f} s{written} (wall clock)")
        else:
            rate = f", {(info['records'] - 1) / duration:.1f} Hz" if duration > 0 else ""
            lines.append(f"captured  {start}, {duration:.1f} s{rate}")
    lines.append("inputs    " + ", ".join(f"{i} ({t})" for i, t in zip(info["inputs"],
                                                                          info["types"])))
    if info["writer_pid"]:
        lines.append(f"recording by pid {info['writer_pid']} now: figures are a snapshot")
    elif info["damage"]:
        lines.append(f"damage    {len(info['damage'])} problem(s), e.g. {info['damage'][0]}; "
                     "run `car tub check`")
    return "\n".join(lines)


def check_command(args: argparse.Namespace) -> int:
    holder = lock_holder(Path(args.path))
    if holder and args.repair:
        raise TubError(f"{args.path}: being recorded by pid {holder}; stop the recorder first")
    if holder:
        print(f"note: pid {holder} is recording into this tub; what it has not made durable "
              "yet may show as problems")
    progress = sys.stderr.isatty()
    if not args.repair:
        report = check_tub(args.path, decode=not args.quick, progress=progress)
        print(format_report(report))
        if report.repairable:
            print(f"run `car tub check {args.path} --repair` to fix "
                  f"{len(report.repairable)} of them")
        return 1 if report.problems else 0
    report, done = check_and_repair(args.path, decode=not args.quick, progress=progress)
    print(format_report(report))
    if not report.problems:
        return 0
    for line in done:
        print(f"repaired: {line}")
    after = check_tub(args.path, decode=not args.quick, progress=progress)
    print(f"after repair: {len(after.problems)} problem(s) left")
    for problem in after.problems:
        print(f"  {problem.where}: {problem.what}")
    return 1 if after.problems else 0


def format_report(report: CheckReport) -> str:
    tub = report.path
    records = sum(1 for _ in report.scan.records())
    head = (f"{tub}: {records} record lines in {len(report.scan.catalogs)} catalog(s), "
            f"{report.images_checked} images checked")
    if not report.problems:
        return head + "; no problems"
    lines = [head + f"; {len(report.problems)} problem(s):"]
    by_kind: dict[str, list[Any]] = {}
    for problem in report.problems:
        by_kind.setdefault(problem.kind, []).append(problem)
    for problems in by_kind.values():
        for problem in problems[:SHOW_PER_KIND]:
            fix = f"  [repair: {problem.fix}]" if problem.fix else \
                f"  [{problem.advice}]" if problem.advice else "  [cannot be repaired]"
            lines.append(f"  {problem.where}: {problem.what}{fix}")
        if len(problems) > SHOW_PER_KIND:
            lines.append(f"  ... and {len(problems) - SHOW_PER_KIND} more like these")
    return "\n".join(lines)


def _edit(args: argparse.Namespace, deleted: bool) -> None:
    changed = set_deleted(args.path, parse_ranges(args.ranges), deleted=deleted)
    remaining = len(Tub(args.path))
    verb = "deleted" if deleted else "restored"
    if not changed:
        state = "already deleted" if deleted else "not deleted"
        print(f"nothing {verb}: those records are {state}; {remaining} live records")
        return
    print(f"{verb} {len(changed)} record(s) ({index_ranges(changed)}) in {args.path}; "
          f"{remaining} live records")
    if deleted:
        print(f"undo with: car tub restore {args.path} {' '.join(slices(changed))}")


def delete_command(args: argparse.Namespace) -> None:
    _edit(args, deleted=True)


def restore_command(args: argparse.Namespace) -> None:
    _edit(args, deleted=False)


def hist_command(args: argparse.Namespace) -> None:
    tubs = [Tub(p) for p in expand_paths(args.paths)]
    out = write_histograms(tubs, args.out, args.steering_key, args.throttle_key)
    print(f"wrote {out} ({sum(len(t) for t in tubs)} records from {len(tubs)} tub(s))")


def movie_command(args: argparse.Namespace) -> None:
    check_span(args.start, args.end)
    tub = Tub(args.path)
    pilot, note = None, ""
    if args.model:
        pilot = _pilot_outputs(args, tub)
        note = f", with {Path(args.model).name}'s steering and throttle in magenta"
    out, frames, skipped, (fps, rate) = write_movie(
        tub, args.out, scale=args.scale, fps=args.fps, start=args.start, end=args.end,
        steering_key=args.steering_key, throttle_key=args.throttle_key,
        skip_broken=args.skip_broken, pilot=pilot,
        progress=lambda items: _progress(items, "movie"))
    note += f"; skipped {skipped} record(s) with a broken image" if skipped else ""
    print(f"wrote {out} ({frames} frames at {fps:.1f} fps, {rate}){note}")


def _pilot_outputs(args: argparse.Namespace, tub: Tub) -> dict[int, tuple[float, float]]:
    """The pilot's (steering, throttle) per record index, from the same run as `car replay`
    (the loop's temporal-state rule, its engine)."""
    from car.pilot import open_pilot
    from car.replay import replay

    drive = config_from_args(args).drive
    engine = open_pilot(args.model)
    try:
        run = replay(engine, tub.path, drive, drive.rate_hz, start=args.start, end=args.end,
                     label_keys=(args.steering_key, args.throttle_key))
    finally:
        engine.close()
    return {int(row[0]): (float(row[1]), float(row[2])) for row in run.outputs}


def plot_command(args: argparse.Namespace) -> None:
    from car.pilot import open_pilot
    from car.replay import replay
    from car.tub.plot import BinProbabilities, write_plot

    check_span(args.start, args.end)
    tub = Tub(args.path)
    drive = config_from_args(args).drive
    engine = open_pilot(args.model)
    bins, note = None, ""
    try:  # the same run as `car replay`: the loop, its temporal-state rule, its engine
        if engine.manifest.bins:
            try:
                bins = BinProbabilities(args.model)
            except CarError as exc:
                note = f"; no bin probabilities ({exc})"
        run = replay(engine, tub.path, drive, drive.rate_hz, start=args.start, end=args.end,
                     label_keys=(args.steering_key, args.throttle_key),
                     hooks=[bins] if bins else [])
    finally:
        engine.close()
        if bins:
            bins.close()
    rows = np.column_stack([run.outputs[:, 0], run.labels, run.outputs[:, 1:3]])
    mae = np.nanmean(np.abs(rows[:, 1] - rows[:, 3]))
    out = write_plot(rows, args.out, f"{Path(args.model).name} ({engine.manifest.model_type}) "
                                     f"on {tub.path.name}: {len(rows)} records",
                     bins.arrays() if bins else None)
    if bins:
        note = ", with the bin probabilities under each trace"
    if args.csv:
        header = "index,label_steering,label_throttle,model_steering,model_throttle"
        np.savetxt(args.csv, rows, delimiter=",", header=header, comments="",
                   fmt=["%d", "%.7g", "%.7g", "%.7g", "%.7g"])
    skipped = f", {run.skipped} skipped (missing or corrupt image)" if run.skipped else ""
    print(f"wrote {out}{f' and {args.csv}' if args.csv else ''}: {len(rows)} records{skipped}, "
          f"steering MAE {mae:.3f}{note}")
