"""The simulator side of one donkey-protocol connection, without sockets: messages in, messages
out (docs/donkey-protocol.md). `car sim serve` (``server.py``) puts it behind TCP.

A connection starts in the menu (``scene_selection_ready``); ``load_scene`` puts one car on
that scene's track (``car_loaded``), after which telemetry flows:

- **real time**: every telemetry period the world catches up with the clock and a frame
  goes out; controls act when they arrive (after the simulated actuation delay);
- **lock-step** (``--lockstep``, or a client's ``step_mode`` ``synchronous``): the world
  stands still until a ``control`` arrives, then runs one time step and answers with one
  telemetry. ``car_loaded``, ``reset_car`` and ``set_position`` are answered with one too,
  so a client waiting for a frame always gets one.

Events: ``hit`` is ``"off_track"`` in the telemetry where the car has just left the track
(|cte| over half the width: what `car sim eval` counts as an intervention). The car starts
on the start line; its first control with throttle after a load or reset starts the lap
timer with a ``collision_with_starting_line`` (gym-donkeycar counts laps from these), and
each lap sends another, with a ``cross_start`` carrying the lap time.
"""

from __future__ import annotations

import base64
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import cv2
import numpy as np

from car.config import SimConfig
from car.sim.donkey import messages as m
from car.sim.donkey.wire import number
from car.sim.track import Track
from car.sim.world import SimStatus, Simulator

log = logging.getLogger(__name__)
Clock = Callable[[], float]
Message = dict[str, Any]


@dataclass
class ServeOptions:
    """How the served simulator behaves for every client."""

    width: int = 160
    height: int = 120
    hz: float = 20.0  # telemetry per simulated second; also the lock-step time step
    lockstep: bool = False
    jpeg_quality: int = 90
    seed: int = 0
    randomize: bool = False


@dataclass
class SessionCounts:
    controls: int = 0
    frames: int = 0
    laps: int = 0
    invalid: int = 0  # known messages with values that cannot be used
    unknown: Counter = field(default_factory=Counter)  # msg_type → count


class ServerSession:
    """One client's view of the simulator. ``handle`` answers each message; ``due`` gives the
    real-time telemetry whose time has come."""

    def __init__(self, scenes: dict[str, Track], sim_config: SimConfig,
                 options: ServeOptions, clock: Clock = time.monotonic):
        self.scenes = scenes
        self.sim_config = sim_config
        self.options = options
        self.clock = clock
        self.lockstep = options.lockstep
        self.time_step_s = 1.0 / options.hz
        self.sim: Simulator | None = None
        self.scene: str | None = None
        self.encoding = "JPG"
        self.size = (options.width, options.height)
        self.counts = SessionCounts()
        self.errors: list[str] = []
        self.quit = False  # the client asked the simulator to quit
        self.next_due: float | None = None  # real time: when the next telemetry goes out
        self._origin = 0.0  # real time: simulated time = clock - origin
        self._throttle = 0.0  # the requested throttle, as the Unity sim reports it
        self._last: tuple[float, float, float] | None = None  # time, vx, vy for accel
        self._was_off = False
        self._laps = 0
        self._lap_started = False
        self._lap_end_s = 0.0  # when the last lap ended (or the timer started)
        self._events: list[Message] = []  # to go out before the next telemetry

    # -- messages in ------------------------------------------------------------------------

    def start(self) -> list[Message]:
        return [{"msg_type": "scene_selection_ready", "loaded": "1"}]

    def handle(self, message: Message) -> list[Message]:
        kind = message["msg_type"]
        handler = self._HANDLERS.get(kind)
        if handler is None:
            self.counts.unknown[kind] += 1
            if self.counts.unknown[kind] == 1:
                self._error(f"unknown msg_type {kind!r}: ignored (and counted)")
            return []
        return handler(self, message)

    def _get_protocol_version(self, message: Message) -> list[Message]:
        return [{"msg_type": "protocol_version", "version": m.PROTOCOL_VERSION}]

    def _get_scene_names(self, message: Message) -> list[Message]:
        return [{"scene_names": list(self.scenes), "msg_type": "scene_names"}]

    def _load_scene(self, message: Message) -> list[Message]:
        name = message.get("scene_name")
        if not isinstance(name, str) or name not in self.scenes:  # a list or dict: unhashable
            self._error(f"load_scene {name!r}: no such scene; this simulator has "
                        f"{', '.join(self.scenes)}")
            return [{"msg_type": "error", "error": self.errors[-1]}]
        o = self.options
        sim = Simulator(self.scenes[name], self.sim_config, width=self.size[0],
                        height=self.size[1], seed=o.seed, randomize=o.randomize)
        sim.renderer  # build it now, not in the first frame's time  # noqa: B018
        # One physics tick at rest, so the clock never reads 0 when a lap starts: gym-donkeycar
        # takes a crossing at time 0 for "no lap started yet" (Unity's clock is past 0 too).
        sim.run_until(1.0 / sim.params.physics_hz)
        self.sim, self.scene = sim, str(name)
        log.info("scene %s loaded (%s)", name, "lock-step" if self.lockstep else "real time")
        self._restart()
        return [{"msg_type": "car_loaded"}, *self._frame_if_lockstep()]

    def _exit_scene(self, message: Message) -> list[Message]:
        self.sim = self.scene = None
        self.next_due = None
        return self.start()

    def _quit_app(self, message: Message) -> list[Message]:
        self.quit = True
        return []

    def _car_config(self, message: Message) -> list[Message]:
        log.info("car_config: %s", {k: v for k, v in message.items() if k != "msg_type"})
        return []

    def _racer_info(self, message: Message) -> list[Message]:
        log.info("racer_info: %s", {k: v for k, v in message.items() if k != "msg_type"})
        return []

    def _cam_config(self, message: Message) -> list[Message]:
        request = m.parse_cam_config(message, self.encoding)
        if isinstance(request, str):
            self._error(request)
            return []
        if request.ignored:
            log.warning("cam_config %s ignored: the embedded camera's lens and mount are set "
                        "in [sim] of car.toml", ", ".join(request.ignored))
        self.encoding = request.encoding
        if request.width is not None and request.height is not None:
            self.size = (request.width, request.height)
            if self.sim is not None:
                self.sim.resize(*self.size)
        return []

    def _control(self, message: Message) -> list[Message]:
        if self.sim is None:
            return self._no_scene("control")
        c = m.parse_control(message)
        if isinstance(c, str):
            self._error(c)
            return []
        self.counts.controls += 1
        self._catch_up()
        if not self._lap_started and c.throttle > 0.0 and c.brake == 0.0:
            self._start_lap()
        self.sim.command(c.steering, c.throttle, brake=c.brake)
        self._throttle = c.throttle
        if not self.lockstep:
            return []
        self.sim.run_until(self.sim.time_s + self.time_step_s)
        return self._telemetry()

    def _step_mode(self, message: Message) -> list[Message]:
        mode = str(message.get("step_mode", ""))
        step = number(message.get("time_step", self.time_step_s), math.nan)
        if not 0.001 <= step <= 1.0:
            self._error(f"step_mode time_step {message.get('time_step')!r}: must be from "
                        "0.001 to 1 s; unchanged")
            return []
        self.time_step_s = step
        was, self.lockstep = self.lockstep, mode == "synchronous" or self.options.lockstep
        if self.sim is not None and was and not self.lockstep:
            self._origin = self.clock() - self.sim.time_s  # real time resumes from here
            self.next_due = self.clock()
        log.info("step mode %s, time step %g s", "lock-step" if self.lockstep else "real time",
                 step)
        return self._frame_if_lockstep() if not was else []

    def _reset_car(self, message: Message) -> list[Message]:
        if self.sim is None:
            return self._no_scene("reset_car")
        self._catch_up()
        self.sim.reset(0.0, 0.0)
        self._restart()
        return self._frame_if_lockstep()

    def _node_position(self, message: Message) -> list[Message]:
        if self.sim is None:
            return self._no_scene("node_position")
        curve = self.sim.track.curve
        index = number(message.get("index"), math.nan)
        if math.isnan(index):
            self._error(f"node_position needs an index: {message}")
            return []
        i = int(index) % len(curve.s)
        qx, qy, qz, qw = m.quaternion(float(curve.heading[i]))
        x, y = (float(v) for v in curve.xy[i])
        return [{"msg_type": "node_position", "index": i, "pos_x": x, "pos_y": 0.0,
                 "pos_z": y, "Qx": qx, "Qy": qy, "Qz": qz, "Qw": qw}]

    def _set_position(self, message: Message) -> list[Message]:
        if self.sim is None:
            return self._no_scene("set_position")
        x, z = (number(message.get(k)) for k in ("pos_x", "pos_z"))
        if math.isnan(x) or math.isnan(z):
            self._error(f"set_position needs pos_x and pos_z: {message}")
            return []
        self._catch_up()
        vehicle = self.sim.vehicle
        yaw = vehicle.state.yaw
        q = [number(message.get(k)) for k in ("Qx", "Qy", "Qz", "Qw")]
        if not any(math.isnan(v) for v in q) and any(q):
            yaw = m.yaw_from_quaternion(*q)
        vehicle.place(x, z, yaw)
        self.sim.progress.relocate(x, z)
        self._was_off = self.sim.progress.off_track
        self._throttle = 0.0
        return self._frame_if_lockstep()

    _HANDLERS: ClassVar[dict[str, Callable[[ServerSession, Message], list[Message]]]] = {
        "get_protocol_version": _get_protocol_version, "get_scene_names": _get_scene_names,
        "load_scene": _load_scene, "exit_scene": _exit_scene, "quit_app": _quit_app,
        "car_config": _car_config, "racer_info": _racer_info, "cam_config": _cam_config,
        "control": _control, "step_mode": _step_mode, "settings": _step_mode,
        "reset_car": _reset_car, "node_position": _node_position,
        "set_position": _set_position,
    }

    # -- telemetry out ----------------------------------------------------------------------

    def due(self) -> list[Message]:
        """Real time: the telemetry whose time has come (at most one; a late one is not made
        up for)."""
        if self.sim is None or self.lockstep or self.next_due is None:
            return []
        now = self.clock()
        if now < self.next_due:
            return []
        self.next_due += self.time_step_s
        if self.next_due <= now:  # a whole period late: skip what was missed, keep the pace
            self.next_due = now + self.time_step_s
        return self._telemetry()

    def _catch_up(self) -> None:
        if self.sim is not None and not self.lockstep:
            self.sim.run_until(self.clock() - self._origin)

    def _restart(self) -> None:
        """After a load or a reset: the car at rest on the start line, the lap not started."""
        assert self.sim is not None
        now = self.clock()
        self._origin = now - self.sim.time_s
        self.next_due = now
        self._throttle = 0.0
        self._last = None
        self._was_off = False
        self._laps = 0
        self._lap_started = False
        self._lap_end_s = self.sim.time_s
        self._events = []

    def _frame_if_lockstep(self) -> list[Message]:
        return self._telemetry() if self.lockstep and self.sim is not None else []

    def _telemetry(self) -> list[Message]:
        sim = self.sim
        assert sim is not None
        self._catch_up()
        status = sim.status()
        out = self._lap_events(status)
        off = status.off_track
        hit = "off_track" if off and not self._was_off else "none"
        self._was_off = off
        out.append(self._telemetry_message(status, hit))
        self.counts.frames += 1
        return out

    def _start_lap(self) -> None:
        """The first drive command after a load or reset starts the lap timer: the car is on
        the start line, so it crosses it now."""
        sim = self.sim
        assert sim is not None
        st = sim.vehicle.state
        location = sim.track.locate(st.x, st.y, None)
        sim.progress.start(location.s_m, sim.time_s)
        sim.progress.relocate(st.x, st.y)
        self._lap_started = True
        self._lap_end_s = sim.time_s
        self._events.append(_crossing(sim.time_s))

    def _lap_events(self, status: SimStatus) -> list[Message]:
        out, self._events = self._events, []
        while self._laps < status.lap:
            lap_time = status.lap_times_s[self._laps]
            self._laps += 1
            self._lap_end_s += lap_time
            self.counts.laps += 1
            out += [_crossing(self._lap_end_s),
                    {"msg_type": "cross_start", "lap_time": f"{lap_time:.3f}"}]
        return out

    def _telemetry_message(self, status: SimStatus, hit: str) -> Message:
        sim = self.sim
        assert sim is not None
        image = sim.render()
        vx, vy = status.speed_mps * math.cos(status.yaw), status.speed_mps * math.sin(status.yaw)
        ax = ay = 0.0
        if self._last is not None and status.time_s > self._last[0]:
            dt = status.time_s - self._last[0]
            ax, ay = (vx - self._last[1]) / dt, (vy - self._last[2]) / dt
        self._last = (status.time_s, vx, vy)
        st = sim.vehicle.state
        yaw_rate = -st.yaw_rate_rps  # clockwise positive, as the donkey simulator reports
        loc = sim.progress.location
        return {
            "msg_type": "telemetry", "steering_angle": round(status.steering, 5),
            "throttle": round(self._throttle, 5), "speed": round(abs(status.speed_mps), 5),
            "image": self._encode(image), "hit": hit,
            "pos_x": round(status.x, 5), "pos_y": 0.0, "pos_z": round(status.y, 5),
            "vel_x": round(vx, 5), "vel_y": 0.0, "vel_z": round(vy, 5),
            "accel_x": round(ax, 5), "accel_y": 0.0, "accel_z": round(ay, 5),
            "gyro_x": 0.0, "gyro_y": round(yaw_rate, 5), "gyro_z": 0.0,
            "pitch": 0.0, "yaw": round(m.unity_yaw_deg(status.yaw), 4), "roll": 0.0,
            "cte": round(status.cte_m, 5), "activeNode": loc.index if loc else 0,
            "totalNodes": len(sim.track.curve.s), "time": round(status.time_s, 4),
        }

    def _encode(self, rgb: np.ndarray) -> str:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if self.encoding == "PNG":
            ok, buf = cv2.imencode(".png", bgr)
        else:
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY,
                                                 self.options.jpeg_quality])
        assert ok, "OpenCV could not encode a rendered frame"
        return base64.b64encode(buf.tobytes()).decode("ascii")

    # -- errors ---------------------------------------------------------------------------

    def _no_scene(self, kind: str) -> list[Message]:
        self._error(f"{kind} before load_scene: no car to apply it to; ignored")
        return []

    def _error(self, why: str) -> None:
        self.counts.invalid += 1
        self.errors = [*self.errors[-9:], why]
        log.warning("%s", why)


def _crossing(time_s: float) -> Message:
    return {"msg_type": "collision_with_starting_line", "starting_line_index": 0,
            "timeStamp": round(time_s, 4)}
