"""What the cleaner knows about its tub, and the edits it made: soft deletes and restores
through ``car.tub.marks.set_deleted`` (exactly what `car tub delete` / `restore` do), and an
undo stack of the edits that changed something.

Positions (0..n-1, the timeline's x) and indexes (``_index``, what the tub and `car tub`
speak) differ when a tub's indexes have gaps; the page sends index ranges, half-open like
`car tub delete START:END`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from car.errors import CarError, TubError
from car.tub.format import INDEX, index_ranges
from car.tub.lock import lock_holder
from car.tub.marks import set_deleted
from car.tub.movie import movie_fps
from car.tub.reader import Tub

MAX_UNDO = 1000  # edits remembered; the oldest are forgotten (they stay applied)
MAX_RATE_HZ = 60.0  # the page plays no faster than this
RANGE_HELP = ("a range is {\"start\": S, \"end\": E}: whole numbers, 0 <= S < E, E the first "
              "index left out (like `car tub delete S:E`)")


class BadRange(CarError):
    """A range the page sent that cannot be applied; the message says why."""


@dataclass(frozen=True)
class Edit:
    """An applied edit: the indexes whose state it changed, and to what."""

    deleted: bool
    indexes: tuple[int, ...]

    def describe(self) -> str:
        verb = "deleted" if self.deleted else "restored"
        return f"{verb} {len(self.indexes)} record(s) ({index_ranges(list(self.indexes))})"


class CleanSession:
    """One tub being cleaned: its records' indexes and values, which are deleted, the undo
    stack. Refuses a tub that a recorder holds (TubError, one line)."""

    def __init__(self, path: str | os.PathLike,
                 keys: tuple[str, str] = ("user/angle", "user/throttle")):
        self.path = Path(path).absolute()
        refuse_if_recording(self.path)
        self.keys = keys
        tub = Tub(self.path)
        records = list(tub.records(include_deleted=True))
        if not records:
            raise TubError(f"{self.path}: the tub has no records to clean")
        self.tub = tub
        self.indexes = [int(r[INDEX]) for r in records]
        self.positions = {index: pos for pos, index in enumerate(self.indexes)}
        self.steering = [_number(r.get(keys[0])) for r in records]
        self.throttle = [_number(r.get(keys[1])) for r in records]
        self.rate_hz = round(min(MAX_RATE_HZ, movie_fps(records)[0]), 1)  # `car tub movie`'s
        self.deleted = set(tub.deleted_indexes) & set(self.indexes)
        self.undo_stack: list[Edit] = []

    # ------------------------------------------------------------------ reading

    @property
    def live(self) -> int:
        return len(self.indexes) - len(self.deleted)

    def record(self, index: int) -> dict[str, Any]:
        """The record with ``index`` (deleted or not); TubError if there is none."""
        if index not in self.positions:
            raise TubError(f"no record with index {index} in this tub")
        return self.tub.record(index)

    def state(self) -> dict[str, Any]:
        """What changes with an edit: the deleted flags (by position) and the counts."""
        return {"deleted": [1 if i in self.deleted else 0 for i in self.indexes],
                "live": self.live, "undo": len(self.undo_stack),
                "last_edit": self.undo_stack[-1].describe() if self.undo_stack else None}

    def summary(self) -> dict[str, Any]:
        """Everything the page loads once: the tub, its series, the state."""
        return {"name": self.path.name, "path": str(self.path), "count": len(self.indexes),
                "indexes": self.indexes, "steering": self.steering,
                "throttle": self.throttle, "keys": list(self.keys),
                "rate_hz": self.rate_hz, **self.state()}

    # ------------------------------------------------------------------ editing

    def apply(self, start: Any, end: Any, deleted: bool) -> str:
        """Delete (or restore) the records with indexes in ``start:end``; returns what was
        done, in words. BadRange for a malformed range or one without records; TubError
        when the tub cannot be changed (a recorder holds it)."""
        span = check_range(start, end)
        if not any(i in span for i in self.indexes):
            raise BadRange(f"no records in {start}:{end}: this tub's indexes are "
                           f"{self.indexes[0]}..{self.indexes[-1]}")
        changed = set_deleted(self.path, [span], deleted=deleted)
        self._changed(changed, deleted)
        if not changed:
            state = "already deleted" if deleted else "not deleted"
            return f"nothing changed: the records in {start}:{end} are {state}"
        edit = Edit(deleted, tuple(sorted(changed)))
        self.undo_stack.append(edit)
        del self.undo_stack[:-MAX_UNDO]
        return edit.describe()

    def undo(self) -> str:
        """Revert the last edit (its exact indexes); BadRange when there is none."""
        if not self.undo_stack:
            raise BadRange("nothing to undo")
        edit = self.undo_stack[-1]
        changed = set_deleted(self.path, spans(edit.indexes), deleted=not edit.deleted)
        self.undo_stack.pop()  # only once the tub has changed back
        self._changed(changed, not edit.deleted)
        return "undid: " + edit.describe()

    def _changed(self, indexes: list[int], deleted: bool) -> None:
        if deleted:
            self.deleted.update(i for i in indexes if i in self.positions)
        else:
            self.deleted.difference_update(indexes)


def refuse_if_recording(path: Path) -> None:
    holder = lock_holder(path)
    if holder:
        who = f"pid {holder}" if holder > 0 else "another process"
        raise TubError(f"{path}: being recorded by {who}; stop the recorder, then clean it")


def check_range(start: Any, end: Any) -> range:
    """``start:end`` as a range, or BadRange saying what is wrong with it."""
    for name, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRange(f"{name} {value!r} is not a whole number; {RANGE_HELP}")
    if start < 0 or end <= start:
        raise BadRange(f"range {start}:{end}: need 0 <= start < end; {RANGE_HELP}")
    return range(start, end)


def spans(indexes: tuple[int, ...] | list[int]) -> list[range]:
    """Sorted indexes as the fewest half-open ranges."""
    out: list[range] = []
    for index in sorted(indexes):
        if out and out[-1].stop == index:
            out[-1] = range(out[-1].start, index + 1)
        else:
            out.append(range(index, index + 1))
    return out


def _number(value: Any) -> float | None:
    """A value for the timeline; None (JSON null) where there is no finite number."""
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
