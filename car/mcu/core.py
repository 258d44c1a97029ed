"""The MCU's rules as a pure state machine: the emulator runs it, and the C firmware core
(``firmware/car_mcu/src/mcu_core.c``) is tested against it frame for frame.

Time is milliseconds from an injectable clock; nothing here reads a clock or a port.

Rules (``docs/serial-protocol.md``):

- boot: FAILSAFE, outputs neutral, limits 1000–2000 µs with neutral 1500, timeout 250 ms;
- a DRIVE whose SEQ equals the last applied DRIVE's SEQ is a duplicate: ignored entirely
  (it does not feed the watchdog either, so a host stuck resending one frame is not alive);
- any other valid DRIVE feeds the watchdog and clears FAILSAFE. ESTOP latches neutral; while
  latched, only a DRIVE with flags == 0 clears the latch. ENGAGE (not latched) applies the
  pulses clamped to the limits; ENGAGE clear → neutral;
- no valid DRIVE for ``timeout_ms`` → FAILSAFE: neutral, or with RC passthrough configured,
  an RC signal present and no e-stop latched, the RC pulses clamped to the limits;
- CONFIG with consistent values (500–2500 µs, min < neutral < max, timeout 20–5000 ms) is
  applied and answered by CONFIG_ACK; an inconsistent one is counted and not answered;
- PING is answered by PONG. The MCU's own frames carry its own SEQ counter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from car.mcu import protocol as p

BOOT_LIMITS = (1000, 1500, 2000)
BOOT_TIMEOUT_MS = 250
PULSE_RANGE_US = (500, 2500)
TIMEOUT_RANGE_MS = (20, 5000)


@dataclass
class Limits:
    steer: tuple[int, int, int] = BOOT_LIMITS  # min, neutral, max
    thr: tuple[int, int, int] = BOOT_LIMITS
    timeout_ms: int = BOOT_TIMEOUT_MS
    passthrough: bool = False


@dataclass
class CoreCounts:
    drives: int = 0
    duplicates: int = 0
    configs: int = 0
    config_rejected: int = 0
    pings: int = 0
    watchdog_trips: int = 0


def _clamp(value: int, limits: tuple[int, int, int]) -> int:
    return max(limits[0], min(limits[2], value))


def config_is_valid(c: p.Config) -> bool:
    lo, hi = PULSE_RANGE_US
    pulses = (c.steer_min_us, c.steer_neutral_us, c.steer_max_us,
              c.thr_min_us, c.thr_neutral_us, c.thr_max_us)
    return (TIMEOUT_RANGE_MS[0] <= c.timeout_ms <= TIMEOUT_RANGE_MS[1]
            and all(lo <= v <= hi for v in pulses)
            and c.steer_min_us < c.steer_neutral_us < c.steer_max_us
            and c.thr_min_us < c.thr_neutral_us < c.thr_max_us)


@dataclass
class McuCore:
    """One MCU: feed it received bytes and tick it with the time; it returns the bytes it
    would transmit. ``rc`` is the receiver's input (0, 0 = no signal)."""

    firmware: str = "car-emulator"
    battery_mv: int = 0
    rc: tuple[int, int] = (0, 0)
    limits: Limits = field(default_factory=Limits)
    configured: bool = False
    failsafe: bool = True
    estop: bool = False
    engaged: bool = False
    command: tuple[int, int] = (BOOT_LIMITS[1], BOOT_LIMITS[1])  # last ENGAGE pulses
    last_seq: int | None = None  # SEQ of the last applied DRIVE
    last_drive_ms: int = 0
    tx_seq: int = 0
    counts: CoreCounts = field(default_factory=CoreCounts)
    parser: p.FrameParser = field(default_factory=lambda: p.FrameParser(dict(p.HOST_TO_MCU)))

    # ------------------------------------------------------------------ inputs

    def receive(self, data: bytes, now_ms: int) -> bytes:
        """Bytes from the host at ``now_ms``; returns the replies (CONFIG_ACK, PONG)."""
        out = bytearray()
        for frame in self.parser.iter_feed(data):
            out += self.handle(frame, now_ms)
        return bytes(out)

    def handle(self, frame: p.Frame, now_ms: int) -> bytes:
        message = frame.message()
        if isinstance(message, p.Drive):
            self._drive(message, frame.seq, now_ms)
            return b""
        if isinstance(message, p.Config):
            self.counts.configs += 1
            if not config_is_valid(message):
                self.counts.config_rejected += 1
                return b""
            self.limits = Limits(
                (message.steer_min_us, message.steer_neutral_us, message.steer_max_us),
                (message.thr_min_us, message.thr_neutral_us, message.thr_max_us),
                message.timeout_ms, bool(message.cfg_flags & p.CFG_RC_PASSTHROUGH))
            self.configured = True
            return self._send(p.ConfigAck(frame.seq))
        self.counts.pings += 1
        return self._send(p.Pong(p.PROTOCOL_VERSION, self.firmware))

    def _drive(self, d: p.Drive, seq: int, now_ms: int) -> None:
        if seq == self.last_seq:
            self.counts.duplicates += 1
            return
        self.counts.drives += 1
        self.last_seq = seq
        self.last_drive_ms = now_ms
        self.failsafe = False
        if d.flags & p.ESTOP:
            self.estop = True
        elif self.estop and d.flags == 0:
            self.estop = False
        self.engaged = bool(d.flags & p.ENGAGE) and not self.estop
        if self.engaged:
            self.command = (d.steering_us, d.throttle_us)

    def tick(self, now_ms: int) -> None:
        """The watchdog: FAILSAFE once no valid DRIVE came for ``timeout_ms``."""
        if not self.failsafe and now_ms - self.last_drive_ms >= self.limits.timeout_ms:
            self.failsafe = True
            self.engaged = False
            self.counts.watchdog_trips += 1

    # ------------------------------------------------------------------ outputs

    @property
    def passing_through(self) -> bool:
        return (self.failsafe and self.limits.passthrough and not self.estop
                and self.rc[0] != 0 and self.rc[1] != 0)

    @property
    def outputs(self) -> tuple[int, int]:
        """The pulses on the servo and ESC pins now."""
        lim = self.limits
        if self.passing_through:
            return _clamp(self.rc[0], lim.steer), _clamp(self.rc[1], lim.thr)
        if self.failsafe or self.estop or not self.engaged:
            return lim.steer[1], lim.thr[1]
        return _clamp(self.command[0], lim.steer), _clamp(self.command[1], lim.thr)

    @property
    def status(self) -> int:
        return ((p.ST_FAILSAFE if self.failsafe else 0)
                | (p.ST_RC_PASSTHROUGH if self.passing_through else 0)
                | (p.ST_ESTOP if self.estop else 0)
                | (p.ST_CONFIGURED if self.configured else 0))

    def telemetry(self) -> bytes:
        steer, thr = self.outputs
        return self._send(p.Telemetry(self.rc[0], self.rc[1], self.battery_mv, self.status,
                                      self.last_seq or 0, steer, thr))

    def _send(self, message: p.Message) -> bytes:
        frame = p.encode(message, self.tx_seq)
        self.tx_seq = (self.tx_seq + 1) & 0xFF
        return frame
