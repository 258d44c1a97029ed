"""One run of the drive loop, shared by `car drive` and `car record`: open the camera (or the
simulator), the actuator, the controller and the recorder; run the loop until a stop; close
everything in reverse; return the summary.

Controllers: ``web`` (the page, `car/controllers/web`), ``gamepad``, ``rc`` (the transmitter
through the MCU) or ``none`` (a fixed input: the pilot alone). The web page also gets every
frame and the loop's status.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass
from typing import Any

from calibration.camera import maybe_undistort
from car.actuator import Actuator, DryRunActuator
from car.camera import Camera, open_camera
from car.commands import CtrlC, bounded
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
from car.sim.donkey.link import is_donkey_address
from car.status import LoopStatus
from deploy.engine import Engine

DEFAULT_TRACK = "diyrobocars"
WATCHDOG_PERIODS = 2.5  # the MCU's timeout must span this many loop periods
CONTROLLERS = ("web", "gamepad", "rc", "none")
SIM_RECORD_FIELDS = (("sim/cte", "float"), ("sim/speed", "float"), ("sim/x", "float"),
                     ("sim/y", "float"), ("sim/yaw", "float"), ("sim/lap", "int"))


def add_device_options(p: argparse.ArgumentParser, *, controller_help: str) -> None:
    """The options `car drive` and `car record` share: where frames come from, where
    commands go, who the user is, and when to stop."""
    p.add_argument("--sim", nargs="?", const=DEFAULT_TRACK, metavar="TRACK",
                   help=f"drive the embedded simulator on TRACK (default {DEFAULT_TRACK}), or "
                        "a donkey simulator (the Unity sim, or `car sim serve`) at "
                        "donkey://HOST:PORT")
    p.add_argument("--scene", help="with --sim donkey://...: the scene to load (default: the "
                   "simulator's first)")
    p.add_argument("--camera", metavar="SPEC",
                   help="usb:INDEX, csi[:SENSOR], gst:PIPELINE or replay:TUB "
                        "(default: camera.source in car.toml)")
    p.add_argument("--hz", type=bounded(float, 1.0, 200.0),
                   help="loop rate, 1 to 200 Hz (default: drive.rate_hz)")
    p.add_argument("--actuator", choices=("sim", "serial", "dry"),
                   help="where commands go: sim (the default with --sim), serial (the MCU; "
                        "with --sim, hardware in the loop: the simulated car follows the "
                        "pulses the MCU reports) or dry (nowhere). Default off the simulator: "
                        "actuator.driver")
    p.add_argument("--port", help="serial port of the MCU (default: actuator.port)")
    p.add_argument("--controller", choices=CONTROLLERS, help=controller_help)
    p.add_argument("--duration", type=bounded(float, 0.1, 1e6), metavar="S",
                   help="stop after S seconds")
    p.add_argument("--seed", type=bounded(int, 0, 2**63 - 1), default=0,
                   help="simulator seed (default 0)")
    p.add_argument("--randomize", action="store_true", help="simulator: a new look every lap")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


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


@dataclass
class Plan:
    """What a run uses, decided from the flags before anything is opened."""

    hz: float
    camera_spec: str
    use_sim: bool
    driver: str  # sim, serial or dry
    controller: str


def plan(args: argparse.Namespace, config: Config, default_controller: str) -> Plan:
    hz = loop_rate(args, config)
    spec = args.camera or config.camera.source
    use_sim = args.sim is not None or spec == "sim"
    donkey = is_donkey_address(args.sim)
    if args.scene is not None and not donkey:
        raise CarError("--scene picks a scene of a donkey simulator: add --sim "
                       "donkey://HOST:PORT")
    if donkey and args.randomize:
        raise CarError("--randomize changes the embedded simulator's look; a donkey "
                       "simulator draws its own")
    # A replayed tub never moves the motors unless asked to.
    default = "sim" if use_sim else "dry" if spec.startswith("replay:") else \
        config.actuator.driver
    driver = args.actuator or default
    if driver == "sim" and not use_sim:
        raise CarError("--actuator sim needs --sim")
    if driver == "serial":
        check_watchdog_fits(config.actuator.timeout_ms, hz)
    controller = args.controller or default_controller
    if controller == "rc" and driver != "serial":
        raise CarError("--controller rc reads the transmitter through the MCU: add "
                       "--actuator serial")
    return Plan(hz, spec, use_sim, driver, controller)


class Session:
    """The devices and the loop of one run; use as a context manager."""

    def __init__(self, args: argparse.Namespace, config: Config, plan: Plan, *, mode: Mode,
                 engine: Engine | None = None, record_path: str | None = None,
                 session_info: dict[str, Any] | None = None):
        self.args = args
        self.config = config
        self.plan = plan
        self.mode = mode
        self.engine = engine
        self.stack = contextlib.ExitStack()
        self.sim_link: Any = None
        self.web: Any = None
        self.record_stats: list[Any] = []
        self.resets = 0
        self._record_path = record_path
        self._session_info = session_info or {}

    def __enter__(self) -> Session:
        try:
            self._open()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()  # reverse order: controller, recorder, actuator, camera

    def _open(self) -> None:
        config, plan = self.config, self.plan
        camera: Camera
        if plan.use_sim:
            self.sim_link = _sim_link(self.args, config, 1.0 / plan.hz)
            self.stack.callback(self.sim_link.close)
            camera = self.sim_link.camera
        else:
            c = config.camera
            camera = open_camera(plan.camera_spec, c.width, c.height, c.fps)
            self.stack.callback(camera.close)
            if not plan.camera_spec.startswith("replay:"):  # a tub holds processed frames
                camera = maybe_undistort(camera, config.lens)
        self.camera = camera
        self.actuator = self._actuator()
        self.stack.callback(self.actuator.close)
        self.recorder = self._recorder() if self._record_path else None
        if self.recorder is not None:
            recorder = self.recorder
            self.stack.callback(lambda: self.record_stats.append(recorder.close()))
        self.arbiter = Arbiter(config.drive, plan.hz, self.mode)
        actuator = self.actuator
        if isinstance(actuator, SerialActuator) and actuator.latched_at_connect:
            self.arbiter.estop()
            print(f"car: warning: the MCU on {actuator.link.port} has an e-stop latched from an "
                  "earlier session: the car stays neutral until the e-stop is cleared (`car "
                  f"mcu status --port {actuator.link.port} --clear-estop`)", file=sys.stderr)
        self.controller = self._controller()
        self.loop = DriveLoop(camera, actuator, self.controller, self.arbiter, self.engine,
                              recorder=self.recorder,
                              clock=self.sim_link.clock if self.sim_link else time.monotonic)
        self.status = LoopStatus(self.loop, actuator)

    def _actuator(self) -> Actuator:
        """The simulator's actuator, the MCU (steering the simulated car with the pulses the
        MCU reports applying, when there is a simulator), or a dry run."""
        sim_link = self.sim_link
        if self.plan.driver == "sim":
            return sim_link.actuator  # type: ignore[no-any-return]
        if self.plan.driver == "dry":
            print("car: note: dry run: commands are computed and timed but sent nowhere",
                  file=sys.stderr)
            return DryRunActuator()
        actuator = SerialActuator.connect(self.config, self.args.port)
        if sim_link is not None:
            pulses = actuator.pulses

            def follow_mcu(t: Telemetry) -> None:  # on the link's reader thread
                sim_link.actuator.send(Command(pulses.steering.from_us(t.applied_steering_us),
                                               pulses.throttle.from_us(t.applied_throttle_us)))

            actuator.link.on_telemetry.append(follow_mcu)
        return actuator

    def _controller(self) -> Controller:
        kind, config = self.plan.controller, self.config
        if kind == "rc":
            assert isinstance(self.actuator, SerialActuator)
            return RcController(self.actuator, self.actuator.pulses, self.mode)
        if kind == "gamepad":
            from car.controllers.gamepad import GamepadController

            pad = GamepadController(config.gamepad, erase_count=config.record.erase_count,
                                    start_mode=self.mode)
            self.stack.callback(pad.close)
            return pad
        if kind == "web":
            from car.controllers.web import WebController

            web = WebController(config.web, start_mode=self.mode,
                                erase_count=config.record.erase_count)
            url = web.start()
            self.stack.callback(web.close)
            self.web = web
            print(f"web controller: open {url}", file=sys.stderr)
            return web
        return ScriptedController(self.mode)

    def _recorder(self) -> DriveRecorder:
        extras = None
        fields: tuple[tuple[str, str], ...] = ()
        sim_link = self.sim_link
        if sim_link is not None:
            fields = SIM_RECORD_FIELDS

            def extras() -> dict[str, Any]:
                st = sim_link.status
                return {"sim/cte": st.cte_m, "sim/speed": st.speed_mps, "sim/x": st.x,
                        "sim/y": st.y, "sim/yaw": st.yaw, "sim/lap": st.lap}
        assert self._record_path is not None
        return DriveRecorder(self._record_path, self.config.record, extra_fields=fields,
                             extras=extras, session_info=self._session_info)

    def describe(self) -> str:
        """Where it runs, for the start line."""
        where = f" on {self.sim_link.name}" if self.sim_link else ""
        if isinstance(self.actuator, SerialActuator):
            where += f", motors through the MCU on {self.actuator.link.port}"
            where += " (hardware in the loop)" if self.sim_link else ""
        return where

    def run(self, laps: int | None = None, duration_s: float | None = None) -> dict[str, Any]:
        """Tick until Ctrl-C, ``duration_s``, ``laps`` (simulator) or a failed device; the
        summary (call after leaving the context for the recorder's figures)."""
        hz, loop, sim_link = self.plan.hz, self.loop, self.sim_link
        keeper = Ratekeeper(hz)
        deadline = keeper.start_s + duration_s if duration_s else None
        actuator = self.actuator

        def on_tick(result: TickResult) -> bool:
            if self.web is not None:
                self.web.publish(result.frame, self.status.snapshot(result))
            if sim_link is not None:
                if sim_link.lost():  # put the car back
                    sim_link.put_back()
                    if loop.engine is not None:
                        loop.engine.reset()
                    self.resets += 1
                if laps is not None and sim_link.status.lap >= laps:
                    return True
                if isinstance(actuator, SerialActuator) and actuator.link.telemetry_age_s() \
                        > self.config.actuator.timeout_ms / 1000.0:
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
            summary["sim"] = {"track": sim_link.name, "laps": st.lap,
                              "lap_times_s": [round(t, 3) for t in st.lap_times_s],
                              "off_track_events": st.off_track_events, "resets": self.resets}
            if hasattr(sim_link, "health"):  # a donkey simulator's link
                summary["donkey"] = sim_link.health()
        if isinstance(actuator, SerialActuator):
            summary["mcu"] = actuator.health()
        return summary

    def add_record_summary(self, summary: dict[str, Any]) -> None:
        """The recorder's figures, once it is closed (after the ``with`` block)."""
        if self.recorder is not None and self.record_stats:
            s = self.record_stats[0]
            summary["record"] = {"path": str(self.recorder.path), "written": s.written,
                                 "dropped": s.dropped, "erased": self.loop.erased}


def exit_code(reason: str) -> int:
    return 1 if reason.startswith("device failed") else (130 if reason == "interrupted" else 0)


def _sim_link(args: argparse.Namespace, config: Config, period_s: float) -> Any:
    """The embedded simulator, or a donkey simulator at ``--sim donkey://HOST:PORT``."""
    from car.commands.sim import load_track_for
    from car.sim.donkey.link import DonkeyLink
    from car.sim.link import SimLink
    from car.sim.world import Simulator

    if is_donkey_address(args.sim):
        size = (config.camera.width, config.camera.height)
        return DonkeyLink.open(args.sim, args.scene, size, period_s)
    track = load_track_for(args.sim or DEFAULT_TRACK, config)
    sim = Simulator(track, config.sim, width=config.camera.width, height=config.camera.height,
                    seed=args.seed, randomize=args.randomize)
    return SimLink(sim, period_s, lockstep=False)


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable summary `car drive` and `car record` print on exit."""
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
    if "donkey" in summary:
        from car.sim.donkey.link import describe_health

        lines.append(describe_health(summary["donkey"]))
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
        erased = f", {r['erased']} erased (restorable)" if r.get("erased") else ""
        lines.append(f"recorded {r['written']} records into {r['path']}{dropped}{erased}")
    return "\n".join(lines)
