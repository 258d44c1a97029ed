"""`car sim eval`: a closed-loop score, in the style of NVIDIA's PilotNet, on any World
(``car.world``): the embedded simulator, or a donkey simulator over TCP.

The pilot drives the simulated car through the real drive loop (the same arbiter, limits
and safety as on the car) and the one runner (``car.runner``). An intervention is a
departure from the track (the embedded simulator: |cte| > width / 2, checked every period;
a donkey simulator: a hit, or |cte| over its ``max_cte``), or a car that makes no headway
for ``STALL_S``; the car is then put back at rest on the track. ``autonomy = 100 × (1 − 6 s
× interventions / elapsed simulated seconds)``, floored at 0: each intervention costs the
six seconds a safety driver would take. A run that has not done its laps in three times
the expert's planned lap time (plus 15 s) ends unfinished: crawling is not driving. A
world with no planned lap (a donkey simulator) limits each lap to ``lap_limit_s`` instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from car.config import Config
from car.controllers import ScriptedController
from car.frames import Mode
from car.loop import DriveLoop, Ratekeeper, TickResult
from car.modes import Arbiter
from car.runner import Rules, Runner
from car.sim.link import SimLink
from car.sim.pace import Driver, make_expert
from car.sim.world import Simulator
from car.world import World

INTERVENTION_PENALTY_S = 6.0
STALL_S = 10.0  # no headway for this long is an intervention too
TIME_LIMIT_LAPS = 3.0  # a run ends unfinished after 3x the expert's planned lap time a lap
LAP_LIMIT_S = 120.0  # a world with no planned lap: each lap within this


@dataclass
class EvalResult:
    track: str
    laps: int
    laps_completed: int
    lap_times_s: list[float]
    autonomy_pct: float
    interventions: int
    mean_abs_cte_m: float
    max_abs_cte_m: float
    elapsed_s: float
    pilot: str
    pace: str  # "cruise" or "race" (a donkey simulator: "cruise")
    latency: str  # how the pilot's latency was charged: "measured" or "fixed N ms"
    stop_reason: str
    loop: dict[str, Any]
    path: np.ndarray = field(repr=False)  # (N, 4): x, y, |cte|, speed per tick
    intervention_points: list[tuple[float, float, str]] = field(default_factory=list)
    physics: list[dict[str, float]] = field(default_factory=list)  # --randomize: per lap

    @property
    def top_speed_mps(self) -> float:
        return float(self.path[:, 3].max()) if len(self.path) else 0.0

    @property
    def finished(self) -> bool:
        return self.laps_completed >= self.laps

    def to_json(self) -> dict[str, Any]:
        lat = self.loop["charged_latency_ms"]
        return {
            "track": self.track, "laps": self.laps, "laps_completed": self.laps_completed,
            "lap_times_s": [round(t, 3) for t in self.lap_times_s],
            "mean_lap_time_s": round(float(np.mean(self.lap_times_s)), 3)
            if self.lap_times_s else None,
            "finished": self.finished,
            "autonomy_pct": round(self.autonomy_pct, 3), "interventions": self.interventions,
            "mean_abs_cte_m": round(self.mean_abs_cte_m, 4),
            "max_abs_cte_m": round(self.max_abs_cte_m, 4),
            "elapsed_s": round(self.elapsed_s, 3), "pilot": self.pilot, "pace": self.pace,
            "top_speed_mps": round(self.top_speed_mps, 3),
            "latency": self.latency, "stop_reason": self.stop_reason,
            **({"physics": self.physics} if self.physics else {}),
            "loop": {"hz": self.loop["hz"], "overruns": self.loop["overruns"],
                     "latency_ms": {"p50": lat["p50"], "p99": lat["p99"]},
                     "stages_ms": self.loop["latency_ms"], "safety": self.loop["safety"]},
        }


def autonomy_pct(interventions: int, elapsed_s: float) -> float:
    """PilotNet's autonomy, floored at 0 (more than one intervention per 6 s is none)."""
    if elapsed_s <= 0:
        return 0.0
    return max(0.0, 100.0 * (1.0 - INTERVENTION_PENALTY_S * interventions / elapsed_s))


class ExpertPilot:
    """The embedded simulator's expert behind the Engine interface, scored for reference.
    It reads the true pose instead of the frame, through the same loop, limits and
    latency."""

    name = "expert"
    provider = "simulator"
    precision = "exact"
    manifest = None
    path = Path("expert")

    def __init__(self, sim: Simulator, expert: Driver, period_s: float, pace: str = "cruise"):
        self.sim = sim
        self.expert = expert
        self.period_s = period_s
        self.pace = pace

    def preprocess(self, frame: np.ndarray) -> np.ndarray:
        return frame

    def infer(self, x: np.ndarray) -> tuple[float, float]:
        return self.expert.act(self.sim.vehicle.state, self.period_s)

    def predict(self, frame: np.ndarray) -> tuple[float, float]:
        return self.infer(frame)

    def reset(self) -> None:
        self.expert.reset()

    def describe(self) -> str:
        who = "racing expert" if self.pace == "race" else "expert"
        return f"the simulator's {who} (true pose, no camera)"

    def close(self) -> None:
        """Nothing to release."""


def expert_pilot(world: SimLink, config: Config) -> ExpertPilot:
    """The expert for an embedded world at its pace: at cruise, ``sim.expert_speed_mps`` on
    its line; at race pace, the racing line at the grip limit."""
    sim = world.sim
    expert = make_expert(sim.track, sim.params, config, world.pace)
    return ExpertPilot(sim, expert, world.period_s, world.pace)


def evaluate(world: World, pilot: Any, config: Config, *, laps: int, rate_hz: float,
             lap_limit_s: float = LAP_LIMIT_S, should_stop: Callable[[], bool] = lambda: False,
             on_tick: Callable[[float], None] | None = None) -> EvalResult:
    """Drive ``laps`` laps of ``world`` with ``pilot`` (an Engine or ExpertPilot) in the
    world's own time (lock-step or real); ``on_tick`` gets the laps driven so far."""
    arbiter = Arbiter(config.drive, rate_hz, Mode.LOCAL)
    loop = DriveLoop(world.camera, world.actuator, ScriptedController(Mode.LOCAL), arbiter,
                     pilot, clock=world.clock)
    keeper = Ratekeeper(rate_hz, clock=world.clock,
                        sleep=(lambda s: None) if world.lockstep else time.sleep)
    reference_s = world.reference_lap_s()
    time_limit_s = None if reference_s is None else \
        laps * TIME_LIMIT_LAPS * reference_s + 15.0
    rules = Rules(laps=laps, scoring=True, stall_s=STALL_S, time_limit_s=time_limit_s,
                  lap_limit_s=lap_limit_s if reference_s is None else None, keep_path=True)

    def progress(result: TickResult) -> None:
        if on_tick is not None:
            on_tick(min(float(laps), world.lap_progress()))

    outcome = Runner(loop, keeper, world, rules, hooks=[progress]).run(should_stop)
    status = world.status
    reason = outcome.reason
    if reason == "stopped":
        reason = "interrupted"
    elif reason == "done":
        reason = "laps done" if status.lap >= laps else f"time limit: {outcome.limit}" + (
            f", {TIME_LIMIT_LAPS:g}x the expert's pace" if reference_s is not None else "")
    elapsed = outcome.world_elapsed_s
    path = np.array(outcome.path, np.float64).reshape(-1, 4)
    cte = path[:, 2] if len(path) else np.zeros(1)
    summary = loop.summary(keeper)
    summary["charged_latency_ms"] = outcome.charged_latency.summary()
    points = outcome.interventions
    return EvalResult(
        track=world.name, laps=laps, laps_completed=min(status.lap, laps),
        lap_times_s=list(status.lap_times_s[:laps]),
        autonomy_pct=autonomy_pct(len(points), elapsed), interventions=len(points),
        mean_abs_cte_m=float(cte.mean()), max_abs_cte_m=float(cte.max()), elapsed_s=elapsed,
        pilot=pilot.describe(), pace=world.pace,
        latency=world.latency_note, stop_reason=reason, loop=summary,
        path=path, intervention_points=points)
