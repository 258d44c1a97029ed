"""Reading a tub: its live records, their images, sessions and a summary. Never writes.

Records are identified by ``_index``. A record is *live* unless its index is in
``deleted_indexes`` or it is a tombstone. An index written twice (a crashed donkeycar session
reuses one) reads as one record, where it first appears, with the content of its later line,
whose image is the one on disk; `car tub check --repair` makes the catalogs say the same.
Damage a crash leaves (a torn last line, a catalog the manifest does not list yet) is
tolerated and reported in ``Tub.damage``; `car tub check` gives the full report.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from car.errors import TubError
from car.tub import images
from car.tub.check import structure_problems
from car.tub.format import (
    CAPTURE_MS,
    IMAGE_TYPES,
    IMAGES,
    INDEX,
    SESSION_ID,
    TIMESTAMP_MS,
    TOMBSTONE,
)
from car.tub.lock import lock_holder
from car.tub.scan import latest_lines, scan_tub


@dataclass(frozen=True)
class SessionSummary:
    id: str | None
    records: int
    first_timestamp_ms: int | None
    last_timestamp_ms: int | None
    info: dict[str, Any] | None = None  # what the recorder said about the session


class Tub:
    """A tub opened for reading."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).absolute()
        self.scan = scan_tub(self.path)
        self.manifest = self.scan.manifest
        self.deleted_indexes = set(self.manifest.deleted_indexes)
        latest, self.duplicates = latest_lines(self.scan.lines())  # duplicates: (superseded, kept)
        self._by_index = {i: line.fields for i, line in latest.items()}
        # In the order each index first appears, with its newest content (as repair makes it).
        self._records = [self._by_index[i] for i in dict.fromkeys(
            line.fields[INDEX] for line in self.scan.lines() if line.record is not None)]
        self._live = [r for r in self._records if not self._is_dead(r)]

    def _is_dead(self, record: dict[str, Any]) -> bool:
        return record[INDEX] in self.deleted_indexes or TOMBSTONE in record

    # ------------------------------------------------------------------ records

    @property
    def inputs(self) -> list[str]:
        return self.manifest.inputs

    @property
    def types(self) -> list[str]:
        return self.manifest.types

    @property
    def input_types(self) -> dict[str, str]:
        return self.manifest.input_types

    @property
    def image_keys(self) -> list[str]:
        return [k for k, t in self.input_types.items() if t in IMAGE_TYPES]

    def __len__(self) -> int:
        """Live records, as donkeycar counts them."""
        return len(self._live)

    def records(self, include_deleted: bool = False) -> Iterator[dict[str, Any]]:
        """Records in index order; deleted ones (not tombstones) too if asked."""
        if not include_deleted:
            yield from self._live
            return
        for record in self._records:
            if TOMBSTONE not in record:
                yield record

    def record(self, index: int) -> dict[str, Any]:
        try:
            return self._by_index[index]
        except KeyError:
            raise TubError(f"{self.path}: no record with index {index}") from None

    def indexes(self) -> list[int]:
        """Every index that has a record, deleted or not, in catalog order."""
        return [r[INDEX] for r in self._records]

    @property
    def deleted_count(self) -> int:
        """Soft-deleted records that `car tub restore` can bring back."""
        return sum(1 for r in self._records if r[INDEX] in self.deleted_indexes
                   and TOMBSTONE not in r)

    @property
    def tombstone_count(self) -> int:
        return sum(1 for r in self._records if TOMBSTONE in r)

    # ------------------------------------------------------------------ images

    def image_path(self, record: dict[str, Any], key: str | None = None) -> Path:
        key = key or self._default_image_key()
        name = record.get(key)
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            raise TubError(f"{self.path}: record {record[INDEX]} has no image '{key}'")
        return self.path / IMAGES / name

    def load_image(self, record: dict[str, Any], key: str | None = None) -> np.ndarray:
        """The record's image: RGB uint8 HxWx3 for image_array, uint16 HxW for gray16."""
        key = key or self._default_image_key()
        return images.load(self.image_path(record, key), self.input_types[key], record[INDEX])

    def _default_image_key(self) -> str:
        keys = self.image_keys
        if not keys:
            raise TubError(f"{self.path}: this tub has no image input")
        return keys[0]

    # ------------------------------------------------------------------ summary

    @property
    def damage(self) -> list[str]:
        """One line per defect the cheap checks find (no image is opened); see check_tub."""
        return [f"{p.where}: {p.what}" for p in structure_problems(self.scan)]

    def sessions(self) -> list[SessionSummary]:
        """Live records grouped by session, in order of first appearance."""
        groups: dict[str | None, list[dict[str, Any]]] = {}
        for record in self._live:
            groups.setdefault(record.get(SESSION_ID), []).append(record)
        infos = self.manifest.manifest_metadata.get("sessions", {}).get("info", {})
        return [
            SessionSummary(sid, len(recs), _first_ts(recs), _first_ts(reversed(recs)),
                           infos.get(sid) if isinstance(infos, dict) and sid else None)
            for sid, recs in groups.items()
        ]

    def info(self) -> dict[str, Any]:
        """The summary `car tub info --json` prints."""
        first = _first_ts(self._live)
        last = _first_ts(reversed(self._live))
        groups: dict[Any, list[dict[str, Any]]] = {}
        for record in self._live:
            groups.setdefault(record.get(SESSION_ID), []).append(record)
        spans = [(_first_ts(recs, CAPTURE_MS), _first_ts(reversed(recs), CAPTURE_MS))
                 for recs in groups.values()]
        captured = [(last - first) / 1000 for first, last in spans if first and last]
        return {
            "path": str(self.path),
            "records": len(self),
            "deleted": self.deleted_count,
            "tombstones": self.tombstone_count,
            "current_index": max(self.manifest.current_index, self.scan.max_record_index + 1),
            "inputs": self.inputs,
            "types": self.types,
            "sessions": [s.__dict__ for s in self.sessions()],
            "first_timestamp_ms": first,
            "last_timestamp_ms": last,
            "duration_s": round((last - first) / 1000, 3) if first and last else None,
            # The time the frames span, summed over sessions. A lock-step simulator writes
            # faster than real time, so this can differ from the write timestamps' span.
            "capture_duration_s": round(sum(captured), 3) if captured else None,
            "catalogs": len(self.scan.catalogs),
            "format": "tub_v2 (2020 variant)" if self.manifest.legacy else "tub_v2",
            "damage": self.damage,
            "writer_pid": lock_holder(self.path),
        }


def _first_ts(records: Any, key: str = TIMESTAMP_MS) -> int | None:
    for record in records:
        ts = record.get(key)
        if isinstance(ts, (int, float)):
            return int(ts)
    return None
