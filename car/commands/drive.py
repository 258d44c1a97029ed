"""`car drive`: the drive loop with a model, on the car's camera or in the simulator."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any

from calibration.camera import maybe_undistort
from car.actuator import Actuator, DryRunActuator
from car.camera import Camera, open_camera
from car.commands import CtrlC, add_config_options, bounded, config_from_args
from car.config import Config
from car.controllers import Controller, ScriptedController
from car.controllers.rc import RcController
from car.errors import CarError
from car.frames import NEUTRAL, Command, Mode
from car.loop import STALE_PERIODS, DriveLoop, Ratekeeper, TickResult
from car.mcu.actuator import SerialActuator
from car.mcu.protocol import Telemetry
from car.modes import Arbiter
from car.recorder import DriveRecorder
from car.reload import ModelWatcher
from deploy.engine import Engine, EngineError, load_engine

DEFAULT_TRACK = "diyrobocars"
WATCHDOG_PERIODS = 2.5  # the MCU's timeout must span this many loop periods
SIM_RECORD_FIELDS = (("sim/cte", "float"), ("sim/speed", "float"), ("sim/x", "float"),
                     ("sim/y", "float"), ("sim/yaw", "float"), ("sim/lap", "int"))


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("drive", help="drive with a model: on the car, or in the simulator")
    p.add_argument("--model", required=True, metavar="PATH",
                   help="pilot.onnx, pilot.trt (or .engine/.plan) or pilot.pt, with its .json "
                        "manifest beside it")
    p.add_argument("--sim", nargs="?", const=DEFAULT_TRACK, metavar="TRACK",
                   help=f"drive the embedded simulator on TRACK (default {DEFAULT_TRACK})")
    p.add_argument("--camera", metavar="SPEC",
                   help="usb:INDEX, csi[:SENSOR], gst:PIPELINE or replay:TUB "
                        "(default: camera.source in car.toml)")
    p.add_argument("--hz", type=bounded(float, 1.0, 200.0),
                   help="loop rate, 1 to 200 Hz (default: drive.rate_hz)")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--laps", type=bounded(int, 1, 1000), help="with --sim: stop after N laps")
    stop.add_argument("--duration", type=bounded(float, 0.1, 1e6), metavar="S",
                      help="stop after S seconds")
    p.add_argument("--actuator", choices=("sim", "serial", "dry"),
                   help="where commands go: sim (the default with --sim), serial (the MCU; "
                        "with --sim, hardware in the loop: the simulated car follows the "
                        "pulses the MCU reports) or dry (nowhere). Default off the simulator: "
                        "actuator.driver")
    p.add_argument("--port", help="serial port of the MCU (default: actuator.port)")
    p.add_argument("--controller", choices=("none", "rc"), default="none",
                   help="the user's input: none (neutral) or rc (the RC transmitter, through "
                        "the MCU)")
    p.add_argument("--record", metavar="DIR", help="record frames and the pilot's outputs "
                   "into a tub")
    p.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.LOCAL.value,
                   help="who drives: user, local_angle (pilot steers) or local (default)")
    p.add_argument("--provider", help="ONNX Runtime provider: tensorrt, cuda or cpu (default: "
                   "the best available); for .pt: cpu or cuda")
    p.add_argument("--seed", type=bounded(int, 0, 2**63 - 1), default=0,
                   help="simulator seed (default 0)")
    p.add_argument("--randomize", action="store_true", help="simulator: a new look every lap")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    add_config_options(p)
    p.set_defaults(handler=drive_command)


def open_engine(path: str, provider: str | None) -> Engine:
    try:
        return load_engine(path, provider)
    except EngineError as exc:
        raise CarError(str(exc)) from None


def loop_rate(args: argparse.Namespace, config: Config) -> float:
    """``--hz``, else ``drive.rate_hz`` (whose config bound is wider than the loop's)."""
    hz = args.hz or config.drive.rate_hz
    if not 1.0 <= hz <= 200.0:
        raise CarError(f"drive.rate_hz = {hz:g} is out of range; the loop runs at 1 to 200 Hz")
    return hz


def check_watchdog_fits(timeout_ms: int, hz: float) -> None:
    """The MCU must not fail safe between two ticks of a healthy loop."""
    if timeout_ms < WATCHDOG_PERIODS * 1000.0 / hz:
        raise CarError(f"actuator.timeout_ms = {timeout_ms} is shorter than "
                       f"{WATCHDOG_PERIODS:g} loop periods at {hz:g} Hz "
                       f"({WATCHDOG_PERIODS * 1000.0 / hz:.0f} ms): the MCU would fail safe "
                       "between ticks; raise actuator.timeout_ms or the loop rate")


def check_frame_size(engine: Engine, width: int, height: int) -> None:
    p = engine.manifest.preprocess
    if (p.source_width, p.source_height) != (width, height):
        raise CarError(f"{engine.path.name} was trained on {p.source_width}x{p.source_height} "
                       f"frames but the camera gives {width}x{height}; set [camera] width and "
                       "height in car.toml to match")


def drive_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    hz = loop_rate(args, config)
    spec = args.camera or config.camera.source
    use_sim = args.sim is not None or spec == "sim"
    if args.laps and not use_sim:
        raise CarError("--laps needs --sim; on the car, stop with --duration or Ctrl-C")
    # A replayed tub never moves the motors unless asked to.
    default = "sim" if use_sim else "dry" if spec.startswith("replay:") else \
        config.actuator.driver
    driver = args.actuator or default
    if driver == "sim" and not use_sim:
        raise CarError("--actuator sim needs --sim")
    if driver == "serial":
        check_watchdog_fits(config.actuator.timeout_ms, hz)
    if args.controller == "rc" and driver != "serial":
        raise CarError("--controller rc reads the transmitter through the MCU: add "
                       "--actuator serial")
    engine = open_engine(args.model, args.provider)
    with contextlib.ExitStack() as stack:  # closes in reverse: recorder, actuator, camera
        sim_link = None
        camera: Camera
        if use_sim:
            sim_link = _sim_link(args, config, 1.0 / hz)
            camera = sim_link.camera
        else:
            c = config.camera
            camera = open_camera(spec, c.width, c.height, c.fps)
            stack.callback(camera.close)
            if not spec.startswith("replay:"):  # a tub holds frames as the camera stage gave
                camera = maybe_undistort(camera, config.lens)
        actuator = _actuator(driver, args, config, sim_link)
        stack.callback(actuator.close)
        size = camera.size
        check_frame_size(engine, *size)
        recorder = _recorder(args, config, sim_link) if args.record else None
        stats: list[Any] = []
        if recorder is not None:
            stack.callback(lambda: stats.append(recorder.close()))
        arbiter = Arbiter(config.drive, hz, Mode(args.mode))
        if isinstance(actuator, SerialActuator) and actuator.latched_at_connect:
            arbiter.estop()
            print(f"car: warning: the MCU on {actuator.link.port} has an e-stop latched from an "
                  "earlier session: the car stays neutral until the e-stop is cleared (`car "
                  f"mcu status --port {actuator.link.port} --clear-estop`)", file=sys.stderr)
        controller: Controller = ScriptedController(Mode(args.mode))
        if args.controller == "rc":
            assert isinstance(actuator, SerialActuator)
            controller = RcController(actuator, actuator.pulses, Mode(args.mode))
        loop = DriveLoop(camera, actuator, controller, arbiter,
                         engine, recorder=recorder,
                         clock=sim_link.clock if sim_link else time.monotonic)
        if config.drive.hot_reload:

            def reload(path: Any) -> Engine:
                new = load_engine(path, args.provider)
                check_frame_size(new, *size)  # a model for other frames never takes over
                return new

            stack.callback(ModelWatcher(args.model, reload, loop.swap_engine).start().stop)
        where = f" on {sim_link.sim.track.name}" if sim_link else ""
        if isinstance(actuator, SerialActuator):
            where += f", motors through the MCU on {actuator.link.port}"
            where += " (hardware in the loop)" if sim_link else ""
        print(f"driving {engine.describe()} at {hz:g} Hz, mode {args.mode}{where}; Ctrl-C "
              "stops (twice: at once)", file=sys.stderr)
        keeper = Ratekeeper(hz)
        deadline = keeper.start_s + args.duration if args.duration else None
        resets = [0]

        def on_tick(result: TickResult) -> bool:
            if sim_link is not None:
                status = sim_link.status
                if sim_link.sim.far_off_track:  # put the car back
                    sim_link.sim.reset_to_track()
                    if loop.engine is not None:
                        loop.engine.reset()
                    resets[0] += 1
                if args.laps is not None and status.lap >= args.laps:
                    return True
                if isinstance(actuator, SerialActuator) and actuator.link.telemetry_age_s() \
                        > config.actuator.timeout_ms / 1000.0:
                    sim_link.actuator.send(NEUTRAL)  # no telemetry: the MCU has failed safe
            return deadline is not None and time.monotonic() >= deadline

        with CtrlC(second_raises=True) as ctrl_c:
            reason = loop.run(keeper, should_stop=lambda: ctrl_c.pressed, on_tick=on_tick,
                              watchdog_s=STALE_PERIODS / hz)
            elapsed = time.monotonic() - keeper.start_s
        if ctrl_c.pressed:
            reason = "interrupted"
    summary = loop.summary(keeper, elapsed)
    summary["stop_reason"] = reason
    summary["elapsed_s"] = round(elapsed, 3)
    if sim_link is not None:
        st = sim_link.status
        summary["sim"] = {"track": sim_link.sim.track.name, "laps": st.lap,
                          "lap_times_s": [round(t, 3) for t in st.lap_times_s],
                          "off_track_events": st.off_track_events, "resets": resets[0]}
    if isinstance(actuator, SerialActuator):
        summary["mcu"] = actuator.health()
    if recorder is not None and stats:
        summary["record"] = {"path": str(recorder.path), "written": stats[0].written,
                             "dropped": stats[0].dropped}
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_summary(summary))
    return 1 if reason.startswith("device failed") else (130 if reason == "interrupted" else 0)


def _actuator(driver: str, args: argparse.Namespace, config: Config, sim_link: Any
              ) -> Actuator:
    """The simulator's actuator, the MCU (steering the simulated car with the pulses the MCU
    reports applying, when there is a simulator), or a dry run."""
    if driver == "sim":
        return sim_link.actuator
    if driver == "dry":
        print("car: note: dry run: commands are computed and timed but sent nowhere",
              file=sys.stderr)
        return DryRunActuator()
    actuator = SerialActuator.connect(config, args.port)
    if sim_link is not None:
        pulses = actuator.pulses

        def follow_mcu(t: Telemetry) -> None:  # on the link's reader thread
            sim_link.actuator.send(Command(pulses.steering.from_us(t.applied_steering_us),
                                           pulses.throttle.from_us(t.applied_throttle_us)))

        actuator.link.on_telemetry.append(follow_mcu)
    return actuator


def _sim_link(args: argparse.Namespace, config: Config, period_s: float) -> Any:
    from car.commands.sim import load_track_for
    from car.sim.link import SimLink
    from car.sim.world import Simulator

    track = load_track_for(args.sim or DEFAULT_TRACK, config)
    sim = Simulator(track, config.sim, width=config.camera.width, height=config.camera.height,
                    seed=args.seed, randomize=args.randomize)
    return SimLink(sim, period_s, lockstep=False)


def _recorder(args: argparse.Namespace, config: Config, sim_link: Any) -> DriveRecorder:
    extras = None
    fields: tuple[tuple[str, str], ...] = ()
    if sim_link is not None:
        fields = SIM_RECORD_FIELDS

        def extras() -> dict[str, Any]:
            st = sim_link.status
            return {"sim/cte": st.cte_m, "sim/speed": st.speed_mps, "sim/x": st.x,
                    "sim/y": st.y, "sim/yaw": st.yaw, "sim/lap": st.lap}
    info = {"drive": {"model": str(args.model), "mode": args.mode,
                      "sim": args.sim if sim_link is not None else None}}
    return DriveRecorder(args.record, config.record, extra_fields=fields, extras=extras,
                         session_info=info)


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable summary `car drive` prints on exit."""
    lines = [f"{summary['ticks']} ticks in {summary['elapsed_s']:.1f} s: {summary['hz']} Hz "
             f"(target {summary['target_hz']:g}), {summary['overruns']} overruns "
             f"({summary['overrun_pct']:.2f}%); stopped: {summary['stop_reason']}",
             f"engine: {summary['engine']}",
             f"{'stage':<18}{'p50 ms':>9}{'p99 ms':>9}"]
    for name, lat in summary["latency_ms"].items():
        if lat["p50"] is not None:
            lines.append(f"{name:<18}{lat['p50']:>9.3f}{lat['p99']:>9.3f}")
    safety = {k: v for k, v in summary["safety"].items() if v}
    if safety:
        lines.append("safety: " + ", ".join(f"{k} {v}" for k, v in safety.items()))
    if "sim" in summary:
        s = summary["sim"]
        laps = ", ".join(f"{t:.2f} s" for t in s["lap_times_s"])
        lines.append(f"sim {s['track']}: {s['laps']} lap(s){f' ({laps})' if laps else ''}, "
                     f"{s['off_track_events']} off-track event(s), {s['resets']} reset(s)")
    if "mcu" in summary:
        m = summary["mcu"]
        battery = f", battery {m['battery_v']:.2f} V" if m["battery_v"] is not None else ""
        lines.append(f"mcu {m['port']} ({m['firmware']}): {m['sent']} frames sent, "
                     f"{m['telemetry']} telemetry{battery}, {m['losses']} link loss(es), "
                     f"{m['reconnects']} reconnect(s), {sum(m['rx_dropped'].values())} bad "
                     "frame(s) received")
    if "record" in summary:
        r = summary["record"]
        dropped = f", {r['dropped']} DROPPED (disk too slow)" if r["dropped"] else ""
        lines.append(f"recorded {r['written']} records into {r['path']}{dropped}")
    return "\n".join(lines)
