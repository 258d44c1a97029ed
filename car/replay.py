"""`car replay`: a recorded tub through the engine and the drive loop's logic, compared with
a reference run within a declared tolerance (in the spirit of openpilot's process replay).

The loop runs on a stepped clock (one period per tick, no sleeping), so the outputs depend
only on the frames, the model and the loop logic: a change in any of them shows up as a
difference. Latency is measured on this machine and reported against a budget.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from car.actuator import DryRunActuator
from car.camera import ReplayCamera
from car.config import DriveConfig
from car.controllers import ScriptedController
from car.errors import CarError
from car.frames import Mode
from car.loop import DriveLoop, Ratekeeper, TickResult
from car.modes import Arbiter
from deploy.engine import Engine

FORMAT = "car-replay-reference"
VERSION = 1
COLUMNS = ("index", "pilot_steering", "pilot_throttle", "command_steering", "command_throttle")
DEFAULT_TOLERANCE = 1e-3  # engines and CPUs differ by ~1e-6; a changed model by far more


class SteppedClock:
    """A clock that moves only when told: one loop period per tick."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


@dataclass
class ReplayRun:
    outputs: np.ndarray  # (N, 5): COLUMNS
    skipped: int  # records without a readable frame
    latency_ms: dict[str, dict[str, Any]]
    engine: str


def replay(engine: Engine, tub: str | os.PathLike, drive: DriveConfig, rate_hz: float
           ) -> ReplayRun:
    """Every readable frame of ``tub`` through the loop in ``local`` mode."""
    clock = SteppedClock()
    camera = ReplayCamera(str(tub), clock)
    period = 1.0 / rate_hz
    loop = DriveLoop(camera, DryRunActuator(), ScriptedController(Mode.LOCAL),
                     Arbiter(drive, rate_hz, Mode.LOCAL), engine, clock=clock)
    keeper = Ratekeeper(rate_hz, clock=clock, sleep=lambda s: None)
    rows: list[tuple[float, ...]] = []

    def on_tick(result: TickResult) -> bool:
        assert camera.record is not None
        pilot = result.decision.pilot or (np.nan, np.nan)
        cmd = result.decision.command
        rows.append((camera.record["_index"], *pilot, cmd.steering, cmd.throttle))
        clock.now_s += period
        return False

    loop.run(keeper, on_tick=on_tick)
    if not rows:
        raise CarError(f"{tub}: no readable frames to replay")
    return ReplayRun(np.array(rows, np.float64), camera.skipped,
                     {k: v.summary() for k, v in loop.stats.items()}, engine.describe())


def model_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def write_reference(path: Path, run: ReplayRun, model: Path, tub: str, tolerance: float,
                    rate_hz: float) -> None:
    data = {"format": FORMAT, "version": VERSION, "model": model.name,
            "model_sha256": model_digest(model), "tub": str(tub), "rate_hz": rate_hz,
            "tolerance": tolerance, "engine": run.engine, "columns": list(COLUMNS),
            "outputs": [[int(r[0]), *(None if np.isnan(v) else round(float(v), 7)
                                      for v in r[1:])] for r in run.outputs]}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def load_reference(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CarError(f"{path}: cannot read the replay reference: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CarError(f"{path}: not a replay reference (write one with --update-ref)")
    if data.get("version", 0) > VERSION:
        raise CarError(f"{path}: reference version {data['version']} is newer than this "
                       "software; update car")
    return data


@dataclass
class Comparison:
    compared: int
    missing: list[int]  # reference records this run did not produce
    extra: list[int]  # records this run produced that the reference lacks
    max_abs_diff: float
    worst_index: int | None
    worst_column: str | None
    tolerance: float
    nan_mismatches: int = 0  # records where one side is NaN and the other is not

    @property
    def passed(self) -> bool:
        return (not self.missing and not self.extra and not self.nan_mismatches
                and self.max_abs_diff <= self.tolerance)


def compare(run: ReplayRun, reference: dict[str, Any], tolerance: float | None) -> Comparison:
    """Record by record, every output column; a NaN matches only a NaN."""
    tol = float(reference.get("tolerance", DEFAULT_TOLERANCE) if tolerance is None
                else tolerance)
    ref = {int(r[0]): np.array([np.nan if v is None else v for v in r[1:]], np.float64)
           for r in reference["outputs"]}
    got = {int(r[0]): r[1:] for r in run.outputs}
    worst, worst_i, worst_c, nan_mismatches = 0.0, None, None, 0
    for i in sorted(set(ref) & set(got)):
        a, b = ref[i], got[i]
        one_nan = np.isnan(a) != np.isnan(b)
        if one_nan.any():  # NaN on one side only: a mismatch whatever the tolerance
            nan_mismatches += 1
            if worst_c is None or not worst_c.endswith("(NaN)"):
                worst_i, worst_c = i, COLUMNS[1 + int(np.argmax(one_nan))] + " (NaN)"
            continue
        diff = np.where(np.isnan(a), 0.0, np.abs(a - b))
        k = int(np.argmax(diff))
        if diff[k] > worst or worst_i is None:
            worst = float(diff[k])
            if nan_mismatches == 0:
                worst_i, worst_c = i, COLUMNS[1 + k]
    return Comparison(len(set(ref) & set(got)), sorted(set(ref) - set(got)),
                      sorted(set(got) - set(ref)), worst, worst_i, worst_c, tol,
                      nan_mismatches)
