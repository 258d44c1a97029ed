"""`car sim serve`: the embedded simulator behind the donkey simulator's TCP protocol, so
gym-donkeycar, donkeycar's ``DonkeyGymEnv`` or `car drive --sim donkey://...` can drive it.

One client at a time: a second connection is told why (``{"msg_type": "refused"}``) and
closed. A single thread with a selector does everything: accept, read, answer, and send the
real-time telemetry when its time comes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from car.config import SimConfig
from car.errors import CarError
from car.sim.donkey.session import Message, ServeOptions, ServerSession
from car.sim.donkey.wire import JsonStream, encode_line
from car.sim.track import Track

log = logging.getLogger(__name__)
SEND_TIMEOUT_S = 5.0  # a client that reads nothing for this long is dropped
RECV_BYTES = 65536


@dataclass
class Client:
    sock: socket.socket
    peer: str
    stream: JsonStream
    session: ServerSession
    since: float


class DonkeyServer:
    """Serves ``scenes`` (name → track) on ``host:port`` (port 0: any free port)."""

    def __init__(self, scenes: dict[str, Track], sim_config: SimConfig, options: ServeOptions,
                 host: str = "127.0.0.1", port: int = 9091,
                 report: Callable[[str], None] = log.info):
        if not scenes:
            raise CarError("car sim serve needs at least one track")
        self.scenes = scenes
        self.sim_config = sim_config
        self.options = options
        self.report = report
        self.client: Client | None = None
        self.refused = 0
        self.served = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._selector = selectors.DefaultSelector()
        self._listener = _listen(host, port)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self.host, self.port = self._listener.getsockname()[:2]

    @property
    def address(self) -> str:
        return f"donkey://{self.host}:{self.port}"

    def serve(self, should_stop: Callable[[], bool] = lambda: False) -> str:
        """Serve until ``stop()``, ``should_stop()`` or a client's ``quit_app``; returns why
        it stopped."""
        try:
            while not (self._stop.is_set() or should_stop()):
                timeout = 0.1
                client = self.client
                if client is not None and client.session.next_due is not None and \
                        not client.session.lockstep:
                    timeout = min(timeout, max(0.0, client.session.next_due - time.monotonic()))
                for key, _ in self._selector.select(timeout):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif self.client is not None and key.fileobj is self.client.sock:
                        self._read(self.client)
                if self.client is not None:
                    self._send(self.client, self.client.session.due())
                    if self.client is not None and self.client.session.quit:
                        self._drop(self.client, "asked the simulator to quit (quit_app)")
                        return "quit_app"
            return "stopped"
        finally:
            if self.client is not None:
                self._drop(self.client, "the simulator is stopping")
            self._selector.close()
            self._listener.close()

    def start(self) -> DonkeyServer:
        """Serve on a background thread (tests, notebooks)."""
        self._thread = threading.Thread(target=self.serve, name="donkey-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _accept(self) -> None:
        try:
            sock, addr = self._listener.accept()
        except OSError:
            return
        peer = f"{addr[0]}:{addr[1]}"
        if self.client is not None:
            self.refused += 1
            reason = (f"this simulator is driven by {self.client.peer} since "
                      f"{time.strftime('%H:%M:%S', time.localtime(self.client.since))}; "
                      "car sim serve takes one client at a time: try again when it leaves, "
                      "or start another on another --port")
            try:
                sock.settimeout(1.0)
                sock.sendall(encode_line({"msg_type": "refused", "reason": reason}))
            except OSError:
                pass
            sock.close()
            self.report(f"refused {peer}: busy with {self.client.peer}")
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(SEND_TIMEOUT_S)
        session = ServerSession(self.scenes, self.sim_config, self.options)
        client = Client(sock, peer, JsonStream(), session, time.time())
        self.client = client
        self.served += 1
        self._selector.register(sock, selectors.EVENT_READ)
        self.report(f"client {peer} connected")
        self._send(client, session.start())

    def _read(self, client: Client) -> None:
        try:
            data = client.sock.recv(RECV_BYTES)
        except OSError as exc:
            self._drop(client, f"connection error: {exc}")
            return
        if not data:
            self._drop(client, "disconnected")
            return
        malformed = client.stream.counts.malformed
        for message in client.stream.feed(data):
            try:
                replies = client.session.handle(message)
            except Exception as exc:  # a bug must cost this client, not the server
                log.exception("handling %s", str(message)[:200])
                self._drop(client, f"sent a message the simulator failed on ({type(exc).__name__}"
                           f": {exc}); dropped")
                return
            self._send(client, replies)
            if self.client is not client:
                return
        if client.stream.counts.malformed > malformed and malformed == 0:
            self.report(f"client {client.peer}: {client.stream.errors[-1]} (ignored; "
                        "counted in the summary)")

    def _send(self, client: Client, messages: list[Message]) -> None:
        if not messages or self.client is not client:
            return
        try:
            client.sock.sendall(b"".join(encode_line(msg) for msg in messages))
        except TimeoutError:
            self._drop(client, f"read nothing for {SEND_TIMEOUT_S:g} s: dropped")
        except OSError as exc:
            self._drop(client, f"connection error: {exc}")

    def _drop(self, client: Client, why: str) -> None:
        if self.client is client:
            self.client = None
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(client.sock)
        client.sock.close()
        self.report(f"client {client.peer} {why}; {summary(client)}")


def summary(client: Client) -> str:
    """One line of what a client did, and what it sent that could not be used."""
    c, s = client.session.counts, client.stream.counts
    parts = [f"{c.controls} controls, {c.frames} frames, {c.laps} lap(s)"]
    bad = []
    if s.malformed or s.skipped_bytes or s.oversize:
        bad.append(f"{s.malformed} malformed message(s), {s.skipped_bytes} stray byte(s), "
                   f"{s.oversize} oversize")
    if c.unknown:
        bad.append("unknown msg_type " + ", ".join(f"{k} ×{n}" for k, n in c.unknown.items()))
    if c.invalid:
        bad.append(f"{c.invalid} unusable value(s)")
    if s.comma_decimals:
        bad.append(f"{s.comma_decimals} comma-decimal message(s) repaired")
    return "; ".join(parts + bad)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CarError(f"port {port} on {host} is in use (another simulator? `ss -ltnp "
                           f"| grep :{port}`): stop it or pass another --port") from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise CarError(f"--host {host}: not an address of this machine; use 127.0.0.1 "
                           "(this machine only) or 0.0.0.0 (every network)") from None
        if exc.errno == errno.EACCES:
            raise CarError(f"port {port} needs root; use a port above 1023 (9091 is the "
                           "donkey simulator's)") from None
        raise CarError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    except socket.gaierror:
        sock.close()
        raise CarError(f"--host {host}: not an address this machine can resolve") from None
    sock.listen(4)
    sock.setblocking(False)
    return sock
