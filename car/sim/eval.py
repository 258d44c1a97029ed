"""`car sim eval`: a closed-loop score, in the style of NVIDIA's PilotNet.

The pilot drives the simulated car through the real drive loop (the same arbiter, limits
and safety as on the car) in lock-step. An intervention is a departure from the track
(|cte| > width / 2, checked every period), or a car that makes no headway for ``STALL_S``;
the car is then put back at rest on the centreline. ``autonomy = 100 × (1 − 6 s ×
interventions / elapsed simulated seconds)``, floored at 0: each intervention costs the six
seconds a safety driver would take. A run that has not done its laps in three times the
expert's planned lap time (plus 15 s) ends unfinished: crawling is not driving.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from car.actuator import Actuator
from car.config import Config
from car.controllers import ScriptedController
from car.frames import Mode
from car.latency import LatencyHistogram
from car.loop import DriveLoop, Ratekeeper, TickResult
from car.modes import Arbiter
from car.sim.expert import LATERAL_ACCEL_MPS2, PLAN_BRAKE_MPS2, Expert, speed_profile
from car.sim.link import SimLink
from car.sim.track import Track
from car.sim.world import Simulator

log = logging.getLogger(__name__)
INTERVENTION_PENALTY_S = 6.0
STALL_S = 10.0  # no headway for this long is an intervention too
STALL_M = 0.5
TIME_LIMIT_LAPS = 3.0  # a run ends unfinished after 3x the expert's planned lap time a lap


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
    latency: str  # how the pilot's latency was charged: "measured" or "fixed N ms"
    stop_reason: str
    loop: dict[str, Any]
    path: np.ndarray = field(repr=False)  # (N, 3): x, y, |cte| per tick
    intervention_points: list[tuple[float, float, str]] = field(default_factory=list)

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
            "elapsed_s": round(self.elapsed_s, 3), "pilot": self.pilot,
            "latency": self.latency, "stop_reason": self.stop_reason,
            "loop": {"hz": self.loop["hz"], "overruns": self.loop["overruns"],
                     "latency_ms": {"p50": lat["p50"], "p99": lat["p99"]},
                     "stages_ms": self.loop["latency_ms"], "safety": self.loop["safety"]},
        }


def reference_lap_s(sim: Simulator, config: Config) -> float:
    """The expert's planned lap time on this track: the yardstick for the time limit."""
    cap = min(config.sim.expert_speed_mps, sim.params.top_speed_mps * 0.95)
    profile = speed_profile(sim.track, cap, LATERAL_ACCEL_MPS2, PLAN_BRAKE_MPS2)
    return float(np.sum(sim.track.curve.ds / np.maximum(profile, 0.05)))


def autonomy_pct(interventions: int, elapsed_s: float) -> float:
    """PilotNet's autonomy, floored at 0 (more than one intervention per 6 s is none)."""
    if elapsed_s <= 0:
        return 0.0
    return max(0.0, 100.0 * (1.0 - INTERVENTION_PENALTY_S * interventions / elapsed_s))


class ExpertPilot:
    """The simulator's expert behind the Engine interface, scored for reference. It reads
    the true pose instead of the frame, through the same loop, limits and latency."""

    name = "expert"
    provider = "simulator"
    precision = "exact"
    manifest = None
    path = Path("expert")

    def __init__(self, sim: Simulator, expert: Expert, period_s: float):
        self.sim = sim
        self.expert = expert
        self.period_s = period_s

    def preprocess(self, frame: np.ndarray) -> np.ndarray:
        return frame

    def infer(self, x: np.ndarray) -> tuple[float, float]:
        return self.expert.act(self.sim.vehicle.state, self.period_s)

    def predict(self, frame: np.ndarray) -> tuple[float, float]:
        return self.infer(frame)

    def reset(self) -> None:
        self.expert.reset()

    def describe(self) -> str:
        return "the simulator's expert (true pose, no camera)"


def evaluate(sim: Simulator, pilot: Any, config: Config, *, laps: int, rate_hz: float,
             latency_s: float | None = None, should_stop: Callable[[], bool] = lambda: False,
             on_tick: Callable[[float], None] | None = None,
             actuator_wrapper: Callable[[Actuator], Actuator] | None = None) -> EvalResult:
    """Drive ``laps`` laps of ``sim.track`` with ``pilot`` (an Engine or ExpertPilot)."""
    track: Track = sim.track
    period_s = 1.0 / rate_hz
    link = SimLink(sim, period_s, lockstep=True, latency_s=latency_s)
    actuator: Actuator = link.actuator
    if actuator_wrapper is not None:
        actuator = actuator_wrapper(actuator)
    arbiter = Arbiter(config.drive, rate_hz, Mode.LOCAL)
    loop = DriveLoop(link.camera, actuator, ScriptedController(Mode.LOCAL), arbiter, pilot,
                     clock=link.clock)
    keeper = Ratekeeper(rate_hz, clock=link.clock, sleep=lambda s: None)
    limit_s = sim.time_s + laps * TIME_LIMIT_LAPS * reference_lap_s(sim, config) + 15.0
    charged = LatencyHistogram()  # the pilot latency charged to the car, per tick
    path: list[tuple[float, float, float]] = []
    points: list[tuple[float, float, str]] = []
    state = {"lap": sim.status().lap, "headway_s": sim.time_s,
             "headway_m": sim.progress.distance_m}

    def after_tick(result: TickResult) -> bool:
        status = sim.status()
        charged.add(link.last_latency_s)
        worst_cte = max(link.take_worst_abs_cte(), abs(status.cte_m))
        path.append((status.x, status.y, abs(status.cte_m)))
        if status.lap != state["lap"]:
            state["lap"] = status.lap
            sim.new_look()  # randomize: a new look every lap
        cause = None
        if worst_cte > track.width_m / 2:
            cause = "off track"
        elif sim.progress.distance_m > state["headway_m"] + STALL_M:
            state["headway_m"], state["headway_s"] = sim.progress.distance_m, status.time_s
        elif status.time_s - state["headway_s"] > STALL_S:
            cause = "stalled"
        if cause is not None:
            points.append((status.x, status.y, cause))
            log.info("intervention %d at %.1f s: %s", len(points), status.time_s, cause)
            sim.reset_to_track()
            pilot.reset()
            state["headway_m"], state["headway_s"] = sim.progress.distance_m, sim.time_s
        if on_tick is not None:
            on_tick(min(float(laps), sim.progress.distance_m / track.length_m))
        return status.lap >= laps or status.time_s > limit_s or should_stop()

    start_s = sim.time_s
    reason = loop.run(keeper, on_tick=after_tick)
    status = sim.status()
    if reason == "done":
        reason = "laps done" if status.lap >= laps else (
            "interrupted" if should_stop() else
            f"time limit: {laps} lap(s) not done in {limit_s - start_s:.0f} s, "
            f"{TIME_LIMIT_LAPS:g}x the expert's pace")
    elapsed = status.time_s - start_s
    cte = np.array([p[2] for p in path]) if path else np.zeros(1)
    summary = loop.summary(keeper, elapsed)
    summary["charged_latency_ms"] = charged.summary()
    return EvalResult(
        track=track.name, laps=laps, laps_completed=status.lap,
        lap_times_s=list(status.lap_times_s), autonomy_pct=autonomy_pct(len(points), elapsed),
        interventions=len(points), mean_abs_cte_m=float(cte.mean()),
        max_abs_cte_m=float(cte.max()), elapsed_s=elapsed, pilot=pilot.describe(),
        latency="measured" if latency_s is None else f"fixed {latency_s * 1000:g} ms",
        stop_reason=reason, loop=summary,
        path=np.array(path, np.float64).reshape(-1, 3), intervention_points=points)
