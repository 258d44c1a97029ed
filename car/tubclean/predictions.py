"""The pilot's steering and throttle for every record of the tub, computed once before the
page opens: the same run as `car replay` and `car tub plot` (the loop, its temporal-state
rule, the engine), so the timeline shows what the car would have done."""

from __future__ import annotations

import math
from pathlib import Path

from car.config import DriveConfig
from car.pilot import open_pilot
from car.replay import replay
from car.tubclean.edits import CleanSession


def pilot_series(model: str | Path, session: CleanSession, drive: DriveConfig
                 ) -> dict[str, object]:
    """``{"name", "steering", "throttle", "skipped"}``, the series aligned with the session's
    positions (None where a record's frame could not be read)."""
    engine = open_pilot(str(model))
    try:
        run = replay(engine, session.path, drive, drive.rate_hz, label_keys=session.keys)
    finally:
        engine.close()
    steering: list[float | None] = [None] * len(session.indexes)
    throttle: list[float | None] = [None] * len(session.indexes)
    for row in run.outputs:
        pos = session.positions.get(int(row[0]))
        if pos is not None:
            steering[pos], throttle[pos] = _finite(row[1]), _finite(row[2])
    return {"name": Path(model).name, "steering": steering, "throttle": throttle,
            "skipped": run.skipped}


def _finite(value: float) -> float | None:
    value = float(value)
    return round(value, 5) if math.isfinite(value) else None
