"""The MCU emulator: ``McuCore`` behind a pseudo-terminal, with a simulated RC receiver and
battery, so the host driver, `car drive` and the calibration tools run byte for byte without
a board. `car mcu emulate` starts one and prints the port to open.

``Emulator.step(received, now_s)`` is the whole behaviour and takes the time as an argument
(the tests drive it with a fake clock); ``PtyEmulator`` runs it against a real pty on a
thread, on ``time.monotonic()`` unless told otherwise. ``PtyEmulator.inject`` puts a third
party's frames on the MCU's RX line, next to the host's (the tests' rogue CONFIG).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import select
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from car.mcu import protocol as p
from car.mcu.core import McuCore

Clock = Callable[[], float]


@dataclass(frozen=True)
class RcSignal:
    """What the simulated RC receiver reads: ``none`` (no transmitter: 0, 0), ``center``,
    ``sweep`` (steering swings ±400 µs every 4 s at a little throttle) or fixed pulses."""

    kind: str = "none"
    steering_us: int = 1500
    throttle_us: int = 1500

    @classmethod
    def parse(cls, text: str) -> RcSignal:
        if text in ("none", "center", "sweep"):
            return cls(text)
        try:
            steering, throttle = (int(v) for v in text.split(","))
        except ValueError:
            raise ValueError(f"--rc {text!r}: expected none, center, sweep or STEER_US,"
                             "THROTTLE_US (e.g. 1600,1550)") from None
        if not all(800 <= v <= 2200 for v in (steering, throttle)):
            raise ValueError(f"--rc {text!r}: RC pulses are 800 to 2200 µs")
        return cls("fixed", steering, throttle)

    def at(self, t_s: float) -> tuple[int, int]:
        if self.kind == "none":
            return 0, 0
        if self.kind == "center":
            return 1500, 1500
        if self.kind == "sweep":
            return round(1500 + 400 * math.sin(2 * math.pi * t_s / 4.0)), 1560
        return self.steering_us, self.throttle_us


@dataclass(frozen=True)
class Battery:
    """A 2S LiPo: ``full_mv`` at start, draining ``drain_mv_per_min`` and sagging with the
    throttle applied (``sag_mv`` at full throttle)."""

    full_mv: int = 8200
    drain_mv_per_min: float = 20.0
    sag_mv: float = 400.0
    empty_mv: int = 6400

    def at(self, t_s: float, throttle_us: int, neutral_us: int) -> int:
        load = min(1.0, abs(throttle_us - neutral_us) / 500.0)
        mv = self.full_mv - self.drain_mv_per_min * t_s / 60.0 - self.sag_mv * load
        return int(max(self.empty_mv, mv))


class Emulator:
    """The MCU's behaviour over time: received bytes in, transmitted bytes out."""

    def __init__(self, *, firmware: str = "car-emulator", telemetry_hz: float = 50.0,
                 rc: RcSignal | None = None, battery: Battery | None = None,
                 start_s: float = 0.0):
        self.core = McuCore(firmware=firmware)
        self.telemetry_period_ms = max(1, round(1000.0 / telemetry_hz))
        self.rc = rc or RcSignal()
        self.battery = battery or Battery()
        self.start_s = start_s
        self._next_telemetry_ms = 0
        self._last_status = -1
        self.events: list[tuple[float, str]] = []  # (time, what changed), for logs and tests
        self.outputs: deque[tuple[float, tuple[int, int]]] = deque(maxlen=10_000)  # changes

    def now_ms(self, now_s: float) -> int:
        return math.floor((now_s - self.start_s) * 1000.0 + 1e-6)

    def step(self, received: bytes, now_s: float) -> bytes:
        """Take the bytes received by ``now_s``, run the watchdog, and return what the MCU
        sends: replies, and a TELEMETRY frame when one is due."""
        core = self.core
        t = now_s - self.start_s
        now_ms = self.now_ms(now_s)
        core.rc = self.rc.at(t)
        out = bytearray(core.receive(received, now_ms) if received else b"")
        core.tick(now_ms)
        outputs = core.outputs
        if not self.outputs or self.outputs[-1][1] != outputs:
            self.outputs.append((now_s, outputs))
        core.battery_mv = self.battery.at(t, outputs[1], core.limits.thr[1])
        self._note_status(now_s)
        if now_ms >= self._next_telemetry_ms:
            out += core.telemetry()
            self._next_telemetry_ms += self.telemetry_period_ms
            if self._next_telemetry_ms <= now_ms:  # fell behind: restart, without a burst
                self._next_telemetry_ms = now_ms + self.telemetry_period_ms
        return bytes(out)

    def _note_status(self, now_s: float) -> None:
        status = self.core.status
        if status == self._last_status:
            return
        changed = status ^ self._last_status if self._last_status >= 0 else status
        self._last_status = status
        for bit, name in ((p.ST_FAILSAFE, "FAILSAFE"), (p.ST_ESTOP, "ESTOP"),
                          (p.ST_RC_PASSTHROUGH, "RC_PASSTHROUGH"),
                          (p.ST_CONFIGURED, "CONFIGURED")):
            if changed & bit:
                self.events.append((now_s, f"{name} {'on' if status & bit else 'off'}"))


class PtyEmulator:
    """An Emulator on the master side of a pseudo-terminal; open ``path`` as a serial port.

    The emulator keeps the slave side open itself, so a host may close and reopen the port
    (a reconnect) without the pty hanging up. Output the host does not read is dropped, as
    a UART would.
    """

    def __init__(self, emulator: Emulator | None = None, *, clock: Clock = time.monotonic,
                 poll_s: float = 0.001, on_event: Callable[[float, str], None] | None = None):
        self.clock = clock
        self.emulator = emulator or Emulator(start_s=clock())
        self.poll_s = poll_s
        self.on_event = on_event
        self.master_fd, self._slave_fd = os.openpty()
        tty.setraw(self._slave_fd)
        os.set_blocking(self.master_fd, False)
        self.path = os.ttyname(self._slave_fd)
        self.frozen = threading.Event()  # set: a hung MCU that neither reads nor sends
        self.injected_seqs: list[int] = []  # the MCU's next SEQ when each injection was taken
        self._injected: list[tuple[bytes, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="mcu-emulator", daemon=True)
        self._lock = threading.Lock()

    @property
    def core(self) -> McuCore:
        return self.emulator.core

    def start(self) -> PtyEmulator:
        self._thread.start()
        return self

    def run(self) -> None:
        """Serve until ``stop()``: read what the host wrote, step, write the replies."""
        seen = 0
        while not self._stop.is_set():
            if self.frozen.is_set():
                time.sleep(self.poll_s)
                continue
            ready, _, _ = select.select([self.master_fd], [], [], self.poll_s)
            data = self._read() if ready else b""
            with self._lock:
                data = self._take_injected() + data
                out = self.emulator.step(data, self.clock())
                events = self.emulator.events[seen:]
                seen = len(self.emulator.events)
            if out:
                self._write(out)
            if self.on_event is not None:
                for t, what in events:
                    self.on_event(t, what)

    def _read(self) -> bytes:
        try:
            data = os.read(self.master_fd, 4096)
        except BlockingIOError:
            return b""
        except OSError as exc:  # EIO: no slave open (cannot happen while we hold it)
            if exc.errno != errno.EIO:
                raise
            return b""
        return data

    def _write(self, data: bytes) -> None:
        with contextlib.suppress(BlockingIOError):  # the host is not reading: dropped
            os.write(self.master_fd, data)

    def inject(self, data: bytes, *, lose_replies: bool = False) -> None:
        """Whole frames from a third party on the MCU's RX line (a second device, a rogue
        program), taken between two of the host's frames; with ``lose_replies`` the MCU's
        answers to them are lost on the line (noise), so the host sees only TELEMETRY."""
        with self._lock:
            self._injected.append((data, lose_replies))

    def _take_injected(self) -> bytes:
        """The next injection to take now (under the lock), once no host frame is half
        received; one whose replies are lost is taken here and its replies dropped."""
        core = self.emulator.core
        if not self._injected or core.parser.pending:
            return b""
        data, lose_replies = self._injected.pop(0)
        self.injected_seqs.append(core.tx_seq)
        if not lose_replies:
            return data
        core.receive(data, self.emulator.now_ms(self.clock()))
        return b""

    def reboot(self) -> None:
        """The MCU restarts (a brown-out) while the port stays open: boot state, not
        configured; the RC receiver and the battery carry on."""
        with self._lock:
            self.emulator.core = McuCore(firmware=self.emulator.core.firmware)

    def set_rc(self, rc: RcSignal) -> None:
        with self._lock:
            self.emulator.rc = rc

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def close(self) -> None:
        self.stop()
        for fd in (self.master_fd, self._slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> PtyEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
