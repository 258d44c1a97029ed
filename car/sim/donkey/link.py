"""A donkey simulator (``donkey://HOST:PORT``) as a World (``car.world``): the drive loop's
camera and actuator, and the car's pose, departures and headway from its telemetry.

- **real time**: frames carry their arrival time on the monotonic clock; a control goes out
  at once.
- **lock-step** (`car sim eval --lockstep`): the client asks for ``step_mode synchronous``;
  each control makes the simulator run one period and answer with one frame, which the
  actuator waits for. The loop's clock is the simulator's.

A car that has left the track (``hit`` in telemetry, or |cte| over ``max_cte``: a departure,
and lost) is put back
at the nearest path node with ``node_position`` and ``set_position`` (newer Unity builds and
`car sim serve`), or with ``reset_car`` when the simulator does not answer.
"""

from __future__ import annotations

import math
import re
import time

from car.actuator import ActuatorError
from car.camera import CameraError
from car.errors import CarError
from car.frames import Command, Frame
from car.health import Health
from car.sim.donkey import messages as m
from car.sim.donkey.client import DonkeyClient
from car.world import STALL_M, SimStatus

SCHEME = "donkey://"
SILENT_S = 5.0  # no telemetry for this long: the simulator has stopped answering
REPLY_S = 1.0  # for node_position


def is_donkey_address(spec: str | None) -> bool:
    return bool(spec) and str(spec).startswith(SCHEME)


def parse_address(spec: str) -> tuple[str, int]:
    """``donkey://HOST[:PORT]`` → (host, port); port 9091 when left out."""
    rest = spec[len(SCHEME):].rstrip("/")
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:/\[\]]+)(?::(\d{1,5}))?", rest)
    port = int(match.group(2)) if match and match.group(2) else m.DEFAULT_PORT
    if match is None or not 1 <= port <= 65535:
        raise CarError(f"--sim {spec}: write donkey://HOST:PORT, for example "
                       f"donkey://127.0.0.1:{m.DEFAULT_PORT}")
    return match.group(1).strip("[]"), port


class DonkeyLink:
    """One car in a donkey simulator, shared by ``camera`` and ``actuator``."""

    def __init__(self, client: DonkeyClient, period_s: float, max_cte: float = 8.0):
        self.client = client
        self.period_s = period_s
        self.lockstep = client.lockstep
        self.pace = "cruise"  # its reference is the simulator's own lap timing
        self.max_cte = max_cte
        self.resets = 0
        self._warned_reset = False
        self._wall_start_s = time.monotonic()
        self._headway_mark: tuple[int | None, float, float] | None = None
        self.camera = DonkeyCamera(self)
        self.actuator = DonkeyActuator(self)

    @classmethod
    def open(cls, spec: str, scene: str | None, size: tuple[int, int], period_s: float, *,
             lockstep: bool = False, max_cte: float = 8.0, car_name: str = "car"
             ) -> DonkeyLink:
        host, port = parse_address(spec)
        client = DonkeyClient(host, port, scene=scene, size=size, lockstep=lockstep,
                              time_step_s=period_s, car_name=car_name).connect()
        return cls(client, period_s, max_cte)

    @property
    def name(self) -> str:
        return f"{self.client.scene or 'the loaded scene'} at {self.client.address}"

    def clock(self) -> float:
        if self.lockstep:
            t = self.client.telemetry
            return t.time_s if t is not None and not math.isnan(t.time_s) else 0.0
        return time.monotonic()

    @property
    def status(self) -> SimStatus:
        """From the newest telemetry; its time is the simulator's, or the wall clock's since
        the link opened when the simulator sends none."""
        t = self.client.telemetry
        assert t is not None, "connect() waits for the first frame"
        c = self.client
        time_s = t.time_s if math.isfinite(t.time_s) else time.monotonic() - self._wall_start_s
        return SimStatus(time_s=time_s, x=t.x, y=t.y, yaw=t.yaw, speed_mps=t.speed,
                         steering=t.steering, throttle=t.throttle, cte_m=t.cte, s_m=0.0,
                         lap=c.laps, lap_times_s=tuple(c.lap_times_s),
                         off_track=abs(t.cte) > self.max_cte, off_track_events=self.resets)

    def departure(self) -> str | None:
        """A hit since the last call, or |cte| over ``max_cte``: both a departure and lost."""
        return self.lost()

    def lost(self) -> str | None:
        """Why the car needs putting back (a hit since the last call, or |cte| too large)."""
        hits = self.client.take_hits()
        if hits:
            return f"hit {hits[-1]}"
        t = self.client.telemetry
        if t is not None and abs(t.cte) > self.max_cte:
            return f"|cte| {abs(t.cte):.2f} > {self.max_cte:g}"
        return None

    def put_back(self) -> None:
        """The car at rest at the path node nearest it; from the start if the simulator
        cannot place it."""
        client = self.client
        t = client.telemetry
        self.resets += 1
        reply = None
        if t is not None and t.active_node is not None and not self._warned_reset:
            reply = client.request({"msg_type": "node_position", "index": str(t.active_node)},
                                   "node_position", REPLY_S)
        seq = client.frame.seq if client.frame is not None else -1
        if reply is not None:
            place = {"msg_type": "set_position"}
            place.update({k: m.text(float(reply.get(k, 0.0))) for k in
                          ("pos_x", "pos_y", "pos_z", "Qx", "Qy", "Qz", "Qw")})
            client.send(place)
        else:
            if not self._warned_reset:
                self._warned_reset = True
                client.report(f"{client.address} does not answer node_position: putting the "
                              "car back at the start with reset_car (laps start again)")
            client.send({"msg_type": "reset_car"})
            client.restart_laps()
        if not self.lockstep:  # (in lock-step the world waits, with the car at rest)
            client.send(m.control(0.0, 0.0, 1.0))
        # The next frame shows the car where it was put (lock-step: the step it answers).
        client.wait_frame(seq, SILENT_S if self.lockstep else REPLY_S)
        client.take_hits()
        self._headway_mark = None

    def made_headway(self) -> bool:
        """A new path node, or (a simulator that reports none) ``STALL_M`` travelled."""
        t = self.client.telemetry
        now = None if t is None else (t.active_node, t.x, t.y)
        last = self._headway_mark
        if last is None or now is None:
            moved = True
        elif now[0] is not None:
            moved = now[0] != last[0]
        else:
            moved = math.hypot(now[1] - last[1], now[2] - last[2]) > STALL_M
        if moved:
            self._headway_mark = now
        return moved

    def lap_progress(self) -> float:
        return float(self.client.laps)

    def charged_latency_s(self) -> float | None:
        return None  # the simulator keeps its own time: the car pays what the loop took

    def reference_lap_s(self) -> float | None:
        return None  # a remote track comes with no planned lap

    @property
    def latency_note(self) -> str:
        return "none: lock-step" if self.lockstep else "real: the simulator runs in real time"

    def health(self) -> Health:
        h = self.client.health()
        return Health("donkey", h, describe_health(h))

    def close(self) -> None:
        self.client.close()


def describe_health(h: dict) -> str:
    """One line of a donkey link's figures."""
    unknown = sum(h["unknown"].values())
    return (f"donkey {h['address']}: {h['telemetry']} frames, {h['controls']} controls; "
            f"{h['bad_images']} bad image(s), {h['malformed']} malformed message(s), "
            f"{unknown} of unknown type, {h['comma_decimals']} comma-decimal; "
            f"{h['losses']} link loss(es), {h['reconnects']} reconnect(s)")


class DonkeyCamera:
    """The newest frame from the simulator's telemetry."""

    def __init__(self, link: DonkeyLink):
        self.link = link
        self.size = link.client.size
        self._delivered = -1

    def read(self) -> Frame:
        link = self.link
        wait = SILENT_S if link.lockstep else link.period_s
        try:
            frame = link.client.wait_frame(self._delivered, wait)
        except CarError as exc:
            raise CameraError(str(exc)) from None
        assert frame is not None, "connect() waits for the first frame"
        if link.lockstep and frame.seq <= self._delivered and link.client.fault is None:
            raise CameraError(f"{link.client.address} sent no frame for {SILENT_S:g} s in "
                              "lock-step: has it stopped answering?")
        t = link.client.telemetry
        if not link.lockstep and t is not None and link.client.fault is None and \
                time.monotonic() - t.received_s > SILENT_S:
            raise CameraError(f"{link.client.address} sent no telemetry for {SILENT_S:g} s: "
                              "the simulator has stopped answering")
        self._delivered = frame.seq
        return frame

    def close(self) -> None:
        """The link closes the connection."""


class DonkeyActuator:
    """Sends the loop's commands as ``control`` messages (an e-stop brakes)."""

    def __init__(self, link: DonkeyLink):
        self.link = link
        self.sent = 0

    def describe(self) -> str:
        return f"the car in the simulator at {self.link.client.address}"

    def health(self) -> Health | None:
        return None  # the link's figures are the world's health

    def status(self) -> dict[str, object]:
        return {}

    @property
    def fault(self) -> str | None:
        return self.link.client.fault

    def send(self, command: Command) -> None:
        client = self.link.client
        if client.failed is not None:
            raise ActuatorError(client.failed)
        brake = 1.0 if command.estop else 0.0
        seq = client.frame.seq if client.frame is not None else -1
        if not client.send(m.control(command.steering, command.throttle, brake)):
            return  # the link is down: fault says so, and the reader is reconnecting
        self.sent += 1
        if self.link.lockstep:  # the simulator answers this step with one frame
            try:
                client.wait_frame(seq, SILENT_S)
            except CarError as exc:
                raise ActuatorError(str(exc)) from None

    def close(self) -> None:
        """Neutral with the brake on (the link then closes the connection)."""
        self.link.client.send(m.control(0.0, 0.0, 1.0))
