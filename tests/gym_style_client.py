"""A donkey-simulator client that behaves on the wire like gym-donkeycar (its SDClient plus
DonkeyUnitySimHandler), as docs/donkey-protocol.md describes them (sections 1, 2, 6, 8). The
server tests drive `car sim serve` with it, so what passes here is what gym-donkeycar sees.

On the wire, like gym-donkeycar:
- **Sending:** ``json.dumps(message)`` with the default separators and no terminator. Config
  messages go out at once, each followed by a 0.1 s pause. Controls go through a lossy queue
  one message deep, flushed by the reader thread when the socket is writable.
- **Receiving:** a non-blocking socket and a text buffer. The complete part runs from the
  first ``{`` to the last ``}\\n``; it is split on newlines and pieces of 2 characters or fewer
  are skipped. Each piece gets the comma-decimal repair, then ``json.loads``. A piece that does
  not parse, or that has no ``msg_type``, is counted and dropped.
- **Handshake:** ``scene_selection_ready`` is answered with ``get_scene_names``, and
  ``scene_names`` with ``load_scene``. A level the list does not hold raises ``ValueError``,
  reported by ``wait_loaded``. ``car_loaded`` is answered with a hand-brake ``control``, then
  ``car_config``, then ``cam_config``.
- **Stepping:** ``observe`` waits for a telemetry newer than the last one it returned.
  ``step`` sends a control and then observes. Laps are counted from
  ``collision_with_starting_line``: the first crossing starts the timer, and each later
  crossing of the same line counts a lap.

Written for these tests from the spec; no code comes from gym-donkeycar.
"""

from __future__ import annotations

import base64
import json
import re
import select
import socket
import threading
import time
from collections import Counter
from typing import Any

import cv2
import numpy as np

Message = dict[str, Any]
RECV_BYTES = 256 * 1024
POLL_S = 0.001
# gym's comma repair: a quoted key of letters and "_", a colon with no space, then a run of
# digits, commas, "E" and "-" that ends at a "," or "}".
_KEY_AND_RUN = re.compile(r'"[A-Za-z_]+":(?P<run>[0-9,E-]+)(?=[,}])')


def repair_comma_decimals(text: str) -> str:
    """Numbers a comma-locale simulator wrote as ``1,25`` become ``1.25``. Like gym, each run
    is replaced everywhere it occurs in the message."""
    for match in list(_KEY_AND_RUN.finditer(text)):
        run = match.group("run")
        if "," in run:
            text = text.replace(run, run.replace(",", "."))
    return text


def split_complete(buffer: str) -> tuple[list[str], str]:
    """gym's splitter: the complete pieces in ``buffer`` and what to keep for later."""
    first = buffer.find("{")
    last = buffer.rfind("}\n")
    if first < 0 or last < first:
        return [], buffer
    pieces = buffer[first:last + 1].split("\n")
    return [p for p in pieces if len(p) > 2], buffer[last:]


class LapCounter:
    """gym's lap count from ``collision_with_starting_line``: the first crossing starts the
    timer and each later crossing of the same line counts a lap. As in gym, a start time of
    0.0 means "not started", so a crossing stamped 0.0 only starts the timer again."""

    def __init__(self) -> None:
        self.lap_count = 0
        self.last_lap_time = 0.0
        self._start = 0.0
        self._line: Any = -1

    def crossing(self, message: Message) -> None:
        stamp, line = float(message["timeStamp"]), message["starting_line_index"]
        if self._start == 0.0:
            self._start, self._line = stamp, line
        elif line == self._line:
            self.last_lap_time = stamp - self._start
            self._start = stamp
            self.lap_count += 1


class GymStyleClient:
    """Connects, loads ``level``, and drives one car, the way gym-donkeycar would."""

    def __init__(self, host: str, port: int, level: str, *, size: tuple[int, int] = (160, 120),
                 car_name: str = "gym-style", config_pause_s: float = 0.1,
                 reset_pause_s: float = 1.0, timeout_s: float = 10.0):
        self.level = level
        self.size = size
        self.car_name = car_name
        self.config_pause_s = config_pause_s
        self.reset_pause_s = reset_pause_s
        self.timeout_s = timeout_s
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock.setblocking(False)
        self.received: list[Message] = []  # every message, in order
        self.sent: list[bytes] = []  # every message's bytes, in order
        self.unknown: Counter = Counter()  # msg_types gym has no handler for
        self.bad_pieces = 0  # not JSON, or no msg_type
        self.scene_names: list[str] = []
        self.loaded = False
        self.configured = False
        self.failure: BaseException | None = None  # what stopped the reader thread
        self.closed = threading.Event()  # the reader thread has stopped
        self.frames = 0  # telemetry messages received
        self.image: np.ndarray | None = None  # the newest frame, (H, W, 3) RGB
        self.telemetry: Message = {}
        self.hit = "none"
        self.laps = LapCounter()
        self._observed = 0  # the frame count observe() last returned at
        self._buffer = ""
        self._queued: bytes | None = None  # the lossy send queue, one message deep
        self._send_lock = threading.Lock()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gym-style-client", daemon=True)
        self._thread.start()

    # -- sending ---------------------------------------------------------------------------

    def send_now(self, message: Message) -> None:
        """Send at once (gym's ``send_now``)."""
        self._send(json.dumps(message).encode("utf-8"))

    def queue(self, message: Message) -> None:
        """Replace whatever is queued; the reader thread sends it (gym's lossy queue)."""
        with self._send_lock:
            self._queued = json.dumps(message).encode("utf-8")

    def send_control(self, steering: Any, throttle: Any, brake: Any = 0.0) -> None:
        self.queue({"msg_type": "control", "steering": str(steering),
                    "throttle": str(throttle), "brake": str(brake)})

    def _send(self, data: bytes) -> None:
        with self._send_lock:
            self.sent.append(data)
            self.sock.setblocking(True)
            try:
                self.sock.sendall(data)
            finally:
                self.sock.setblocking(False)

    def _send_config(self) -> None:
        """gym's ``send_config``: car_config, then cam_config, each followed by a pause."""
        width, height = self.size
        self.send_now({"msg_type": "car_config", "body_style": "donkey", "body_r": "128",
                       "body_g": "128", "body_b": "128", "car_name": self.car_name,
                       "font_size": "100"})
        time.sleep(self.config_pause_s)
        self.send_now({"msg_type": "cam_config", "fov": "0", "fish_eye_x": "0.0",
                       "fish_eye_y": "0.0", "img_w": str(width), "img_h": str(height),
                       "img_d": "3", "img_enc": "JPG", "offset_x": "0.0", "offset_y": "0.0",
                       "offset_z": "0.0", "rot_x": "0.0", "rot_y": "0.0", "rot_z": "0.0"})
        time.sleep(self.config_pause_s)

    # -- receiving -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                with self._send_lock:
                    want_write = self._queued is not None
                readable, writable, _ = select.select(
                    [self.sock], [self.sock] if want_write else [], [], POLL_S)
                if writable:
                    with self._send_lock:
                        data, self._queued = self._queued, None
                    if data is not None:
                        self._send(data)
                if readable:
                    data = self.sock.recv(RECV_BYTES)
                    if not data:
                        return
                    self._buffer += data.decode("utf-8")
                    pieces, self._buffer = split_complete(self._buffer)
                    for piece in pieces:
                        self._dispatch(piece)
        except Exception as exc:  # kept for the test thread (gym would report "aborted")
            self.failure = exc
        finally:
            self.closed.set()
            with self._changed:
                self._changed.notify_all()

    def _dispatch(self, piece: str) -> None:
        try:
            message = json.loads(repair_comma_decimals(piece))
        except json.JSONDecodeError:
            self.bad_pieces += 1
            return
        if not isinstance(message, dict) or "msg_type" not in message:
            self.bad_pieces += 1
            return
        self.received.append(message)
        handler = getattr(self, f"_on_{message['msg_type']}", None)
        if handler is None:
            self.unknown[message["msg_type"]] += 1
        else:
            handler(message)
        with self._changed:
            self._changed.notify_all()

    def _on_scene_selection_ready(self, message: Message) -> None:
        self.send_now({"msg_type": "get_scene_names"})

    def _on_scene_names(self, message: Message) -> None:
        self.scene_names = list(message["scene_names"])
        if self.level not in self.scene_names:
            raise ValueError(f"level {self.level!r} is not among the scenes "
                             f"{self.scene_names}")
        self.send_now({"msg_type": "load_scene", "scene_name": self.level})

    def _on_car_loaded(self, message: Message) -> None:
        self.loaded = True
        self.send_control(0, 0, 1.0)  # the hand brake
        self._on_need_car_config(message)

    def _on_need_car_config(self, message: Message) -> None:
        self.loaded = True
        self._send_config()
        self.configured = True

    def _on_telemetry(self, message: Message) -> None:
        raw = np.frombuffer(base64.b64decode(message["image"]), np.uint8)
        bgr = cv2.imdecode(raw, cv2.IMREAD_COLOR)
        self.image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self.telemetry = message
        if "hit" in message:
            self.hit = message["hit"]
        self.frames += 1

    def _on_collision_with_starting_line(self, message: Message) -> None:
        self.laps.crossing(message)

    def _on_cross_start(self, message: Message) -> None:
        pass  # gym logs the lap time

    def _on_ping(self, message: Message) -> None:
        pass  # a keep-alive; no reply

    # -- what a gym user calls ---------------------------------------------------------------

    def wait_loaded(self) -> None:
        """Until the car is loaded and configured, and the hand brake has gone out; raises
        what stopped the reader, if anything (an unknown level's ``ValueError``)."""
        self._wait(lambda: self.configured and self._queued is None, "the car to load")

    def observe(self) -> tuple[np.ndarray, Message]:
        """The next telemetry after the one returned last: (image, info)."""
        self._wait(lambda: self.frames > self._observed, "a new telemetry")
        self._observed = self.frames
        assert self.image is not None
        return self.image, self.info()

    def step(self, steering: float, throttle: float) -> tuple[np.ndarray, Message]:
        self.send_control(float(steering), float(throttle), 0.0)
        return self.observe()

    def reset(self) -> tuple[np.ndarray, Message]:
        """gym's reset: hand brake, reset_car, local state cleared, hand brake, a new frame."""
        self.send_control(0, 0, 1.0)
        time.sleep(0.1)
        self.send_now({"msg_type": "reset_car"})
        time.sleep(self.reset_pause_s)
        self.hit = "none"
        self.laps = LapCounter()
        self._observed = self.frames
        self.send_control(0, 0, 1.0)
        time.sleep(0.1)
        return self.observe()

    def info(self) -> Message:
        t = self.telemetry
        return {"pos": (t.get("pos_x", 0.0), t.get("pos_y", 0.0), t.get("pos_z", 0.0)),
                "cte": t.get("cte", 0.0), "speed": t.get("speed", 0.0), "hit": self.hit,
                "car": (t.get("roll", 0.0), t.get("pitch", 0.0), t.get("yaw", 0.0)),
                "lap_count": self.laps.lap_count, "last_lap_time": self.laps.last_lap_time}

    def messages(self, msg_type: str) -> list[Message]:
        return [msg for msg in list(self.received) if msg["msg_type"] == msg_type]

    def wait_for_message(self, msg_type: str) -> Message:
        self._wait(lambda: bool(self.messages(msg_type)), f"a {msg_type} message")
        return self.messages(msg_type)[-1]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout_s)
        self.sock.close()

    def __enter__(self) -> GymStyleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait(self, condition: Any, what: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        with self._changed:
            while not condition():
                if self.failure is not None:
                    raise self.failure
                if self.closed.is_set():
                    raise ConnectionError(f"the connection closed while waiting for {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {what} in {self.timeout_s:g} s")
                self._changed.wait(min(left, 0.05))
