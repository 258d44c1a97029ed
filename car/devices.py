"""Opening the devices of a run, each behind its Protocol: the world or the camera, the
actuator, the controller and the recorder. ``car.run`` calls these in order and closes
what they return in reverse; this module is the one place that knows the concrete classes.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from car.actuator import Actuator, DryRunActuator
from car.camera import Camera, open_camera
from car.config import Config, WebConfig
from car.controllers import Controller, ScriptedController
from car.errors import CarError
from car.frames import Mode
from car.lens import maybe_undistort
from car.loop import TickResult
from car.mcu.actuator import SerialActuator
from car.pwm.actuator import Pca9685Actuator
from car.recorder import DriveRecorder
from car.sim.donkey.link import is_donkey_address
from car.world import World

Report = Callable[[str], None]
WATCHDOG_PERIODS = 2.5  # the MCU's timeout must span this many loop periods
PAGE_SEND_MS = 40  # the web page sends a control this often (static/app.js SEND_MS)
CONTROLLERS = ("web", "gamepad", "rc", "none")
ACTUATORS = ("sim", "serial", "pca9685", "dry")
SIM_RECORD_FIELDS = (("sim/cte", "float"), ("sim/speed", "float"), ("sim/x", "float"),
                     ("sim/y", "float"), ("sim/yaw", "float"), ("sim/lap", "int"))


def report_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def open_world(sim: str, scene: str | None, config: Config, period_s: float, *, seed: int = 0,
               randomize: bool = False, lockstep: bool = False, max_cte: float = 8.0
               ) -> World:
    """The embedded simulator on track ``sim``, or a donkey simulator at
    ``donkey://HOST:PORT`` (``scene`` picks its scene; |cte| over ``max_cte`` is a
    departure)."""
    size = (config.camera.width, config.camera.height)
    if is_donkey_address(sim):
        from car.sim.donkey.link import DonkeyLink

        return DonkeyLink.open(sim, scene, size, period_s, lockstep=lockstep, max_cte=max_cte)
    from car.sim.link import SimLink
    from car.sim.tracks import load_track_for

    return SimLink.on_track(load_track_for(sim, config), config, period_s, lockstep=lockstep,
                            seed=seed, randomize=randomize)


def open_frames(spec: str, config: Config) -> Camera:
    """The car's camera by spec (usb:, csi, gst:, replay:), undistorted when ``[lens]`` says
    so (a tub holds frames that were undistorted when recorded)."""
    c = config.camera
    camera = open_camera(spec, c.width, c.height, c.fps)
    if spec.startswith("replay:"):
        return camera
    try:
        return maybe_undistort(camera, config.lens)
    except BaseException:
        camera.close()
        raise


def check_watchdog_fits(timeout_ms: int, hz: float) -> None:
    """The MCU must not fail safe between two ticks of a healthy loop."""
    if timeout_ms < WATCHDOG_PERIODS * 1000.0 / hz:
        raise CarError(f"actuator.timeout_ms = {timeout_ms} is shorter than "
                       f"{WATCHDOG_PERIODS:g} loop periods at {hz:g} Hz "
                       f"({WATCHDOG_PERIODS * 1000.0 / hz:.0f} ms): the MCU would fail safe "
                       "between ticks; raise actuator.timeout_ms or the loop rate")


def check_web_settings(web: WebConfig, hz: float) -> None:
    """Before anything opens: a token long enough, and a failsafe the page's controls
    (every PAGE_SEND_MS) can keep fresh for a whole loop period."""
    from car.controllers.web.controller import check_token

    check_token(web.token)
    failsafe_ms = web.failsafe_ms
    need = math.ceil(1000.0 / hz + 2 * PAGE_SEND_MS)
    if failsafe_ms < need:
        raise CarError(f"web.failsafe_ms = {failsafe_ms} is too short for a {hz:g} Hz loop: "
                       f"a command lasts {1000.0 / hz:.0f} ms and the page sends every "
                       f"{PAGE_SEND_MS} ms; set web.failsafe_ms to {need} or more, or raise "
                       "--hz")


@dataclass
class Motors:
    """The actuator, and what a run needs from the MCU when it is one: its telemetry for
    the rc controller, and whether it started with an e-stop latched."""

    actuator: Actuator
    rc_source: SerialActuator | None = None
    estop_latched: bool = False


def open_actuator(kind: str, config: Config, port: str | None, world: World | None,
                  report: Report) -> Motors:
    """``sim``: the world's own actuator; ``serial``: the MCU (with a world, hardware in the
    loop: the simulated car follows the pulses the MCU reports applying); ``pca9685``: the
    I2C PWM board (with a world, the car follows the pulses read back from the board);
    ``dry``: nowhere."""
    if kind == "sim":
        if world is None:
            raise CarError("--actuator sim needs --sim")
        return Motors(world.actuator)
    if kind == "dry":
        report("car: note: dry run: commands are computed and timed but sent nowhere")
        return Motors(DryRunActuator())
    if kind == "pca9685":
        board = Pca9685Actuator.connect(config)
        if world is not None:
            board.follow(world.actuator)
        report(f"car: note: {board.describe()} has no watchdog of its own: if this process "
               "is killed the car keeps its last pulse (docs/pca9685.md)")
        return Motors(board)
    mcu = SerialActuator.connect(config, port)
    if world is not None:
        mcu.follow(world.actuator)
    if mcu.latched_at_connect:
        report(f"car: warning: the MCU on {mcu.link.port} has an e-stop latched from an "
               "earlier session: the car stays neutral until the e-stop is cleared (`car mcu "
               f"status --port {mcu.link.port} --clear-estop`)")
    return Motors(mcu, rc_source=mcu, estop_latched=mcu.latched_at_connect)


@dataclass
class Input:
    """The controller, a hook that feeds the web page every tick (``publish``), and the
    page server's counters for the summary (``counters``)."""

    controller: Controller
    publish: Callable[[TickResult, dict[str, Any]], None] | None = None
    counters: Callable[[], dict[str, int]] | None = None


def open_controller(kind: str | Controller, config: Config, mode: Mode,
                    rc_source: SerialActuator | None, report: Report,
                    period_s: float = 0.0) -> Input:
    """``web`` (the page), ``gamepad``, ``rc`` (the transmitter through the MCU), ``none``
    (a fixed input: the pilot alone), or a Controller object the caller made. ``period_s``:
    the loop's period (the web failsafe counts the time a polled input stays in force)."""
    if not isinstance(kind, str):
        return Input(kind)
    if kind == "rc":
        if rc_source is None:
            raise CarError("--controller rc reads the transmitter through the MCU: add "
                           "--actuator serial")
        from car.controllers.rc import RcController

        return Input(RcController(rc_source, rc_source.pulses, mode))
    if kind == "gamepad":
        from car.controllers.gamepad import GamepadController

        return Input(GamepadController(config.gamepad, erase_count=config.record.erase_count,
                                       start_mode=mode))
    if kind == "web":
        from car.controllers.web import WebController

        web = WebController(config.web, start_mode=mode, erase_count=config.record.erase_count,
                            period_s=period_s)
        try:
            url = web.start()
        except BaseException:
            web.close()
            raise
        report(f"web controller: open {url}")
        return Input(web, publish=lambda result, status: web.publish(result.frame, status),
                     counters=lambda: web.stats)
    if kind == "none":
        return Input(ScriptedController(mode))
    raise CarError(f"unknown controller {kind!r}; use one of {', '.join(CONTROLLERS)}")


def open_recorder(path: str, config: Config, world: World | None,
                  session_info: Mapping[str, Any] | None) -> DriveRecorder:
    """The drive recorder, with the world's ground truth beside each record."""
    fields: tuple[tuple[str, str], ...] = ()
    extras = None
    if world is not None:
        fields = SIM_RECORD_FIELDS

        def extras() -> dict[str, Any]:
            st = world.status
            return {"sim/cte": st.cte_m, "sim/speed": st.speed_mps, "sim/x": st.x,
                    "sim/y": st.y, "sim/yaw": st.yaw, "sim/lap": st.lap}
    return DriveRecorder(path, config.record, extra_fields=fields, extras=extras,
                         session_info=session_info)
