"""What the web page's status panel shows, computed once per tick from the loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from car.actuator import Actuator
from car.loop import DriveLoop, TickResult
from car.world import World

SMOOTHING = 0.1  # weight of the newest tick in the rate estimate


class LoopStatus:
    """The loop's rate and latency, mode (and why the last mode request was refused),
    recording (and what the last erase really erased), the actuator's own fields (the MCU's
    fault, battery and failsafe) and the model, as plain data. In a simulator (``world``)
    also the laps, the last lap's time, the speed and the times the car was put back
    (``resets()``, the runner's count); a real car has none of those fields."""

    def __init__(self, loop: DriveLoop, actuator: Actuator,
                 clock: Callable[[], float] = time.monotonic, world: World | None = None,
                 resets: Callable[[], int] | None = None):
        self.loop = loop
        self.actuator = actuator
        self.clock = clock
        self.world = world
        self.resets = resets
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
            "mode_refusals": loop.mode_refusals,
            "mode_refused": loop.mode_refused,
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
        if loop.recorder is not None:
            erase = loop.recorder.last_erase
            status.update(erases=erase.done, erased_last=erase.erased,
                          erase_error=erase.error)
        if self.world is not None:
            status.update(self.sim_fields(self.world))
        status.update(self.actuator.status())
        return status

    def sim_fields(self, world: World) -> dict[str, Any]:
        """Laps done, the last lap's time (None before the first), speed and put-backs."""
        sim = world.status
        return {"lap": sim.lap,
                "last_lap_s": round(sim.lap_times_s[-1], 2) if sim.lap_times_s else None,
                "speed_mps": round(sim.speed_mps, 2),
                "resets": self.resets() if self.resets is not None else None}
