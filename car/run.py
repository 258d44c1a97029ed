"""One way to assemble a run of the drive loop, for the CLI and for Python.

A ``RunSpec`` describes the run in plain values. A ``Run`` opens the pilot first (a bad
model fails before anything else opens), then every device behind its Protocol: the world
or the camera, the actuator, the recorder, the controller; it closes them in reverse order
whatever fails. ``Run.drive()`` ticks the loop through the one runner (``car.runner``) and
returns the summary, which gains the recorder's figures when the run closes. ``drive(spec)``
does all of it::

    from car.run import RunSpec, drive

    summary = drive(RunSpec(sim="diyrobocars", model="pilot.onnx", mode="local",
                            duration_s=5))
    print(summary["hz"], summary["sim"]["laps"], summary["latency_ms"]["infer"]["p99"])

`car drive` and `car record` only turn their flags into a RunSpec and print the summary.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from car.config import Config, load_config
from car.controllers import Controller
from car.devices import (
    ACTUATORS,
    Input,
    Motors,
    Report,
    check_watchdog_fits,
    check_web_settings,
    open_actuator,
    open_controller,
    open_frames,
    open_recorder,
    open_world,
    report_to_stderr,
)
from car.errors import CarError
from car.frames import Mode
from car.health import Health
from car.loop import MAX_RATE_HZ, MIN_RATE_HZ, DriveLoop, Ratekeeper, TickResult
from car.modes import Arbiter
from car.pilot import check_frame_size, open_pilot
from car.recorder import DriveRecorder
from car.reload import ModelWatcher
from car.runner import Rules, Runner
from car.sim.donkey.link import is_donkey_address
from car.sim.tracks import DEFAULT_TRACK
from car.status import LoopStatus
from car.world import World
from deploy.engine import Engine


@dataclass(frozen=True)
class RunSpec:
    """A run in plain values; None means "as car.toml says" (or the obvious default)."""

    model: str | None = None  # pilot.onnx / .trt / .pt2 with its manifest; None: no pilot
    provider: str | None = None  # ONNX Runtime provider (tensorrt, cuda, cpu) or torch device
    mode: str | None = None  # user, local_angle or local; None: drive.start_mode
    sim: str | None = None  # a track of the embedded simulator, or donkey://HOST:PORT
    scene: str | None = None  # with a donkey simulator: the scene to load
    seed: int = 0  # the embedded simulator's seed
    randomize: bool = False  # the embedded simulator: a new look every lap
    camera: str | None = None  # usb:N, csi[:N], gst:..., replay:TUB, sim; None: camera.source
    actuator: str | None = None  # sim, serial or dry; None: sim in a simulator, else
    # actuator.driver (dry for a replayed tub)
    port: str | None = None  # the MCU's serial port; None: actuator.port
    controller: str | Controller = "none"  # web, gamepad, rc, none, or a Controller
    record: str | None = None  # a tub folder to record into
    auto_record: bool = False  # keep only ticks with |throttle| > record.auto_record_throttle
    session_info: Mapping[str, Any] | None = None  # stored with the tub's new session
    rate_hz: float | None = None  # None: drive.rate_hz
    duration_s: float | None = None
    laps: int | None = None  # in a simulator
    hot_reload: bool | None = None  # None: drive.hot_reload


@dataclass(frozen=True)
class Plan:
    """What a RunSpec resolves to, checked before anything is opened."""

    hz: float
    mode: Mode
    world: str | None  # the simulator to open, or None: a camera
    camera: str
    actuator: str
    controller: str | Controller


def plan(spec: RunSpec, config: Config) -> Plan:
    """Resolve the defaults and refuse what cannot work, in one line each."""
    hz = spec.rate_hz or config.drive.rate_hz
    if not MIN_RATE_HZ <= hz <= MAX_RATE_HZ:
        raise CarError(f"loop rate {hz:g} Hz is out of range; the loop runs at "
                       f"{MIN_RATE_HZ:g} to {MAX_RATE_HZ:g} Hz")
    try:
        mode = Mode(spec.mode or config.drive.start_mode)
    except ValueError:
        raise CarError(f"mode {spec.mode!r}: use user, local_angle or local") from None
    camera = spec.camera or config.camera.source
    world = spec.sim or (DEFAULT_TRACK if camera == "sim" else None)
    donkey = is_donkey_address(world)
    if spec.scene is not None and not donkey:
        raise CarError("--scene picks a scene of a donkey simulator: add --sim "
                       "donkey://HOST:PORT")
    if donkey and spec.randomize:
        raise CarError("--randomize changes the embedded simulator's look; a donkey "
                       "simulator draws its own")
    if spec.laps and world is None:
        raise CarError("--laps needs --sim; on the car, stop with --duration or Ctrl-C")
    # A replayed tub never moves the motors unless asked to.
    actuator = spec.actuator or ("sim" if world else "dry" if camera.startswith("replay:")
                                 else config.actuator.driver)
    if actuator not in ACTUATORS:
        raise CarError(f"unknown actuator {actuator!r}; use one of {', '.join(ACTUATORS)}")
    if actuator == "sim" and world is None:
        raise CarError("--actuator sim needs --sim")
    if actuator == "serial":
        check_watchdog_fits(config.actuator.timeout_ms, hz)
    if spec.controller == "web":
        check_web_settings(config.web, hz)
    if spec.controller == "rc" and actuator != "serial":
        raise CarError("--controller rc reads the transmitter through the MCU: add "
                       "--actuator serial")
    if mode is not Mode.USER and spec.model is None:
        raise CarError(f"mode {mode.value} needs a model: give one, or drive in user mode")
    return Plan(hz, mode, world, camera, actuator, spec.controller)


class Run:
    """The devices, the pilot and the loop of one run; a context manager."""

    def __init__(self, spec: RunSpec, config: Config | None = None,
                 report: Report = report_to_stderr):
        self.spec = spec
        self.config = config if config is not None else load_config()
        self.plan = plan(spec, self.config)
        self.report = report
        self.engine: Engine | None = None
        self.world: World | None = None
        self.health: list[Health] = []  # the devices' reports, after drive()
        self.recorder: DriveRecorder | None = None
        self.summary: dict[str, Any] | None = None
        self.runner: Runner | None = None  # while drive() runs, and after
        self._stack = contextlib.ExitStack()
        self._record_stats: list[Any] = []

    def __enter__(self) -> Run:
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()  # reverse order: watcher, controller, recorder, actuator, ...
        if self.summary is not None and self.recorder is not None and self._record_stats:
            s = self._record_stats[0]
            self.summary["record"] = {"path": str(self.recorder.path), "written": s.written,
                                      "dropped": s.dropped, "erased": self.loop.erased}

    def _open(self) -> None:
        spec, config, p, stack = self.spec, self.config, self.plan, self._stack
        threads = config.drive.inference_threads or None  # None: ONNX Runtime's default
        if spec.model is not None:
            self.engine = open_pilot(spec.model, spec.provider, threads=threads,
                                     rate_hz=p.hz)
            stack.callback(self.engine.close)
        if p.world is not None:
            self.world = open_world(p.world, spec.scene, config, 1.0 / p.hz, seed=spec.seed,
                                    randomize=spec.randomize)
            stack.callback(self.world.close)
            camera = self.world.camera
        else:
            camera = open_frames(p.camera, config)
            stack.callback(camera.close)
        self.camera = camera
        if self.engine is not None:
            check_frame_size(self.engine, *camera.size)
        self.motors: Motors = open_actuator(p.actuator, config, spec.port, self.world,
                                            self.report)
        stack.callback(self.motors.actuator.close)
        if spec.record is not None:
            recorder = open_recorder(spec.record, config, self.world, spec.session_info)
            self.recorder = recorder
            stack.callback(lambda: self._record_stats.append(recorder.close()))
        self.arbiter = Arbiter(config.drive, p.hz, p.mode)
        if self.motors.estop_latched:
            self.arbiter.estop()
        self.input: Input = open_controller(p.controller, config, p.mode,
                                            self.motors.rc_source, self.report, 1.0 / p.hz)
        stack.callback(self.input.controller.close)
        self.loop = DriveLoop(camera, self.motors.actuator, self.input.controller,
                              self.arbiter, self.engine, recorder=self.recorder,
                              clock=self.world.clock if self.world else time.monotonic)
        loop = self.loop
        if self.engine is not None:  # the engine driving at the end (a reload swaps it)
            stack.callback(lambda: loop.engine.close() if loop.engine is not None else None)
        if spec.auto_record:
            self.loop.auto_record_throttle = config.record.auto_record_throttle
        self.status = LoopStatus(self.loop, self.motors.actuator, world=self.world,
                                 resets=self._resets)
        hot = config.drive.hot_reload if spec.hot_reload is None else spec.hot_reload
        if self.engine is not None and hot:
            size = camera.size

            def reload(path: Any) -> Engine:  # a model for other frames, or too slow for
                return open_pilot(path, spec.provider, frame_size=size,  # the rate, never
                                  threads=threads, rate_hz=p.hz)  # takes over

            watcher = ModelWatcher(spec.model, reload, self.loop.swap_engine).start()
            stack.callback(watcher.stop)

    def _resets(self) -> int:
        """The times the car was put back on the track so far (the page's status)."""
        return self.runner.resets if self.runner is not None else 0

    def describe(self) -> str:
        """Where it runs, for the start line: the world, and the motors when they are not
        the world's own."""
        where = f" on {self.world.name}" if self.world else ""
        if self.plan.actuator in ("serial", "pca9685"):
            where += f", motors through {self.motors.actuator.describe()}"
            where += " (hardware in the loop)" if self.world else ""
        return where

    def drive(self, should_stop: Callable[[], bool] = lambda: False,
              on_tick: Callable[[TickResult], None] | None = None) -> dict[str, Any]:
        """Tick until ``should_stop()``, the spec's duration or laps, the end of a replay or
        a failed device; the outputs end neutral. ``on_tick`` sees every tick's result (a
        progress display). Returns the summary (its ``record`` section is added when the run
        closes)."""
        spec, world = self.spec, self.world
        keeper = Ratekeeper(self.plan.hz)
        hooks = [] if on_tick is None else [on_tick]
        publish = self.input.publish
        if publish is not None:

            def feed_page(result: TickResult) -> None:
                publish(result, self.status.snapshot(result))

            hooks.append(feed_page)
        rules = Rules(laps=spec.laps, duration_s=spec.duration_s)
        self.runner = Runner(self.loop, keeper, world, rules, hooks)
        outcome = self.runner.run(should_stop, watchdog=True)
        elapsed = time.monotonic() - keeper.start_s
        summary = self.loop.summary(keeper)
        summary["stop_reason"] = outcome.reason
        summary["elapsed_s"] = round(elapsed, 3)
        if world is not None:
            st = world.status
            summary["sim"] = {"track": world.name, "laps": st.lap,
                              "lap_times_s": [round(t, 3) for t in st.lap_times_s],
                              "off_track_events": st.off_track_events,
                              "resets": len(outcome.interventions)}
        self.health = [h for h in (world.health() if world else None,
                                   self.motors.actuator.health()) if h is not None]
        for h in self.health:
            summary[h.key] = h.data
        if self.input.counters is not None:
            summary["web"] = self.input.counters()
        self.summary = summary
        return summary


def drive(spec: RunSpec, config: Config | None = None,
          should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Open the run, drive it, close it; the summary, with the recorder's figures."""
    with Run(spec, config) as run:
        summary = run.drive(should_stop)
    return summary
