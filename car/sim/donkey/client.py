"""A client of the donkey simulator (the Unity sim, or `car sim serve`): it connects, loads a
scene, configures the car and its camera, then keeps the newest telemetry as a Frame and
sends controls (docs/donkey-protocol.md, section 2).

A reader thread parses the stream. If the connection drops, ``fault`` says so while the
thread reconnects with the whole handshake for up to ``reconnect_s``; after that ``failed``
holds why, and the camera raises it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from car.errors import CarError
from car.frames import Frame
from car.sim.donkey import messages as m
from car.sim.donkey.telemetry import LapCounter, Telemetry, decode_image, read_telemetry
from car.sim.donkey.wire import JsonStream, encode_client, number

log = logging.getLogger(__name__)
Message = dict[str, Any]
CONFIG_PAUSE_S = 0.1  # between config messages: some sim builds read one message per recv
READY_TYPES = ("car_loaded", "need_car_config")


@dataclass
class ClientCounts:
    """What the link counted, for ``health``."""

    telemetry: int = 0
    bad_images: int = 0
    unknown: Counter = field(default_factory=Counter)
    reconnects: int = 0
    losses: int = 0
    controls: int = 0


class DonkeyClient:
    """One car in a donkey simulator at ``host:port``."""

    def __init__(self, host: str, port: int, *, scene: str | None = None,
                 size: tuple[int, int] = (160, 120), car_name: str = "car",
                 lockstep: bool = False, time_step_s: float = 0.05,
                 connect_timeout_s: float = 10.0, answer_timeout_s: float = 30.0,
                 reconnect_s: float = 10.0, report: Callable[[str], None] = log.warning):
        self.host, self.port = host, port
        self.address = f"donkey://[{host}]:{port}" if ":" in host else f"donkey://{host}:{port}"
        self.scene = scene
        self.size = size
        self.car_name = car_name
        self.lockstep = lockstep
        self.time_step_s = time_step_s
        self.connect_timeout_s = connect_timeout_s
        self.answer_timeout_s = answer_timeout_s
        self.reconnect_s = reconnect_s
        self.report = report
        self.counts = ClientCounts()
        self.stream = JsonStream()
        self.scenes: list[str] = []
        self.fault: str | None = None  # the link is down and reconnecting
        self.failed: str | None = None  # the link is down for good
        self.telemetry: Telemetry | None = None
        self.frame: Frame | None = None
        self.hits: list[str] = []  # hits not yet taken by the caller
        self._laps = LapCounter()
        self._replies: dict[str, Message] = {}
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._closing = False
        self._thread: threading.Thread | None = None
        self._warned_size = False
        self._pending: list[Message] = []  # read during the handshake, not yet handled

    # -- connecting -------------------------------------------------------------------------

    def connect(self) -> DonkeyClient:
        """Connect and load the scene, or raise CarError saying what is wrong."""
        self._open(first=True, connect_timeout_s=self.connect_timeout_s)
        self._thread = threading.Thread(target=self._run, name="donkey-client", daemon=True)
        self._thread.start()
        return self

    def _open(self, first: bool, connect_timeout_s: float) -> None:
        deadline = time.monotonic() + connect_timeout_s
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=2.0)
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise CarError(f"nothing answers at {self.address} ({exc.strerror or exc}) "
                                   f"after {connect_timeout_s:g} s: start the simulator "
                                   "(or `car sim serve`) first, or check --sim") from None
                time.sleep(0.25)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self.stream = JsonStream()
        self._pending = []
        try:
            self._handshake(first)
        except BaseException as exc:
            sock.close()
            self._sock = None
            if isinstance(exc, OSError):  # a send failed: the simulator reset the connection
                raise CarError(f"{self.address} dropped the connection during the handshake "
                               f"({exc})") from None
            raise
        for message in self._pending:  # what came with the first frame
            self._dispatch(message)
        self._pending = []
        sock.settimeout(0.5)

    def _handshake(self, first: bool) -> None:
        hello = self._expect(("scene_selection_ready", *READY_TYPES),
                             "first message (scene_selection_ready or car_loaded)")
        if hello["msg_type"] == "scene_selection_ready":
            self._send({"msg_type": "get_scene_names"})
            names = self._expect(("scene_names",), "scene list")["scene_names"]
            self.scenes = [str(n) for n in names] if isinstance(names, list) else []
            if not self.scenes:
                raise CarError(f"{self.address} lists no scenes: {names!r}")
            if self.scene is None:
                self.scene = self.scenes[0]
                if first:
                    self.report(f"no --scene given: loading {self.scene!r} (this simulator "
                                f"has {', '.join(self.scenes)})")
            elif self.scene not in self.scenes:
                raise CarError(f"{self.address} has no scene {self.scene!r}; its scenes are "
                               f"{', '.join(self.scenes)}: pass one with --scene")
            self._send({"msg_type": "load_scene", "scene_name": self.scene})
            self._expect(READY_TYPES, f"car_loaded for scene {self.scene!r}")
        elif first and self.scene is not None:
            self.report(f"{self.address} is already in a scene, so --scene {self.scene} was "
                        "not applied (the car was loaded where the simulator is)")
        self._send(m.control(0.0, 0.0, 1.0))
        for message in (m.car_config(self.car_name), m.cam_config(*self.size)):
            self._send(message)
            time.sleep(CONFIG_PAUSE_S)
        if self.lockstep:
            self._send(m.step_mode(True, self.time_step_s))
        self._laps.reset()
        first_frame = self._expect(("telemetry",), "camera frame (telemetry)")
        self._take(first_frame)

    def _expect(self, kinds: tuple[str, ...], what: str) -> Message:
        """Read (in the caller's thread) until a message of one of ``kinds`` arrives."""
        assert self._sock is not None
        deadline = time.monotonic() + self.answer_timeout_s
        while True:
            while self._pending:  # in order, none skipped
                message = self._pending.pop(0)
                kind = message["msg_type"]
                if kind == "refused":
                    raise CarError(f"{self.address} refused the connection: "
                                   f"{message.get('reason', 'no reason given')}")
                if kind in kinds:
                    return message
                if kind == "error":
                    log.warning("%s says: %s", self.address, message.get("error"))
                else:
                    self._dispatch(message)
            left = deadline - time.monotonic()
            if left <= 0:
                raise CarError(f"{self.address} accepted the connection but sent no {what} "
                               f"in {self.answer_timeout_s:g} s: is it a donkey simulator, "
                               "and is it still loading?")
            self._sock.settimeout(min(left, 0.5))
            try:
                data = self._sock.recv(1 << 18)
            except TimeoutError:
                continue
            except OSError as exc:
                raise CarError(f"{self.address} dropped the connection during the handshake "
                               f"({exc})") from None
            if not data:
                raise CarError(f"{self.address} closed the connection during the handshake, "
                               f"before its {what}")
            self._pending.extend(self.stream.feed(data))

    # -- the reader thread ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closing:
            sock = self._sock
            assert sock is not None
            try:
                data = sock.recv(1 << 18)
            except TimeoutError:
                continue
            except OSError as exc:
                if not self._closing:
                    self._lost(f"connection error ({exc})")
                continue
            if not data:
                if not self._closing:
                    self._lost("the simulator closed the connection")
                continue
            for message in self.stream.feed(data):
                self._dispatch(message)

    def _lost(self, why: str) -> None:
        self.counts.losses += 1
        with self._cond:
            self.fault = f"donkey simulator link lost: {why}; reconnecting"
            self._cond.notify_all()
        self.report(f"{self.address}: {why}; reconnecting for up to {self.reconnect_s:g} s")
        if self._sock is not None:
            self._sock.close()
        deadline = time.monotonic() + self.reconnect_s
        while not self._closing:
            try:
                self._open(first=False, connect_timeout_s=max(0.5, min(
                    2.0, deadline - time.monotonic())))
            except CarError as exc:
                if time.monotonic() >= deadline:
                    with self._cond:
                        self.failed = (f"the donkey simulator at {self.address} is gone: "
                                       f"{why}, and reconnecting for {self.reconnect_s:g} s "
                                       f"failed ({exc})")
                        self._cond.notify_all()
                    self._closing = True
                    return
                time.sleep(0.5)
                continue
            self.counts.reconnects += 1
            with self._cond:
                self.fault = None
                self._cond.notify_all()
            self.report(f"{self.address}: reconnected")
            return

    def _dispatch(self, message: Message) -> None:
        kind = message["msg_type"]
        if kind == "telemetry":
            self._take(message)
        elif kind == "collision_with_starting_line":
            with self._cond:
                self._laps.line_crossed(number(message.get("timeStamp")))
        elif kind == "cross_start":
            self._laps.cross_start(number(message.get("lap_time")))
        elif kind in ("node_position", "protocol_version", "scene_names"):
            with self._cond:
                self._replies[kind] = message
                self._cond.notify_all()
        elif kind in ("ping", "car_loaded", "need_car_config", "scene_selection_ready",
                      "race_start", "race_stop"):
            pass
        elif kind in ("error", "refused"):
            self.report(f"{self.address} says: {message.get('error') or message.get('reason')}")
        else:
            self.counts.unknown[kind] += 1
            if self.counts.unknown[kind] == 1:
                log.warning("%s sent an unknown msg_type %r: ignored (counted)", self.address,
                            kind)

    def _take(self, message: Message) -> None:
        """A telemetry message: the newest frame and state, or counted if unusable."""
        now = time.monotonic()
        image = self._image(message.get("image"))
        if image is None:
            return
        with self._cond:
            seq = self.counts.telemetry
            self.counts.telemetry += 1
            self.telemetry = t = read_telemetry(message, seq, now)
            stamp = t.time_s if self.lockstep and not math.isnan(t.time_s) else now
            self.frame = Frame(image, stamp, seq)
            if t.hit != "none":
                self.hits.append(t.hit)
            self._cond.notify_all()

    def _image(self, text: Any) -> np.ndarray | None:
        """The telemetry's image as RGB at ``size``; None (counted) if it does not decode."""
        image = decode_image(text)
        if image is None:
            self.counts.bad_images += 1
            if self.counts.bad_images == 1:
                log.warning("%s sent a telemetry image that does not decode: skipped (counted)",
                            self.address)
            return None
        if (image.shape[1], image.shape[0]) != self.size:
            if not self._warned_size:
                self._warned_size = True
                self.report(f"{self.address} sends {image.shape[1]}x{image.shape[0]} frames, "
                            f"not the {self.size[0]}x{self.size[1]} asked for: resizing here")
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    # -- for the camera, the actuator and the eval ------------------------------------------

    def wait_frame(self, after_seq: int, timeout_s: float) -> Frame | None:
        """The newest frame, waiting up to ``timeout_s`` for one with seq > ``after_seq``;
        raises CarError once the link is gone for good."""
        with self._cond:
            self._cond.wait_for(lambda: self.failed is not None or (
                self.frame is not None and self.frame.seq > after_seq), timeout=timeout_s)
            if self.failed is not None:
                raise CarError(self.failed)
            return self.frame

    def send(self, message: Message) -> bool:
        """Send one message; False when the link is down (the reader is reconnecting)."""
        if message.get("msg_type") == "control":
            self.counts.controls += 1
        try:
            self._send(message)
        except OSError:
            return False
        return True

    def _send(self, message: Message) -> None:
        sock = self._sock
        if sock is None:
            raise OSError("not connected")
        with self._send_lock:
            sock.sendall(encode_client(message))

    def request(self, message: Message, reply: str, timeout_s: float) -> Message | None:
        """Send ``message`` and wait for a reply of type ``reply`` (None if none comes)."""
        with self._cond:
            self._replies.pop(reply, None)
        if not self.send(message):
            return None
        with self._cond:
            self._cond.wait_for(lambda: reply in self._replies, timeout=timeout_s)
            return self._replies.pop(reply, None)

    def health(self) -> dict[str, Any]:
        """What the link did and what could not be used, for the run's summary."""
        s = self.stream.counts
        return {"address": self.address, "scene": self.scene,
                "telemetry": self.counts.telemetry, "controls": self.counts.controls,
                "bad_images": self.counts.bad_images, "malformed": s.malformed,
                "skipped_bytes": s.skipped_bytes, "comma_decimals": s.comma_decimals,
                "unknown": dict(self.counts.unknown), "losses": self.counts.losses,
                "reconnects": self.counts.reconnects}

    def take_hits(self) -> list[str]:
        with self._cond:
            hits, self.hits = self.hits, []
        return hits

    @property
    def laps(self) -> int:
        """Laps completed."""
        return self._laps.laps

    @property
    def lap_times_s(self) -> list[float]:
        """Each completed lap's time, in the simulator's seconds."""
        return self._laps.lap_times_s

    def restart_laps(self) -> None:
        """After reset_car: the car is back behind the line; the next crossing starts a lap."""
        with self._cond:
            self._laps.restart()

    def close(self) -> None:
        """Brake, and leave the car where it is (the next connection finds the scene)."""
        if self._sock is not None and self.failed is None:
            with contextlib.suppress(OSError):
                self._send(m.control(0.0, 0.0, 1.0))
        self._closing = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        if self._sock is not None:
            self._sock.close()
