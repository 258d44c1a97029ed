"""`car replay`: a recorded tub through the engine and the drive loop, compared with a
reference run within a declared tolerance (openpilot's process replay, for the pilot).

The loop runs on a stepped clock (one period per tick, no sleeping) through the one runner,
so the outputs depend only on the frames, the model and the loop logic: a change in any of
them shows up as a difference. The pilot's temporal state follows the one rule
(``car.temporal``): it starts afresh at a gap in the record indexes or a new session, as on
`car tub plot`, which draws the same run. A reference records a digest of the frames it was
made from, and a comparison refuses a reference made from another tub. Latency is measured
on this machine and reported against a budget.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from car.actuator import DryRunActuator
from car.camera import ReplayCamera
from car.config import DriveConfig
from car.controllers import ScriptedController
from car.datafile import read_json
from car.errors import CarError
from car.frames import Mode
from car.loop import DriveLoop, Ratekeeper, TickResult
from car.modes import Arbiter
from car.runner import Runner
from deploy.engine import Engine

FORMAT = "car-replay-reference"
VERSION = 2  # 2: the tub's frame digest; version 1 references are still read
COLUMNS = ("index", "pilot_steering", "pilot_throttle", "command_steering", "command_throttle")
DEFAULT_TOLERANCE = 1e-3  # engines and CPUs differ by ~1e-6; a changed model by far more
LABELS = ("user/angle", "user/throttle")


class SteppedClock:
    """A clock that moves only when told: one loop period per tick."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


@dataclass
class ReplayRun:
    outputs: np.ndarray  # (N, 5): COLUMNS
    labels: np.ndarray  # (N, 2): the records' steering and throttle (``label_keys``)
    skipped: int  # records without a readable frame
    latency_ms: dict[str, dict[str, Any]]
    engine: str
    tub_digest: str  # sha256 of the replayed frames with their indexes and sessions


def replay(engine: Engine, tub: str | os.PathLike, drive: DriveConfig, rate_hz: float, *,
           start: int | None = None, end: int | None = None,
           label_keys: tuple[str, str] = LABELS,
           hooks: Sequence[Callable[[TickResult], None]] = ()) -> ReplayRun:
    """Every readable frame of ``tub`` (records ``start`` to ``end``) through the loop in
    ``local`` mode; ``hooks`` see each tick after it is recorded (as `car tub plot`'s bin
    probabilities do)."""
    clock = SteppedClock()
    camera = ReplayCamera(str(tub), clock, start=start, end=end)
    period = 1.0 / rate_hz
    loop = DriveLoop(camera, DryRunActuator(), ScriptedController(Mode.LOCAL),
                     Arbiter(drive, rate_hz, Mode.LOCAL), engine, clock=clock)
    keeper = Ratekeeper(rate_hz, clock=clock, sleep=lambda s: None)
    rows: list[tuple[float, ...]] = []
    labels: list[tuple[float, float]] = []
    digest = hashlib.sha256()

    def collect(result: TickResult) -> None:
        record = camera.record
        assert record is not None
        frame = result.frame
        digest.update(f"{frame.index}:{frame.session}:".encode())
        digest.update(frame.image.tobytes())
        pilot = result.decision.pilot or (np.nan, np.nan)
        cmd = result.decision.command
        rows.append((record["_index"], *pilot, cmd.steering, cmd.throttle))
        labels.append(tuple(_number(record.get(k)) for k in label_keys))  # type: ignore[misc]
        clock.now_s += period

    try:
        Runner(loop, keeper, hooks=[collect, *hooks]).run()
    finally:
        camera.close()
    if not rows:
        raise CarError(f"{tub}: no readable frames to replay")
    return ReplayRun(np.array(rows, np.float64), np.array(labels, np.float64).reshape(-1, 2),
                     camera.skipped, {k: v.summary() for k, v in loop.stats.items()},
                     engine.describe(), digest.hexdigest())


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def model_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def write_reference(path: Path, run: ReplayRun, model: Path, tub: str | os.PathLike,
                    tolerance: float, rate_hz: float) -> None:
    """The reference file: machine-independent (the tub by name and digest, not its path)."""
    data = {"format": FORMAT, "version": VERSION, "model": model.name,
            "model_sha256": model_digest(model), "tub": Path(tub).name,
            "tub_digest": run.tub_digest, "records": len(run.outputs), "rate_hz": rate_hz,
            "tolerance": tolerance, "engine": run.engine, "columns": list(COLUMNS),
            "outputs": [[int(r[0]), *(None if np.isnan(v) else round(float(v), 7)
                                      for v in r[1:])] for r in run.outputs]}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def check_same_tub(run: ReplayRun, reference: dict[str, Any], ref_path: Path) -> None:
    """A reference compares only with a run on the frames it was made from."""
    expected = reference.get("tub_digest")
    if expected is not None and expected != run.tub_digest:
        raise CarError(f"{ref_path} was made from other frames (tub {reference.get('tub')!r}, "
                       f"{reference.get('records')} records) than this tub gives; replay the "
                       "tub it names, or write a new reference with --update-ref")


def load_reference(path: Path) -> dict[str, Any]:
    data = read_json(path, "replay reference")
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
