"""What `car drive` and `car record` share: the flags that describe a run, their mapping
onto ``car.run.RunSpec``, the run itself under Ctrl-C, and the summary they print."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from car.commands import CtrlC, bounded
from car.commands.sim_eval import lap_bar
from car.devices import ACTUATORS, CONTROLLERS
from car.errors import CarError
from car.health import Health
from car.loop import MAX_RATE_HZ, MIN_RATE_HZ
from car.run import Run
from car.sim.tracks import DEFAULT_TRACK


def add_device_options(p: argparse.ArgumentParser, *, controller_help: str) -> None:
    """Where frames come from, where commands go, who the user is, and when to stop."""
    p.add_argument("--sim", nargs="?", const=DEFAULT_TRACK, metavar="TRACK",
                   help=f"drive the embedded simulator on TRACK (default {DEFAULT_TRACK}), or "
                        "a donkey simulator (the Unity sim, or `car sim serve`) at "
                        "donkey://HOST:PORT")
    p.add_argument("--track", metavar="TRACK",
                   help="the embedded simulator's track, as on `car sim *` (the same as --sim "
                        "TRACK)")
    p.add_argument("--scene", help="with --sim donkey://...: the scene to load (default: the "
                   "simulator's first)")
    p.add_argument("--camera", metavar="SPEC",
                   help="usb:INDEX, csi[:SENSOR], gst:PIPELINE or replay:TUB "
                        "(default: camera.source in car.toml)")
    p.add_argument("--hz", type=bounded(float, MIN_RATE_HZ, MAX_RATE_HZ),
                   help=f"loop rate, {MIN_RATE_HZ:g} to {MAX_RATE_HZ:g} Hz (default: "
                        "drive.rate_hz)")
    p.add_argument("--actuator", choices=ACTUATORS,
                   help="where commands go: sim (the default with --sim), serial (the MCU; "
                        "with --sim, hardware in the loop: the simulated car follows the "
                        "pulses the MCU reports), pca9685 (an I2C PWM board, [pca9685] in "
                        "car.toml; with --sim the simulated car follows its pulses) or dry "
                        "(nowhere). Default off the simulator: actuator.driver")
    p.add_argument("--port", help="serial port of the MCU (default: actuator.port)")
    p.add_argument("--controller", choices=CONTROLLERS, help=controller_help)
    p.add_argument("--duration", type=bounded(float, 0.1, 1e6), metavar="S",
                   help="stop after S seconds")
    p.add_argument("--seed", type=bounded(int, 0, 2**63 - 1), default=0,
                   help="simulator seed (default 0)")
    p.add_argument("--randomize", action="store_true", help="simulator: a new look every lap")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def device_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The RunSpec fields the shared flags set."""
    return {"sim": simulator(args), "scene": args.scene, "camera": args.camera, "rate_hz": args.hz,
            "actuator": args.actuator, "port": args.port, "duration_s": args.duration,
            "seed": args.seed, "randomize": args.randomize}


def simulator(args: argparse.Namespace) -> str | None:
    """``--sim [TRACK]`` or ``--track TRACK`` (both: they must agree)."""
    track = getattr(args, "track", None)
    if track is None:
        return args.sim
    if args.sim is not None and args.sim not in (track, DEFAULT_TRACK):
        raise CarError(f"--sim {args.sim} and --track {track} name two worlds; give one")
    return track


def on_the_car(args: argparse.Namespace, camera_source: str) -> bool:
    """Neither a simulator nor a replayed tub: a real camera."""
    spec = camera_in_use(args, camera_source)
    return spec is not None and not spec.startswith("replay:")


def camera_in_use(args: argparse.Namespace, camera_source: str) -> str | None:
    """The camera spec a run reads, or None when a simulator draws the frames."""
    spec = args.camera or camera_source
    return None if simulator(args) is not None or spec == "sim" else spec


def drive_and_report(run: Run, args: argparse.Namespace,
                     start_line: Callable[[Run], str]) -> int:
    """Open the run, print its start line, drive until a stop (Ctrl-C: the first press
    stops at the next tick, a second at once), close, print the summary; the exit code."""
    with run:
        print(f"{start_line(run)}; Ctrl-C stops (twice: at once)", file=sys.stderr)
        bar, on_tick = _lap_progress(run)
        try:
            with CtrlC(second_raises=True) as ctrl_c:
                summary = run.drive(should_stop=lambda: ctrl_c.pressed, on_tick=on_tick)
        finally:
            if bar is not None:
                bar.close()
        if ctrl_c.pressed:
            summary["stop_reason"] = "interrupted"
    print(json.dumps(summary) if args.json else format_summary(summary, run.health))
    return exit_code(summary["stop_reason"])


def _lap_progress(run: Run) -> tuple[Any, Callable[[Any], None] | None]:
    """With --laps in a simulator, the lap bar of `car sim eval` (on a terminal only)."""
    world, laps = run.world, run.spec.laps
    if world is None or not laps:
        return None, None
    bar, advance = lap_bar(world.name, laps)
    return bar, lambda result: advance(min(float(laps), world.lap_progress()))


def exit_code(reason: str) -> int:
    return 1 if reason.startswith("device failed") else (130 if reason == "interrupted" else 0)


SAFETY_WORDS = {  # what each safety counter of the summary counts
    "estop_ticks": "ticks held stopped by the e-stop",
    "actuator_faults": "ticks at neutral because the actuator was down",
    "stale_frames": "ticks at neutral because the camera frame was too old to drive on",
    "repeated_frames": "ticks that got the frame of the tick before (the camera is slower than "
                       "the loop)",
    "bad_outputs": "ticks at neutral because the model gave NaN or Inf, or raised",
    "pilot_errors": "inferences that raised",
    "late_outputs": "pilot outputs not sent because their frame was too old by then",
    "record_errors": "records that could not be written",
    "throttle_capped": "ticks the pilot's throttle was cut to drive.max_throttle (by design; "
                       "raise it in car.toml for more speed)",
    "mode_changes": "changes of driving mode",
}


def format_summary(summary: dict[str, Any], health: list[Health]) -> str:
    """The human-readable summary `car drive` and `car record` print on exit."""
    lines = [f"{summary['ticks']} ticks in {summary['elapsed_s']:.1f} s: {summary['hz']} Hz "
             f"(target {summary['target_hz']:g}), {summary['overruns']} overruns "
             f"({summary['overrun_pct']:.2f}%); stopped: {summary['stop_reason']}",
             *([f"engine: {summary['engine']}"] if summary.get("engine") else []),
             f"{'stage':<18}{'p50 ms':>9}{'p99 ms':>9}"]
    for name, lat in summary["latency_ms"].items():
        if lat["p50"] is not None:
            lines.append(f"{name:<18}{lat['p50']:>9.3f}{lat['p99']:>9.3f}")
    safety = {k: v for k, v in summary["safety"].items() if v}
    if safety:
        lines.append("safety: " + ", ".join(f"{k} {v}" for k, v in safety.items()))
        lines += [f"  {k}: {SAFETY_WORDS[k]}" for k in safety if k in SAFETY_WORDS]
    if "sim" in summary:
        s = summary["sim"]
        laps = ", ".join(f"{t:.2f} s" for t in s["lap_times_s"])
        lines.append(f"sim {s['track']}: {s['laps']} lap(s){f' ({laps})' if laps else ''}, "
                     f"{s['off_track_events']} off-track event(s), {s['resets']} reset(s)")
    lines += [h.line for h in health]
    if "web" in summary:
        lines.append(web_line(summary["web"]))
    if "record" in summary:
        r = summary["record"]
        dropped = f", {r['dropped']} DROPPED (disk too slow)" if r["dropped"] else ""
        erased = f", {r['erased']} erased (restorable)" if r.get("erased") else ""
        lines.append(f"recorded {r['written']} records into {r['path']}{dropped}{erased}")
    return "\n".join(lines)


WEB_COUNTS = (("connections", "browser connection(s)"), ("refused", "wrong token(s)"),
              ("token_limited", "answered 429 (too many wrong tokens)"),
              ("cross_origin", "cross-site socket(s) refused"),
              ("pending_closed", "idle connection(s) made to give way"),
              ("header_timeouts", "timed out before a request"),
              ("rate_limited", "flooding socket(s) closed"), ("malformed", "malformed"),
              ("clamped", "clamped"), ("too_many", "browser(s) over the limit"),
              ("takeovers", "take-over(s)"), ("reclaimed", "reclaim(s)"),
              ("loop_errors", "server error(s)"))


def web_line(stats: dict[str, int]) -> str:
    """The page server's counters, the ones that are not zero, in one line."""
    parts = [f"{stats[key]} {words}" for key, words in WEB_COUNTS if stats.get(key)]
    return "web: " + (", ".join(parts) if parts else "no browser connected")
