"""The host's watch over the MCU's configuration: every CONFIG_ACK and TELEMETRY is held to
the CONFIG this car sent, so a CONFIG from anyone else (a second device or program writing
to the MCU's RX line) or an MCU that restarted without the port closing is noticed.

Pure: messages in, a fault line and a restore request out; ``McuLink`` does the I/O.

What protocol v1 lets the host see, and what each check catches:

- every valid CONFIG is answered by a CONFIG_ACK naming its SEQ. An ACK for a SEQ this car
  did not send (or already saw acknowledged) means someone else's CONFIG was applied;
- TELEMETRY's CONFIGURED bit clear: the MCU is at its boot limits (it restarted);
- RC_PASSTHROUGH set although this car did not configure it;
- applied pulses outside this car's limits, or, in FAILSAFE or e-stop, other than its
  neutral: the limits in force are not this car's.

Someone else's CONFIG latches a fault for the session (the car is held at neutral) and asks
for this car's CONFIG to be sent again; a restarted MCU only asks for it, and its fault
clears once that CONFIG is acknowledged.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

from car.mcu import protocol as p

log = logging.getLogger(__name__)
PENDING_MAX = 16  # this car's unacknowledged CONFIG SEQs remembered (a frozen MCU's backlog)


@dataclass
class ConfigGuard:
    """Checks what the MCU reports against ``config``, the CONFIG this car sends."""

    config: p.Config
    port: str
    tampered: str | None = None  # someone else's CONFIG: latched for the session
    unconfigured: str | None = None  # the MCU lost its CONFIG: until ours is acked again
    restore: bool = False  # send this car's CONFIG now, and until it is acknowledged
    restore_requests: int = 0  # each new request is answered at once
    tampers: int = 0
    last_acked: int | None = None  # the SEQ of this car's last acknowledged CONFIG
    detected_seq: int | None = None  # the MCU SEQ of the frame that showed the last tamper
    _pending: deque[int] = field(default_factory=lambda: deque(maxlen=PENDING_MAX))
    _sent_any: bool = False
    _armed: bool = False  # our CONFIG is acked: TELEMETRY reflects our limits

    @property
    def fault(self) -> str | None:
        return self.tampered or self.unconfigured

    def new_connection(self) -> None:
        """A handshake starts: TELEMETRY is not held to our limits until our CONFIG is acked."""
        self._armed = False

    def sent(self, seq: int) -> None:
        """This car sent its CONFIG with SEQ ``seq``."""
        self._pending.append(seq)
        self._sent_any = True

    def on_ack(self, ack: p.ConfigAck, frame_seq: int) -> None:
        if ack.acked_seq in self._pending:  # ours: the MCU applies frames in order, so
            while self._pending.popleft() != ack.acked_seq:  # older ones will not be acked
                pass  # and ours is in force now, whatever came before it
            self._armed, self.restore, self.unconfigured = True, False, None
            self.last_acked = ack.acked_seq
        elif self._sent_any:  # before our first CONFIG: ours replaces whatever it was
            self._tamper(f"a CONFIG_ACK for SEQ {ack.acked_seq}, a CONFIG this car did not "
                         "send", frame_seq)

    def on_telemetry(self, t: p.Telemetry, frame_seq: int) -> None:
        if not self._armed or self.restore:
            return
        if not t.configured:
            self.unconfigured = (
                f"MCU on {self.port} reports it is not configured (did it restart?): "
                "re-sending this car's CONFIG, outputs neutral until it is acknowledged")
            log.error("%s", self.unconfigured)
            self._ask_restore()
            return
        why = self.mismatch(t)
        if why is not None:
            self._tamper(f"TELEMETRY shows {why}", frame_seq)

    def mismatch(self, t: p.Telemetry) -> str | None:
        """What in ``t`` cannot come from this car's CONFIG, or None."""
        c = self.config
        steer, thr = t.applied_steering_us, t.applied_throttle_us
        if t.passthrough and not c.cfg_flags & p.CFG_RC_PASSTHROUGH:
            return "RC passthrough, which this car did not configure"
        if not c.steer_min_us <= steer <= c.steer_max_us:
            return f"steering {steer} µs applied, outside this car's " \
                   f"{c.steer_min_us}-{c.steer_max_us} µs"
        if not c.thr_min_us <= thr <= c.thr_max_us:
            return f"throttle {thr} µs applied, outside this car's " \
                   f"{c.thr_min_us}-{c.thr_max_us} µs"
        neutral = (c.steer_neutral_us, c.thr_neutral_us)
        if (t.estop or (t.failsafe and not t.passthrough)) and (steer, thr) != neutral:
            state = "e-stop" if t.estop else "FAILSAFE"
            return f"{steer}/{thr} µs applied in {state}, not this car's neutral " \
                   f"{neutral[0]}/{neutral[1]} µs"
        return None

    def _ask_restore(self) -> None:
        self._armed, self.restore = False, True
        self.restore_requests += 1

    def _tamper(self, evidence: str, frame_seq: int) -> None:
        c = self.config
        self.tampers += 1
        self.detected_seq = frame_seq
        self._ask_restore()
        line = (f"MCU on {self.port} was configured by someone else ({evidence}): this car "
                f"re-sends its own limits (steering {c.steer_min_us}-{c.steer_max_us} µs, "
                f"throttle {c.thr_min_us}-{c.thr_max_us} µs) and holds neutral for the rest "
                f"of the session; find what else writes to the MCU (`fuser {self.port}`, a "
                "second device on its RX pin), then restart")
        if self.tampered is None:
            self.tampered = line
        log.error("%s", line)
