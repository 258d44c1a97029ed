"""Mode and safety: the one place that decides what the actuators are told.

``Arbiter.decide`` takes the user's input and the pilot's raw output for this tick and
returns the Command to send, and why. It owns the actuators: nothing else in the loop
makes a command. In order:

1. mode: ``user`` drives from the controller; ``local_angle`` takes the pilot's steering
   and the user's throttle; ``local`` takes both from the pilot. The pilot's throttle is
   scaled by ``ai_throttle_mult`` and capped at ``max_throttle``, forward and reverse; any
   throttle is capped at ``throttle_limit`` (1 unless the user lowers it live);
2. neutral, at once and without rate limits, on an e-stop (latched until cleared), an
   actuator fault (a lost MCU link), a stale frame, or a pilot output that is NaN or
   infinite (or a pilot that failed this tick);
3. clamp to [-1, 1], then rate limits over the time since the last command: steering slews
   at most ``steering_rate_per_s``; throttle rises at most ``throttle_rate_per_s`` and falls
   toward neutral freely.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from car.config import DriveConfig
from car.frames import ESTOP, NEUTRAL, Command, Mode, UserInput

log = logging.getLogger(__name__)


@dataclass
class SafetyCounts:
    """How often the arbiter overrode the mode's command, by reason."""

    estop_ticks: int = 0
    actuator_faults: int = 0  # ticks with the actuator link down
    stale_frames: int = 0
    bad_outputs: int = 0  # NaN or Inf from the model, or a model that raised
    throttle_capped: int = 0  # ticks where max_throttle cut the pilot's throttle
    mode_changes: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    command: Command
    reason: str  # "ok", "estop", "actuator_fault", "stale_frame", "bad_output", "no_pilot"
    user: UserInput
    pilot: tuple[float, float] | None


class Arbiter:
    """Mode, limits and safety, with the state they need between ticks."""

    def __init__(self, drive: DriveConfig, rate_hz: float, mode: Mode | None = None):
        self.config = drive
        self.period_s = 1.0 / rate_hz
        self.mode = Mode(mode or drive.start_mode)
        self.estopped = False
        self.throttle_limit = 1.0  # everyone's throttle, set live (the page's slider)
        self.counts = SafetyCounts()
        self._last = NEUTRAL
        self._last_s: float | None = None  # loop time of the last decision
        self._log = LimitedLog(log)

    def set_mode(self, mode: Mode) -> bool:
        """Switch modes; True if it changed (the caller resets the pilot's temporal state)."""
        mode = Mode(mode)
        if mode == self.mode:
            return False
        log.info("mode %s -> %s", self.mode.value, mode.value)
        self.mode = mode
        self.counts.mode_changes += 1
        return True

    def set_throttle_limit(self, limit: float) -> None:
        """Cap every throttle, the user's too, at ±``limit`` (clamped to [0, 1])."""
        limit = max(0.0, min(1.0, limit)) if math.isfinite(limit) else 0.0
        if limit != self.throttle_limit:
            log.info("throttle limit %.2f", limit)
        self.throttle_limit = limit

    def estop(self) -> None:
        if not self.estopped:
            log.warning("E-STOP: outputs neutral until the stop is cleared")
        self.estopped = True

    def clear_estop(self) -> None:
        if self.estopped:
            log.warning("e-stop cleared")
        self.estopped = False

    @property
    def needs_pilot(self) -> bool:
        return self.mode is not Mode.USER

    def decide(self, user: UserInput, pilot: tuple[float, float] | None, *, stale: bool,
               now_s: float, actuator_fault: bool = False) -> Decision:
        """The command for this tick. ``pilot`` is None when no pilot ran (user mode, or a
        model that raised); ``stale`` when the frame is older than the loop allows;
        ``actuator_fault`` while the actuator reports one."""
        if user.estop:
            self.estop()
        elif user.clear_estop:
            self.clear_estop()
        reason = "ok"
        if self.estopped:
            reason = "estop"
            self.counts.estop_ticks += 1
        elif actuator_fault:
            reason = "actuator_fault"
            self.counts.actuator_faults += 1
        elif self.needs_pilot and stale:
            reason = "stale_frame"
            self.counts.stale_frames += 1
        elif self.needs_pilot and pilot is None:
            reason = "no_pilot"
            self.counts.bad_outputs += 1
        elif self.needs_pilot and not all(math.isfinite(v) for v in pilot):  # type: ignore[union-attr]
            reason = "bad_output"
            self.counts.bad_outputs += 1
        if reason != "ok":
            self.counts.reasons[reason] = self.counts.reasons.get(reason, 0) + 1
            if reason == "bad_output":  # the loop explains stale frames and pilot errors
                self._log.warning("bad_output", now_s, "the pilot gave %s, not two finite "
                                  "numbers: outputs neutral", pilot)
            self._last, self._last_s = NEUTRAL, now_s
            return Decision(ESTOP if reason == "estop" else NEUTRAL, reason, user, pilot)
        steering, throttle = self._by_mode(user, pilot)
        if abs(throttle) > self.throttle_limit:
            throttle = math.copysign(self.throttle_limit, throttle)
        # Rate limits over the time since the last command (longer after an overrun).
        dt = self.period_s if self._last_s is None else \
            min(1.0, max(self.period_s, now_s - self._last_s))
        self._last_s = now_s
        command = self._limit(steering, throttle, dt)
        self._last = command
        return Decision(command, reason, user, pilot)

    def _by_mode(self, user: UserInput, pilot: tuple[float, float] | None
                 ) -> tuple[float, float]:
        if self.mode is Mode.USER or pilot is None:
            return user.steering, user.throttle
        if self.mode is Mode.LOCAL_ANGLE:
            return pilot[0], user.throttle
        throttle = pilot[1] * self.config.ai_throttle_mult
        if abs(throttle) > self.config.max_throttle:  # forward and reverse alike
            self.counts.throttle_capped += 1
            throttle = math.copysign(self.config.max_throttle, throttle)
        return pilot[0], throttle

    def _limit(self, steering: float, throttle: float, dt: float) -> Command:
        steering = _clamp(steering if math.isfinite(steering) else 0.0)
        throttle = _clamp(throttle if math.isfinite(throttle) else 0.0)
        max_steer = self.config.steering_rate_per_s * dt
        steering = _step_toward(self._last.steering, steering, max_steer)
        last_t = self._last.throttle
        if throttle * last_t < 0:  # a reversal: cut to neutral freely, then rise from there
            last_t = 0.0
        if abs(throttle) > abs(last_t):  # away from neutral
            rise = self.config.throttle_rate_per_s * dt
            throttle = _step_toward(last_t, throttle, rise)
        return Command(steering, throttle)


class LimitedLog:
    """Log lines of each kind at most once per ``interval_s`` (of the caller's clock), so a
    fault that repeats every tick is reported, not flooded. With ``count_held``, a line
    shown after some were held back ends "(N more like it)"."""

    MAX_KINDS = 256  # kinds remembered (a caller's kinds may come from outside)

    def __init__(self, logger: logging.Logger, interval_s: float = 1.0,
                 count_held: bool = False):
        self.logger = logger
        self.interval_s = interval_s
        self.count_held = count_held
        self._last_s: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, kind: str, now_s: float, message: str, *args: object,
            **kwargs: Any) -> None:
        if now_s - self._last_s.get(kind, -math.inf) < self.interval_s:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        if len(self._last_s) >= self.MAX_KINDS:
            self._last_s.clear()
            self._held.clear()
        self._last_s[kind] = now_s
        held = self._held.pop(kind, 0)
        if held and self.count_held:
            message, args = message + " (%d more like it)", (*args, held)
        self.logger.log(level, message, *args, **kwargs)

    def warning(self, kind: str, now_s: float, message: str, *args: object) -> None:
        self.log(logging.WARNING, kind, now_s, message, *args)


def _clamp(value: float, limit: float = 1.0) -> float:
    return max(-limit, min(limit, value))


def _step_toward(current: float, target: float, max_step: float) -> float:
    """``target`` if it is within ``max_step`` of ``current``, else one step toward it."""
    if abs(target - current) <= max_step:
        return target
    return current + math.copysign(max_step, target - current)
