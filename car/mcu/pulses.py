"""Normalised steering and throttle ([-1, 1]) to servo and ESC pulses (µs) and back, through
the calibration in car.toml (``[steering]``, ``[throttle]``).

Each channel is two straight lines meeting at the centre (trim) or neutral pulse: -1 maps to
``left_us`` / ``reverse_us``, 0 to ``center_us`` / ``neutral_us``, +1 to ``right_us`` /
``forward_us``. The ends may run either way (a servo mounted mirrored has left above right);
``invert`` swaps them without recalibrating.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from car.config import ActuatorConfig, Config, SteeringConfig, ThrottleConfig
from car.mcu import protocol as p


@dataclass(frozen=True)
class Channel:
    """One output: the pulses at -1, 0 and +1, and whether to swap the ends."""

    low_us: int
    mid_us: int
    high_us: int
    invert: bool = False

    def to_us(self, value: float) -> int:
        """Normalised value → pulse, clamped to the calibrated ends; NaN → the middle."""
        if not math.isfinite(value):
            return self.mid_us
        value = max(-1.0, min(1.0, -value if self.invert else value))
        end = self.high_us if value >= 0 else self.low_us
        return round(self.mid_us + abs(value) * (end - self.mid_us))

    def from_us(self, us: int) -> float:
        """Pulse → normalised value, clamped to [-1, 1] (the inverse of ``to_us``)."""
        offset = us - self.mid_us
        if offset == 0:
            value = 0.0
        elif offset * (self.high_us - self.mid_us) > 0:  # toward the +1 end
            value = min(1.0, offset / (self.high_us - self.mid_us))
        else:
            value = -min(1.0, offset / (self.low_us - self.mid_us))
        return -value if self.invert else value

    @property
    def limits(self) -> tuple[int, int, int]:
        """(min, neutral, max) for the MCU's clamp."""
        return min(self.low_us, self.high_us), self.mid_us, max(self.low_us, self.high_us)


@dataclass(frozen=True)
class PulseMap:
    """Both channels of the car."""

    steering: Channel
    throttle: Channel

    @classmethod
    def from_config(cls, config: Config) -> PulseMap:
        return cls.from_sections(config.steering, config.throttle)

    @classmethod
    def from_sections(cls, s: SteeringConfig, t: ThrottleConfig) -> PulseMap:
        return cls(Channel(s.left_us, s.center_us, s.right_us, s.invert),
                   Channel(t.reverse_us, t.neutral_us, t.forward_us, t.invert))

    @property
    def neutral(self) -> tuple[int, int]:
        return self.steering.mid_us, self.throttle.mid_us

    def config_message(self, actuator: ActuatorConfig) -> p.Config:
        """The CONFIG the host sends at connect: watchdog timeout and clamp limits."""
        flags = p.CFG_RC_PASSTHROUGH if actuator.rc_passthrough else 0
        return p.Config(actuator.timeout_ms, *self.steering.limits, *self.throttle.limits,
                        flags)
