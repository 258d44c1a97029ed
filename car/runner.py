"""The one loop runner: `car drive`, `car record`, both evals and `car replay` tick the drive
loop through it, so the rules around the ticks exist once.

Per tick, after the loop's own tick, with a World (``car.world``):

- **put back**: a car that has left the track is put back at rest and the pilot's temporal
  state starts afresh. Which departure counts depends on ``Rules.scoring``: an eval counts
  every departure as an intervention (``World.departure``: off the track at all); a drive
  or a recording puts the car back only once it is lost (``World.lost``: far off). With
  ``stall_s``, a car that makes no headway for that long is an intervention too.
- **stop**: after ``laps`` laps, after ``duration_s`` on the loop's clock, past
  ``time_limit_s`` of the world's time for the whole run or ``lap_limit_s`` for one lap.

Without a world only ``duration_s`` and the hooks apply. Each hook is called with the tick's
result; one that returns True stops the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from car.latency import LatencyHistogram
from car.loop import STALE_PERIODS, DriveLoop, Ratekeeper, TickResult
from car.world import World

log = logging.getLogger(__name__)
Hook = Callable[[TickResult], bool | None]


@dataclass(frozen=True)
class Rules:
    """When a run stops, and what counts as leaving the track."""

    laps: int | None = None
    duration_s: float | None = None  # on the loop's clock
    scoring: bool = False  # every departure is an intervention (eval); else only a lost car
    stall_s: float | None = None  # no headway this long is an intervention too
    time_limit_s: float | None = None  # world time for the whole run
    lap_limit_s: float | None = None  # world time for each lap
    keep_path: bool = False  # keep (x, y, |cte|, speed) per tick, for the eval's map


@dataclass
class Outcome:
    """What a run did: why it stopped, its interventions, and (with ``keep_path``) where
    the car went."""

    reason: str  # the loop's: "done" (a rule stopped it), "stopped", "end of frames", ...
    limit: str | None  # which time limit ended it, in words, if one did
    world_elapsed_s: float  # the world's time from the first to the last tick (0 without)
    interventions: list[tuple[float, float, str]] = field(default_factory=list)
    path: list[tuple[float, float, float, float]] = field(default_factory=list)
    charged_latency: LatencyHistogram = field(default_factory=LatencyHistogram)


class Runner:
    """Runs ``loop`` at ``keeper``'s rate in ``world`` (optional) under ``rules``."""

    def __init__(self, loop: DriveLoop, keeper: Ratekeeper, world: World | None = None,
                 rules: Rules = Rules(), hooks: Sequence[Hook] = ()):
        self.loop = loop
        self.keeper = keeper
        self.world = world
        self.rules = rules
        self.hooks = list(hooks)
        self.outcome: Outcome | None = None  # the run under way, or the last one

    @property
    def resets(self) -> int:
        """Interventions (put-backs) so far in the run under way, or the last one."""
        return len(self.outcome.interventions) if self.outcome is not None else 0

    def run(self, should_stop: Callable[[], bool] = lambda: False,
            watchdog: bool = False) -> Outcome:
        """Tick until a rule, a hook, ``should_stop()``, the end of the frames or a failed
        device stops the run; the outputs end neutral. ``watchdog``: send neutral whenever
        no tick finishes for ``STALE_PERIODS`` loop periods (a hung stage)."""
        world, rules = self.world, self.rules
        start_s = world.status.time_s if world is not None else 0.0
        outcome = self.outcome = Outcome("stopped", None, 0.0)
        state: dict[str, Any] = {"headway_s": start_s, "lap_s": start_s,
                                 "lap": world.status.lap if world is not None else 0}
        deadline = self.loop.clock() + rules.duration_s if rules.duration_s else None

        def after_tick(result: TickResult) -> bool:
            stop = False
            if world is not None:
                stop = self._world_rules(result, world, outcome, state, start_s)
            if deadline is not None and self.loop.clock() >= deadline:
                stop = True
            for hook in self.hooks:
                stop = bool(hook(result)) or stop
            if not stop and should_stop():  # asked to stop: now, before the next wait
                state["asked"] = True
                stop = True
            return stop

        outcome.reason = self.loop.run(
            self.keeper, should_stop=should_stop, on_tick=after_tick,
            watchdog_s=STALE_PERIODS * self.keeper.period_s if watchdog else None)
        if state.get("asked"):
            outcome.reason = "stopped"
        if world is not None:
            outcome.world_elapsed_s = world.status.time_s - start_s
        return outcome

    def _world_rules(self, result: TickResult, world: World, outcome: Outcome,
                     state: dict[str, Any], start_s: float) -> bool:
        rules = self.rules
        status = world.status
        charged = world.charged_latency_s()
        outcome.charged_latency.add(result.latency_s if charged is None else charged)
        cause = world.departure() if rules.scoring else world.lost()
        if rules.keep_path:
            outcome.path.append((status.x, status.y, abs(status.cte_m), status.speed_mps))
        if state["lap"] != status.lap:
            state["lap"], state["lap_s"] = status.lap, status.time_s
        if rules.stall_s is not None and cause is None:
            if world.made_headway():
                state["headway_s"] = status.time_s
            elif status.time_s - state["headway_s"] > rules.stall_s:
                cause = "stalled"
        if cause is not None:
            outcome.interventions.append((status.x, status.y, cause))
            log.info("intervention %d at %.1f s: %s", len(outcome.interventions),
                     status.time_s, cause)
            world.put_back()  # (the headway mark moves with the car)
            self.loop.reset_temporal()
            state["headway_s"] = world.status.time_s
        if rules.laps is not None and status.lap >= rules.laps:
            return True
        if rules.time_limit_s is not None and status.time_s - start_s > rules.time_limit_s:
            outcome.limit = f"{rules.laps} lap(s) not done in {rules.time_limit_s:.0f} s"
            return True
        if rules.lap_limit_s is not None and status.time_s - state["lap_s"] > rules.lap_limit_s:
            outcome.limit = f"lap {status.lap + 1} not done in {rules.lap_limit_s:g} s"
            return True
        return False
