"""The ``rc`` controller: the user's own RC transmitter, read by the MCU's receiver inputs
and reported in its TELEMETRY. A person drives (and records) with the transmitter they know.

The pulses are mapped back to [-1, 1] through the same calibration as the outputs, so a
recorded label reproduces the servo and ESC pulses the person's transmitter asked for.
Without a signal (the transmitter off, the receiver unplugged or the link down) it reads
neutral.
"""

from __future__ import annotations

from typing import Protocol

from car.frames import Mode, UserInput
from car.mcu import protocol as p
from car.mcu.pulses import Channel, PulseMap

DEADBAND_US = 8  # a transmitter at rest wanders a few µs around its centre


class TelemetrySource(Protocol):
    @property
    def telemetry(self) -> p.Telemetry | None: ...


class RcController:
    """``poll`` → the transmitter's steering and throttle; the mode is requested once."""

    def __init__(self, source: TelemetrySource, pulses: PulseMap, mode: Mode | None = None):
        self.source = source
        self.pulses = pulses
        self._mode = mode

    def poll(self, now_s: float) -> UserInput:
        mode, self._mode = self._mode, None
        t = self.source.telemetry
        if t is None or not t.rc_present:
            return UserInput(0.0, 0.0, mode=mode)
        return UserInput(self._map(self.pulses.steering, t.rc_steering_us),
                         self._map(self.pulses.throttle, t.rc_throttle_us), mode=mode)

    def close(self) -> None:
        """Nothing to release: the MCU link belongs to the actuator."""

    @staticmethod
    def _map(channel: Channel, us: int) -> float:
        return 0.0 if abs(us - channel.mid_us) <= DEADBAND_US else channel.from_us(us)
