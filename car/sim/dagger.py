"""DAgger (Ross, Gordon & Bagnell 2011) on the embedded simulator: the data collection, the
β schedule, and the round table of `car sim dagger` (docs/dagger.md).

Behaviour cloning trains on the expert's states only, so the learner's small errors lead it
to states it never saw, where it errs more (compounding error). DAgger drives the learner,
labels every state it visits with the expert's clean action, adds those records to the
data, and retrains. Round i drives the mixture policy π_i = β_i·expert + (1 − β_i)·learner
with ``β_i = beta0 · decay^(i − 1)``.

**Per-tick Bernoulli, not a blend.** Each tick, the expert's action is executed with
probability β and the learner's otherwise. That is the paper's mixture policy: on the
learner's ticks its own action runs unchanged, so the states visited hold its real
mistakes (a blend at β = 0.5 would halve every error, always pulling toward the expert's
line, and never show the learner where its own actions go). The servo's slew limit
smooths the switching, and the expert's ticks keep an early, poor learner on the track.

The executed command passes the drive loop's ``Arbiter`` (throttle cap at the pace's
``drive.max_throttle``, rate limits, neutral on a NaN), as in `car sim eval`, and acts
after the actuation delay plus the learner's latency (measured per tick, or fixed).
Training is not here: the command passes it in, so this module never imports torch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from car.config import Config
from car.frames import Mode, UserInput
from car.modes import Arbiter
from car.sim.eval import EvalResult
from car.sim.pace import Driver
from car.sim.record import SIM_FIELDS
from car.sim.world import Simulator
from car.tub.writer import TubWriter

DAGGER_FIELDS: tuple[tuple[str, str], ...] = (
    *SIM_FIELDS,
    ("dagger/round", "int"),
    ("dagger/beta", "float"),
    ("dagger/expert_drove", "boolean"),  # this tick executed the expert's action
    ("dagger/model_angle", "float"),  # the learner's raw output on this frame
    ("dagger/model_throttle", "float"),
)
MODEL_FILES = ("pilot.pt", "pilot.onnx", "pilot.pt2", "pilot.json")  # what best/ holds
TIME_LIMIT_LAPS = 3.0  # a session ends after this many of the expert's planned laps a lap
TIME_LIMIT_EXTRA_S = 15.0


class Learner(Protocol):
    """The model being taught: an Engine's ``predict`` and ``reset``."""

    def predict(self, frame: np.ndarray) -> tuple[float, float]: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class BetaSchedule:
    """β_i = beta0 · decay^(i − 1) for round i ≥ 1: the chance a tick runs the expert."""

    beta0: float = 0.5
    decay: float = 0.5

    def beta(self, round_i: int) -> float:
        if round_i < 1:
            raise ValueError(f"DAgger rounds count from 1, got {round_i}")
        return self.beta0 * self.decay ** (round_i - 1)


@dataclass
class CollectSummary:
    track: str
    records: int = 0
    expert_ticks: int = 0
    interventions: int = 0  # put back after going far off the track
    laps: int = 0
    sim_time_s: float = 0.0
    stop_reason: str = "laps done"  # or "time limit", "interrupted"


def collect(sim: Simulator, expert: Driver, learner: Learner, writer: TubWriter, *,
            config: Config, round_i: int, beta: float, laps: int, period_s: float,
            rng: np.random.Generator, latency_s: float | None = None,
            should_stop: Callable[[], bool] = lambda: False,
            on_step: Callable[[float], None] | None = None) -> CollectSummary:
    """Drive ``laps`` laps with the β mixture of ``expert`` and ``learner``, one record per
    period: the frame, the expert's clean action as the label, and what ran.

    ``config`` is the pace's (``pace_config``). A car far off the track is put back and
    counted. ``should_stop()`` (Ctrl-C) or a KeyboardInterrupt stops at a record boundary;
    a session that has not done its laps in ``TIME_LIMIT_LAPS`` planned laps each ends
    there. ``on_step`` gets the laps driven so far. The caller closes ``writer``.
    """
    summary = CollectSummary(sim.track.name)
    arbiter = Arbiter(config.drive, 1.0 / period_s, Mode.LOCAL)
    learner.reset()
    expert.reset()
    start = time.monotonic()
    status = sim.status()
    lap = status.lap
    limit_s = sim.time_s + laps * TIME_LIMIT_LAPS * expert.planned_lap_s() + TIME_LIMIT_EXTRA_S
    try:
        while status.lap < laps:
            frame = sim.render()
            steering, throttle = expert.act(sim.vehicle.state, period_s)
            t0 = time.perf_counter()
            model_steering, model_throttle = learner.predict(frame)
            latency = time.perf_counter() - t0 if latency_s is None else latency_s
            expert_drives = bool(rng.random() < beta)
            chosen = (steering, throttle) if expert_drives else (model_steering, model_throttle)
            command = arbiter.decide(UserInput(), chosen, stale=False, now_s=sim.time_s).command
            writer.write({
                "cam/image_array": frame, "user/angle": steering, "user/throttle": throttle,
                "user/mode": "user", "sim/applied_angle": command.steering,
                "sim/applied_throttle": command.throttle, "sim/cte": status.cte_m,
                "sim/speed": status.speed_mps, "sim/x": status.x, "sim/y": status.y,
                "sim/yaw": status.yaw, "sim/progress": status.s_m, "sim/lap": status.lap,
                "sim/off_track": status.off_track, "dagger/round": round_i,
                "dagger/beta": beta, "dagger/expert_drove": expert_drives,
                "dagger/model_angle": _finite_or_nan(model_steering),
                "dagger/model_throttle": _finite_or_nan(model_throttle),
            }, capture_time=start + status.time_s)
            summary.records += 1
            summary.expert_ticks += expert_drives
            sim.command(command.steering, command.throttle, extra_delay_s=latency)
            status = sim.run_until(sim.time_s + max(period_s, latency))
            if status.lap != lap:
                lap = status.lap
                sim.new_lap()  # a new look and physics per lap when randomizing
            if sim.far_off_track:  # put the car back: a collection intervention
                status = sim.reset_to_track()
                expert.reset()
                learner.reset()
                summary.interventions += 1
            if on_step is not None:
                on_step(min(float(laps), sim.progress.distance_m / sim.track.length_m))
            if should_stop():
                summary.stop_reason = "interrupted"
                break
            if status.time_s > limit_s:
                summary.stop_reason = "time limit"
                break
    except KeyboardInterrupt:
        summary.stop_reason = "interrupted"
    summary.laps = status.lap
    summary.sim_time_s = status.time_s
    return summary


def _finite_or_nan(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else math.nan


def default_eval_tracks(collect_specs: Sequence[str], count: int = 2) -> list[str]:
    """Held-out tracks: the first ``count`` of random:101, random:102, ... not collected on."""
    specs: list[str] = []
    seed = 101
    while len(specs) < count:
        if f"random:{seed}" not in collect_specs:
            specs.append(f"random:{seed}")
        seed += 1
    return specs


def session_seed(seed: int, round_i: int, track_index: int) -> int:
    """Each round and track drives a new stream (looks, noise, the Bernoulli draws)."""
    return seed + 1000 * round_i + track_index


# ------------------------------------------------------------------ the round table
@dataclass
class TrackScore:
    """One evaluation of a round's model on one held-out track, with the expert's."""

    track: str
    autonomy_pct: float
    interventions: int
    laps_completed: int
    mean_lap_s: float | None
    expert_lap_s: float | None

    @property
    def lap_ratio(self) -> float | None:
        """The model's mean lap over the expert's (1.10: 10% slower)."""
        if self.mean_lap_s is None or not self.expert_lap_s:
            return None
        return self.mean_lap_s / self.expert_lap_s

    @classmethod
    def of(cls, result: EvalResult, expert: EvalResult) -> TrackScore:
        return cls(result.track, result.autonomy_pct, result.interventions,
                   result.laps_completed, _mean(result.lap_times_s), _mean(expert.lap_times_s))


@dataclass
class RoundRow:
    """One line of the table: round 0 is the starting model."""

    round: int
    model: str  # the model folder
    beta: float | None = None
    records: int = 0
    collection_interventions: int = 0
    valid_loss: float | None = None
    scores: list[TrackScore] = field(default_factory=list)

    @property
    def autonomy_pct(self) -> float:
        return float(np.mean([s.autonomy_pct for s in self.scores])) if self.scores else 0.0

    @property
    def lap_ratio(self) -> float | None:
        """The mean over the eval tracks, None unless a lap was done on every one."""
        ratios = [s.lap_ratio for s in self.scores]
        if not ratios or any(r is None for r in ratios):
            return None
        return float(np.mean([r for r in ratios if r is not None]))

    @property
    def eval_interventions(self) -> int:
        return sum(s.interventions for s in self.scores)

    def to_json(self) -> dict[str, Any]:
        ratio = self.lap_ratio
        return {
            "round": self.round, "model": self.model, "beta": self.beta,
            "records": self.records, "collection_interventions": self.collection_interventions,
            "valid_loss": self.valid_loss, "autonomy_pct": round(self.autonomy_pct, 3),
            "lap_ratio": None if ratio is None else round(ratio, 4),
            "eval_interventions": self.eval_interventions,
            "eval": [{"track": s.track, "autonomy_pct": round(s.autonomy_pct, 3),
                      "interventions": s.interventions, "laps_completed": s.laps_completed,
                      "mean_lap_s": _round(s.mean_lap_s), "expert_lap_s": _round(s.expert_lap_s),
                      "lap_ratio": _round(s.lap_ratio, 4)} for s in self.scores],
        }


def best_round(rows: Sequence[RoundRow]) -> RoundRow:
    """The highest mean autonomy, then the lowest lap ratio (none counts as worst), then
    the earliest round."""
    if not rows:
        raise ValueError("no rounds to choose from")
    return min(rows, key=lambda r: (-round(r.autonomy_pct, 6),
                                    math.inf if r.lap_ratio is None else r.lap_ratio, r.round))


def format_table(rows: Sequence[RoundRow], best: int | None = None) -> str:
    """The round-by-round table; ``best`` marks its row with ``*``."""
    lines = [f"{'ROUND':>5} {'BETA':>6} {'RECORDS':>8} {'COLL.INT':>8} {'VAL LOSS':>9} "
             f"{'AUTONOMY':>9} {'LAP/EXPERT':>10} {'EVAL.INT':>8}"]
    for r in rows:
        ratio = r.lap_ratio
        mark = " *" if r.round == best else ""
        lines.append(
            f"{r.round:>5} {'-' if r.beta is None else f'{r.beta:.3f}':>6} {r.records:>8} "
            f"{r.collection_interventions:>8} "
            f"{'-' if r.valid_loss is None else f'{r.valid_loss:.4f}':>9} "
            f"{r.autonomy_pct:>8.2f}% {'-' if ratio is None else f'{ratio:.3f}':>10} "
            f"{r.eval_interventions:>8}{mark}")
    return "\n".join(lines)


def keep_best(rows: Sequence[RoundRow], dest: Path) -> RoundRow:
    """Copies the model files of the best row's folder to ``dest`` (built beside it, then
    swapped in), and returns that row."""
    best = best_round(rows)
    source = Path(best.model)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in MODEL_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, tmp / name)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return best


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` into ``path``, written beside it and renamed over it."""
    part = path.with_name(f".{path.name}.tmp")
    part.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(part, path)


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
