"""Soft delete and restore (`car tub delete` / `car tub restore`): only deleted_indexes changes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from car.errors import TubError
from car.tub.lock import TubLock
from car.tub.reader import Tub
from car.tub.scan import require_inside


def set_deleted(path: str | os.PathLike, ranges: Sequence[range], deleted: bool) -> list[int]:
    """Mark the records in ``ranges`` deleted (or live again); returns the indexes changed.

    Tombstones (indexes a crash made unrecoverable) cannot be restored.
    """
    tub_path = Path(path).absolute()
    require_inside(tub_path)  # the manifest is rewritten: never through a link out of the tub
    lock = TubLock(tub_path) if (tub_path / "manifest.json").is_file() else None
    try:
        tub = Tub(tub_path)
        indexes = [r["_index"] for r in tub.records(include_deleted=True)]
        present = {i for i in indexes if any(i in span for span in ranges)}
        if not present:
            span = f"{min(indexes)}..{max(indexes)}" if indexes else "none: the tub is empty"
            raise TubError(f"{tub_path}: no records in those ranges (indexes here: {span})")
        changed = tub.manifest.mark(present, deleted)  # tombstones are never in ``present``
        if changed:
            tub.manifest.write(tub_path)
        return changed
    finally:
        if lock is not None:
            lock.release()
