"""Which tub records a model learns from, and how they hang together in time.

A *run* is a stretch of records from one session with consecutive indexes: a deletion, a
filtered-out record, an unreadable image or a new session ends it. Sequences for temporal
models and the train/validation split are both built from runs, so neither ever spans a
gap in time.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from car.errors import CarError
from car.tub import Tub
from car.tub.paths import expand_paths


class DataError(CarError):
    """Tubs that cannot make a dataset as asked."""


@dataclass(frozen=True)
class TubRef:
    """A tub the records came from. Only its path is kept: a tub's parsed catalog is about
    1 kB a record, which a 1M-frame training has no use for once its records are read."""

    path: Path


@dataclass(frozen=True, slots=True)
class Record:
    tub: int  # position in the list of tubs
    index: int  # the record's _index in its tub
    session: str  # tub path + session id
    image: str  # file name in the tub's images folder
    steering: float
    throttle: float


@dataclass
class RecordSet:
    tubs: list[TubRef]
    records: list[Record]  # usable records, in tub then index order
    runs: list[range]  # contiguous stretches, as ranges of positions in ``records``
    skipped: dict[str, int]  # why records were left out, and how many

    def __len__(self) -> int:
        return len(self.records)

    def drop_unusable(self, ok: np.ndarray, reasons: dict[str, int]) -> None:
        """Leave out the records where ``ok`` is False (corrupt JPEGs, frames of another
        size); ``reasons`` counts why. Runs break there."""
        for reason, count in reasons.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count
        self.runs = find_runs(self.records, ok)
        if not self.runs:
            raise DataError(f"no usable records: all {len(self.records)} were left out ("
                            + ", ".join(f"{n} {why}" for why, n in reasons.items()) + ")")

    def summary(self) -> str:
        sessions = len({r.session for r in self.records})
        text = (f"{len(self.records)} records from {len(self.tubs)} tub(s), {sessions} "
                f"session(s), {len(self.runs)} run(s)")
        dropped = ", ".join(f"{n} {why}" for why, n in self.skipped.items() if n)
        return text + (f"; left out: {dropped}" if dropped else "")


def expand_tub_paths(patterns: Sequence[str]) -> list[Path]:
    """Tub folders from paths or globs; each must hold a manifest.json."""
    paths = expand_paths(patterns)
    for path in paths:
        if not (path / "manifest.json").is_file():
            raise DataError(f"{path}: not a tub (no manifest.json)")
    return paths


def load_records(paths: Iterable[str | os.PathLike], *, modes: Sequence[str] | None = ("user",),
                 steering_key: str = "user/angle", throttle_key: str = "user/throttle",
                 image_key: str = "cam/image_array") -> RecordSet:
    """Live records whose mode is in ``modes`` (None: any) and whose labels are usable."""
    unique = list(dict.fromkeys(Path(p).resolve() for p in paths))  # each tub once
    tubs = [TubRef(p) for p in unique]
    records: list[Record] = []
    skipped = {"of another mode": 0, "without a finite label": 0, "without an image": 0}
    for t, path in enumerate(unique):
        tub = Tub(path)  # read, then let go: only the records below are kept
        missing = [k for k in (steering_key, throttle_key, image_key) if k not in tub.inputs]
        if missing:
            raise DataError(f"{tub.path}: the tub has no {', '.join(missing)} field "
                            f"(its fields: {', '.join(tub.inputs)})")
        for rec in tub.records():
            mode = rec.get("user/mode", "user")
            if modes is not None and mode not in modes:
                skipped["of another mode"] += 1
                continue
            steering, throttle = rec.get(steering_key), rec.get(throttle_key)
            if not _finite(steering) or not _finite(throttle):
                skipped["without a finite label"] += 1
                continue
            image = rec.get(image_key)
            if not isinstance(image, str):
                skipped["without an image"] += 1
                continue
            session = sys.intern(f"{tub.path}#{rec.get('_session_id') or ''}")  # one copy
            records.append(Record(t, int(rec["_index"]), session, image,
                                  max(-1.0, min(1.0, float(steering))),
                                  max(-1.0, min(1.0, float(throttle)))))
    if not records:
        raise DataError(f"no usable records in {', '.join(str(p) for p in unique)} "
                        f"(modes {list(modes) if modes else 'any'}; "
                        + ", ".join(f"{n} {why}" for why, n in skipped.items()) + ")")
    return RecordSet(tubs, records, find_runs(records), skipped)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


def find_runs(records: Sequence[Record], usable: np.ndarray | None = None) -> list[range]:
    """Maximal stretches of usable records, same tub and session, consecutive indexes."""
    runs: list[range] = []
    start = None
    for i, rec in enumerate(records):
        ok = usable is None or bool(usable[i])
        if start is not None:
            prev = records[i - 1]
            joined = (ok and prev.tub == rec.tub and prev.session == rec.session
                      and rec.index == prev.index + 1)
            if not joined:
                runs.append(range(start, i))
                start = None
        if ok and start is None:
            start = i
    if start is not None:
        runs.append(range(start, len(records)))
    return runs


def windows(runs: Sequence[range], length: int, stride: int = 1) -> np.ndarray:
    """Positions of the last record of every ``stride``-th window of ``length`` records
    inside one run (each run's last window is always kept)."""
    ends = [np.unique(np.r_[np.arange(r.start + length - 1, r.stop, stride), r.stop - 1])
            for r in runs if len(r) >= length]
    return np.concatenate(ends) if ends else np.empty(0, dtype=np.int64)
