"""What the web page's status panel shows, computed once per tick from the loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from car.actuator import Actuator
from car.loop import DriveLoop, TickResult

SMOOTHING = 0.1  # weight of the newest tick in the rate estimate


class LoopStatus:
    """The loop's rate and latency, mode, recording, the actuator's own fields (the MCU's
    fault, battery and failsafe) and the model, as plain data."""

    def __init__(self, loop: DriveLoop, actuator: Actuator,
                 clock: Callable[[], float] = time.monotonic):
        self.loop = loop
        self.actuator = actuator
        self.clock = clock
        self._last_s: float | None = None
        self._period_s: float | None = None

    def snapshot(self, result: TickResult) -> dict[str, Any]:
        now = self.clock()
        if self._last_s is not None:
            dt = now - self._last_s
            self._period_s = dt if self._period_s is None else \
                (1 - SMOOTHING) * self._period_s + SMOOTHING * dt
        self._last_s = now
        loop, decision = self.loop, result.decision
        status: dict[str, Any] = {
            "hz": round(1.0 / self._period_s, 1) if self._period_s else None,
            "latency_ms": round(result.latency_s * 1000.0, 1),
            "mode": loop.arbiter.mode.value,
            "recording": loop.recording and loop.recorder is not None,
            "records": loop.recorded - loop.erased if loop.recorder is not None else None,
            "model": loop.engine.describe() if loop.engine is not None else None,
            "estop": loop.arbiter.estopped,
            "throttle_limit": loop.arbiter.throttle_limit,
            "steering": round(decision.command.steering, 3),
            "throttle": round(decision.command.throttle, 3),
            "reason": decision.reason,
            "mcu": False,
        }
        status.update(self.actuator.status())
        return status
