"""The host's serial link to the MCU: connect (PING → PONG, CONFIG → CONFIG_ACK), send
DRIVE frames, read TELEMETRY on a background thread, notice a lost link and reconnect.

The link is lost when no TELEMETRY arrives for ``3 × timeout_ms`` or the port fails (a
cable pulled out). ``fault`` then says why until the reader thread has reconnected, which
it tries every ``RETRY_S``; the MCU's own watchdog has long put the outputs to neutral.

Every CONFIG_ACK and TELEMETRY is also held to this car's CONFIG (``ConfigGuard``): someone
else's CONFIG, or an MCU that lost its own, is a fault, and the reader sends this car's
CONFIG again. It re-sends it every ``REASSERT_S`` anyway, so a CONFIG whose ACK was lost
on the line does not stay in force.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial

from car.actuator import ActuatorError
from car.mcu import protocol as p
from car.mcu.guard import ConfigGuard

log = logging.getLogger(__name__)
Clock = Callable[[], float]
LOST_AFTER_TIMEOUTS = 3
RETRY_S = 0.5
PING_EVERY_S = 0.25
ACK_WAIT_S = 0.3
ACK_TRIES = 3
FIRST_TELEMETRY_WAIT_S = 0.1  # 5 periods at 50 Hz
REASSERT_S = 1.0  # this car's CONFIG is sent again this often while connected
# A write blocked this long (the MCU stopped reading) is given up. pyserial also reports a
# timeout when the thread merely stalled past it after writing, so a timeout alone is not a
# lost link: telemetry silence decides that.
WRITE_TIMEOUT_S = 0.5


@dataclass
class LinkStats:
    """What went over the link since it was opened."""

    sent: int = 0
    send_skipped: int = 0  # DRIVE frames not sent because the link was down
    write_timeouts: int = 0  # writes that timed out (or a stalled thread noticed too late)
    telemetry: int = 0
    reconnects: int = 0
    losses: int = 0
    config_resends: int = 0  # CONFIGs sent after the handshake (to restore, or reassert)


class McuLink:
    """One MCU on one serial port. ``open()`` connects (or raises ActuatorError with what
    to do); ``start()`` runs the reader thread; ``send_drive`` is thread-safe."""

    def __init__(self, port: str, config: p.Config, *, baud: int = 115200,
                 connect_timeout_s: float = 3.0, clock: Clock = time.monotonic,
                 open_port: Callable[..., Any] | None = None):
        self.port = port
        self.config = config
        self.baud = baud
        self.connect_timeout_s = connect_timeout_s
        self.clock = clock
        self._open_port = open_port or _open_serial
        self.pong: p.Pong | None = None
        self.stats = LinkStats()
        self.parser = p.FrameParser(dict(p.MCU_TO_HOST))
        self.on_telemetry: list[Callable[[p.Telemetry], None]] = []
        self.guard = ConfigGuard(config, port)
        self.reassert_s = REASSERT_S
        self._config_sent_s = 0.0
        self._restores_answered = 0
        self._serial: Any = None
        self._seq = secrets.randbelow(256)  # a new session rarely repeats the last one's SEQ
        self._write_lock = threading.Lock()
        self._telemetry: p.Telemetry | None = None
        self._telemetry_s: float | None = None
        self._fault: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ connecting

    def open(self) -> p.Pong:
        """Open the port and shake hands; raises ActuatorError saying what is wrong."""
        port = self._open_port(self.port, self.baud)
        try:
            pong = self._handshake(port)
        except BaseException:
            port.close()
            raise
        self._publish(port, pong)
        return pong

    def _handshake(self, port: Any) -> p.Pong:
        port.reset_input_buffer()
        self.guard.new_connection()
        pong = self._ping(port)
        if pong.protocol_version != p.PROTOCOL_VERSION:
            raise ActuatorError(
                f"{self.port}: the MCU speaks protocol v{pong.protocol_version} "
                f"({pong.firmware or 'unnamed firmware'}), this car speaks "
                f"v{p.PROTOCOL_VERSION}; flash firmware/car_mcu (see firmware/README.md)")
        self._configure(port)
        last = self._telemetry or self._await(port, p.Telemetry, FIRST_TELEMETRY_WAIT_S)
        if last is not None and last.last_seq == self._seq:  # the MCU would take our first
            self._seq = (self._seq + 1) & 0xFF  # DRIVE for a duplicate of a previous session's
        return pong

    def _ping(self, port: Any) -> p.Pong:
        deadline = self.clock() + self.connect_timeout_s
        while self.clock() < deadline and not self._stop.is_set():
            self._write(port, p.Ping())
            reply = self._await(port, p.Pong, min(PING_EVERY_S, deadline - self.clock()))
            if reply is not None:
                return reply
        raise ActuatorError(
            f"{self.port}: no answer to PING in {self.connect_timeout_s:g} s; is the car "
            f"firmware flashed (firmware/README.md), the board powered, and actuator.baud "
            f"({self.baud}) the firmware's rate?")

    def _configure(self, port: Any) -> None:
        c = self.config
        for _ in range(ACK_TRIES):
            seq = self._write(port, c)
            self.guard.sent(seq)
            self._config_sent_s = self.clock()
            ack = self._await(port, p.ConfigAck, ACK_WAIT_S,
                              accept=lambda m, seq=seq: m.acked_seq == seq)
            if ack is not None:
                return
        raise ActuatorError(
            f"{self.port}: the MCU did not acknowledge CONFIG (timeout {c.timeout_ms} ms, "
            f"steering {c.steer_min_us}/{c.steer_neutral_us}/{c.steer_max_us} µs, throttle "
            f"{c.thr_min_us}/{c.thr_neutral_us}/{c.thr_max_us} µs); it refuses pulses "
            "outside 500-2500 µs or a neutral not strictly inside its limits")

    def _await(self, port: Any, kind: type, wait_s: float,
               accept: Callable[[Any], bool] = lambda m: True) -> Any:
        """The first message of ``kind`` within ``wait_s`` (telemetry is taken on the way)."""
        deadline = self.clock() + max(0.0, wait_s)
        while True:
            for message in self._read_messages(port):
                if isinstance(message, kind) and accept(message):
                    return message
            if self.clock() >= deadline or self._stop.is_set():  # closing: give up at once
                return None

    def _read_messages(self, port: Any) -> list[p.Message]:
        data = port.read(max(1, port.in_waiting))
        messages = []
        for frame in self.parser.iter_feed(data):
            message = frame.message()
            if isinstance(message, p.Telemetry):
                self.guard.on_telemetry(message, frame.seq)  # before listeners act on it
                self._take_telemetry(message)
            elif isinstance(message, p.ConfigAck):
                self.guard.on_ack(message, frame.seq)
            messages.append(message)
        return messages

    def _publish(self, port: Any, pong: p.Pong) -> bool:
        """Make ``port`` the link's; False (and the port closed) if the link is closing."""
        with self._write_lock:
            if self._stop.is_set():
                port.close()
                return False
            self._serial = port
            self.pong = pong
            self._fault = None
            self._telemetry_s = self.clock()  # the silence clock starts now
        return True

    # ------------------------------------------------------------------ running

    def start(self) -> McuLink:
        """Read telemetry (and reconnect when lost) on a background thread."""
        self._thread = threading.Thread(target=self._run, name="mcu-link", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        next_try = 0.0
        while not self._stop.is_set():
            port = self._serial
            if port is None:
                if self.clock() >= next_try:
                    next_try = self.clock() + RETRY_S
                    self._reconnect()
                else:
                    self._stop.wait(0.02)
                continue
            try:
                self._read_messages(port)
            except (serial.SerialException, OSError) as exc:
                self._lose(f"the serial port failed ({exc})")
                continue
            except Exception as exc:  # a bug must not end the thread that reconnects
                log.exception("MCU link reader failed")
                self._lose(f"the reader failed ({type(exc).__name__}: {exc})")
                continue
            silent_s = self.clock() - (self._telemetry_s or 0.0)
            if silent_s > self.lost_after_s:
                self._lose(f"no telemetry from the MCU for {silent_s * 1000:.0f} ms")
            else:
                self._keep_config(port)

    def _keep_config(self, port: Any) -> None:
        """Send this car's CONFIG again: at once (then every ACK_WAIT_S until acknowledged)
        when the guard asks to restore it, else every ``reassert_s``."""
        guard = self.guard
        wait_s = ACK_WAIT_S if guard.restore else self.reassert_s
        if self._restores_answered != guard.restore_requests:
            self._restores_answered, wait_s = guard.restore_requests, 0.0
        if self.clock() - self._config_sent_s < wait_s:
            return
        failure = None
        with self._write_lock:
            if self._serial is not port:  # lost meanwhile: the handshake will configure
                return
            try:
                seq = self._write_locked(port, self.config)
            except serial.SerialTimeoutException:
                self.stats.write_timeouts += 1
                return
            except (serial.SerialException, OSError) as exc:
                failure = exc
            else:
                self.guard.sent(seq)
                self._config_sent_s = self.clock()
                self.stats.config_resends += 1
        if failure is not None:
            self._lose(f"a write failed ({failure})")

    def _reconnect(self) -> None:
        try:
            port = self._open_port(self.port, self.baud)
        except ActuatorError:
            return
        try:
            pong = self._handshake(port)
        except (ActuatorError, serial.SerialException, OSError) as exc:
            log.debug("reconnect to %s failed: %s", self.port, exc)
            port.close()
            return
        if not self._publish(port, pong):
            return
        self.stats.reconnects += 1
        log.warning("MCU on %s reconnected (%s)", self.port, pong.firmware)

    def _lose(self, why: str) -> None:
        with self._write_lock:
            port, self._serial = self._serial, None
            if port is None:  # already lost (the reader and a writer both noticed)
                return
            self._fault = f"MCU link on {self.port} lost: {why}; reconnecting"
            self._telemetry = None  # nothing from before the loss passes for current
        self.stats.losses += 1
        log.error("%s", self._fault)
        with contextlib.suppress(serial.SerialException, OSError):
            port.close()

    @property
    def lost_after_s(self) -> float:
        return LOST_AFTER_TIMEOUTS * self.config.timeout_ms / 1000.0

    @property
    def fault(self) -> str | None:
        """Why the link is down or the MCU's limits are not this car's, or None."""
        if self._fault is not None:
            return self._fault
        if self._telemetry_s is not None:
            silent_s = self.clock() - self._telemetry_s
            if silent_s > self.lost_after_s:
                return f"MCU link on {self.port} lost: no telemetry for {silent_s * 1000:.0f} ms"
        return self.guard.fault

    def _take_telemetry(self, message: p.Telemetry) -> None:
        self._telemetry = message
        self._telemetry_s = self.clock()
        self.stats.telemetry += 1
        for callback in self.on_telemetry:
            try:
                callback(message)
            except Exception:  # a listener's bug is not a link failure
                log.exception("a telemetry listener failed")

    @property
    def telemetry(self) -> p.Telemetry | None:
        """The latest TELEMETRY, or None if none came or it is older than the link allows."""
        return self._telemetry if self.telemetry_age_s() <= self.lost_after_s else None

    def telemetry_age_s(self) -> float:
        return float("inf") if self._telemetry_s is None or self._telemetry is None \
            else self.clock() - self._telemetry_s

    # ------------------------------------------------------------------ sending

    def send_drive(self, steering_us: int, throttle_us: int, flags: int) -> bool:
        """Send one DRIVE; False (and counted) when the link is down."""
        failure = None
        with self._write_lock:
            port = self._serial
            if port is None:
                self.stats.send_skipped += 1
                return False
            try:
                self._write_locked(port, p.Drive(steering_us, throttle_us, flags))
            except serial.SerialTimeoutException:
                self.stats.write_timeouts += 1
                return False
            except (serial.SerialException, OSError) as exc:
                self.stats.send_skipped += 1
                failure = exc
        if failure is not None:
            self._lose(f"a write failed ({failure})")
            return False
        return True

    def _write(self, port: Any, message: p.Message) -> int:
        with self._write_lock:
            return self._write_locked(port, message)

    def _write_locked(self, port: Any, message: p.Message) -> int:
        seq = self._seq
        self._seq = (self._seq + 1) & 0xFF
        port.write(p.encode(message, seq))
        self.stats.sent += 1
        return seq

    def close(self, final: p.Drive | None = None) -> None:
        """Stop the reader; send ``final`` first if given (best effort); close the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        with self._write_lock:
            port, self._serial = self._serial, None
            if port is None:
                return
            try:
                if final is not None:  # the OS sends it before the port really closes
                    self._write_locked(port, final)
            except (serial.SerialException, OSError) as exc:
                log.warning("could not send the final neutral to %s: %s", self.port, exc)
            finally:
                port.close()


def _open_serial(port: str, baud: int) -> Any:
    """Open ``port`` 8N1 for exclusive use; errors say what is wrong and what to do."""
    try:
        return serial.Serial(port, baud, timeout=0.02, write_timeout=WRITE_TIMEOUT_S,
                             exclusive=True)
    except serial.SerialException as exc:
        raise ActuatorError(_open_error(port, exc)) from None


def _open_error(port: str, exc: serial.SerialException) -> str:
    code = exc.errno if isinstance(exc.errno, int) else None
    text = str(exc)
    if code in (errno.ENOENT, errno.ENXIO, errno.ENODEV):
        return (f"serial port {port} does not exist; is the MCU plugged in? List ports with "
                "`ls /dev/ttyACM* /dev/ttyUSB*` and set actuator.port or --port")
    if code in (errno.EAGAIN, errno.EBUSY) or "exclusively lock" in text:
        return (f"serial port {port} is busy: another program has it open (find it with "
                f"`fuser {port}`), stop it and try again")
    if code in (errno.EACCES, errno.EPERM):
        return (f"no permission to open {port}: add yourself to the dialout group (`sudo "
                "usermod -aG dialout $USER`, then log in again)")
    if code in (errno.EISDIR, errno.ENOTTY) or "Inappropriate ioctl" in text:
        return (f"{port} is not a serial port; set actuator.port or --port to the MCU's "
                "(e.g. /dev/ttyACM0)")
    return f"cannot open serial port {port}: {text}"
