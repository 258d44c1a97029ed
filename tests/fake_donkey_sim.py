"""A scripted donkey simulator for client tests: a TCP server on 127.0.0.1 whose every
connection runs ``script(peer)`` on its own thread. The script sends any bytes it likes
(comma decimals, byte by byte, garbage) and reads what the client sends, so a test can play
the simulators our own `car sim serve` never imitates."""

from __future__ import annotations

import base64
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from car.sim.donkey.wire import JsonStream, encode_line

Message = dict[str, Any]


class Gone(Exception):
    """The client closed the connection (or the fake is closing)."""


def jpeg_b64(width: int = 160, height: int = 120, value: int = 128) -> str:
    """A plain camera frame as the simulator sends it: base64 of a JPEG."""
    image = np.full((height, width, 3), value, np.uint8)
    image[: height // 2, :, 0] = 255 - value  # not flat, so a decode can be told apart
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return base64.b64encode(buf.tobytes()).decode("ascii")


def telemetry(image: str | None = None, **fields: Any) -> Message:
    """A telemetry message (what the Unity sim sends), with ``fields`` over the defaults."""
    message: Message = {"msg_type": "telemetry", "steering_angle": 0.0, "throttle": 0.0,
                        "speed": 0.0, "image": jpeg_b64() if image is None else image,
                        "hit": "none", "pos_x": 0.0, "pos_y": 0.0, "pos_z": 0.0,
                        "yaw": 90.0, "cte": 0.0, "activeNode": 0, "time": 0.0}
    message.update(fields)
    return message


class Peer:
    """One client connection, seen from the fake simulator."""

    def __init__(self, sock: socket.socket, stop: threading.Event):
        self.sock = sock
        self.stop = stop
        self.stream = JsonStream()
        self.received: list[Message] = []  # every message the client sent, in order
        self.raw = bytearray()  # every byte the client sent
        self.byte_by_byte = False
        self._unread: list[Message] = []
        sock.settimeout(0.05)

    def send(self, data: bytes | Message) -> None:
        """A message (newline-ended compact JSON, as the sim sends) or raw bytes."""
        raw = encode_line(data) if isinstance(data, dict) else data
        try:
            if self.byte_by_byte:
                for i in range(len(raw)):
                    self.sock.sendall(raw[i:i + 1])
            else:
                self.sock.sendall(raw)
        except OSError as exc:
            raise Gone(str(exc)) from None

    def _read(self) -> bool:
        """One recv into ``_unread``; False on a timeout."""
        if self.stop.is_set():
            raise Gone("the fake is closing")
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except OSError as exc:
            raise Gone(str(exc)) from None
        if not data:
            raise Gone("the client closed the connection")
        self.raw += data
        messages = self.stream.feed(data)
        self.received += messages
        self._unread += messages
        return True

    def expect(self, kind: str, timeout_s: float = 10.0) -> Message:
        """The next message of type ``kind`` from the client (others are skipped)."""
        deadline = time.monotonic() + timeout_s
        while True:
            while self._unread:
                message = self._unread.pop(0)
                if message["msg_type"] == kind:
                    return message
            if time.monotonic() > deadline:
                raise AssertionError(f"the client sent no {kind!r} in {timeout_s:g} s; "
                                     f"it sent {[m['msg_type'] for m in self.received]}")
            self._read()

    def poll(self) -> list[Message]:
        """What the client has sent since the last call (waits at most one recv timeout);
        raises Gone once the client has left."""
        self._read()
        out, self._unread = self._unread, []
        return out

    def reset(self) -> None:
        """Drop the connection hard (RST), as a crashing simulator does."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def hold(self, timeout_s: float = 30.0) -> None:
        """Keep the connection open (reading) until the client closes it."""
        deadline = time.monotonic() + timeout_s
        with contextlib.suppress(Gone):
            while time.monotonic() < deadline:
                self._read()

    def handshake(self, scenes: tuple[str, ...] = ("oval",), first: str = "menu",
                  frame: bytes | Message | None = None) -> Message:
        """The simulator's side of gym-donkeycar's handshake, up to the first telemetry;
        returns the client's cam_config. ``first``: ``menu`` (scene_selection_ready),
        ``car_loaded`` or ``need_car_config`` (the sim is already in a scene)."""
        if first == "menu":
            self.send({"msg_type": "scene_selection_ready", "loaded": "1"})
            self.expect("get_scene_names")
            self.send({"scene_names": list(scenes), "msg_type": "scene_names"})
            self.expect("load_scene")
            self.send({"msg_type": "car_loaded"})
        else:
            self.send({"msg_type": first})
        cam = self.expect("cam_config")
        self.send(telemetry() if frame is None else frame)
        return cam


class FakeSim:
    """Serves ``script`` to every connection until ``close()``; use as a context manager.
    What a script raises (other than the client leaving) is kept in ``errors``."""

    def __init__(self, script: Callable[[Peer], None], port: int = 0):
        self.script = script
        self.peers: list[Peer] = []
        self.errors: list[BaseException] = []
        self.connections = 0
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(4)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.address = f"donkey://127.0.0.1:{self.port}"
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, name="fake-sim", daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = Peer(sock, self._stop)
            self.peers.append(peer)
            self.connections += 1
            thread = threading.Thread(target=self._run, args=(peer,), daemon=True,
                                      name=f"fake-sim-peer-{self.connections}")
            self._threads.append(thread)
            thread.start()

    def _run(self, peer: Peer) -> None:
        try:
            self.script(peer)
        except Gone:
            pass
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            peer.sock.close()

    def close(self) -> None:
        self._stop.set()
        self._accepter.join(timeout=5.0)
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5.0)

    def __enter__(self) -> FakeSim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
