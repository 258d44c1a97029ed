"""`--record DIR`: the drive loop's recorder. One tub record per tick while recording is
on: the frame, what the user and the pilot said, and the command that was sent.

Field names follow donkeycar (``user/angle``, ``pilot/angle``, ...), so a drive can be
trained on or replayed. Writing happens on the tub writer's thread; when the disk falls
behind, records are dropped and counted, never the loop's timing.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from car.config import RecordConfig
from car.frames import Frame, Mode
from car.modes import Decision
from car.tub.writer import TubWriter, WriterStats

log = logging.getLogger(__name__)

DRIVE_FIELDS: tuple[tuple[str, str], ...] = (
    ("cam/image_array", "image_array"),
    ("user/angle", "float"),
    ("user/throttle", "float"),
    ("user/mode", "str"),
    ("pilot/angle", "float"),  # the model's raw output (left out when it was not finite)
    ("pilot/throttle", "float"),
    ("car/steering", "float"),  # what was sent to the actuators after mode and safety
    ("car/throttle", "float"),
    ("car/reason", "str"),  # "ok", or why safety sent neutral
)


@dataclass(frozen=True)
class EraseDone:
    """Erase requests finished so far (``done``), the records the last one really deleted
    (``erased``: fewer than asked near the start of a session) and why it failed, if it
    did (``error``)."""

    done: int = 0
    erased: int = 0
    error: str | None = None


class Recorder(Protocol):
    """Takes one record per tick while recording is on (see ``DriveRecorder``)."""

    path: Path

    def write(self, frame: Frame, decision: Decision, mode: Mode) -> None: ...

    def erase_last(self, count: int) -> None:
        """Soft-delete the last ``count`` records of this run, without waiting for the disk."""
        ...

    @property
    def erased(self) -> int:
        """Records soft-deleted so far by ``erase_last``."""
        ...

    @property
    def last_erase(self) -> EraseDone:
        """The erase requests finished so far and what the last one did."""
        ...

    def close(self) -> WriterStats: ...


class DriveRecorder:
    """Records drive ticks into a tub; ``extras()`` adds fields (e.g. the simulator's)."""

    def __init__(self, path: str | os.PathLike, config: RecordConfig, *,
                 extra_fields: tuple[tuple[str, str], ...] = (),
                 extras: Callable[[], Mapping[str, Any]] | None = None,
                 session_info: Mapping[str, Any] | None = None):
        fields = DRIVE_FIELDS + extra_fields
        self.writer = TubWriter(path, [k for k, _ in fields], [t for _, t in fields],
                                {"source": "car drive"}, queue_size=config.queue_size,
                                jpeg_quality=config.jpeg_quality,
                                checkpoint_interval_s=config.checkpoint_interval_s,
                                max_len=config.catalog_max_len, drop_when_full=True,
                                session_info=session_info)
        self.path = self.writer.path
        self._extras = extras
        self._erased = 0
        self._last_erase = EraseDone()
        self._lock = threading.Lock()

    def write(self, frame: Frame, decision: Decision, mode: Mode) -> None:
        pilot = decision.pilot or (None, None)
        record: dict[str, Any] = {
            "cam/image_array": frame.image,
            "user/angle": decision.user.steering, "user/throttle": decision.user.throttle,
            "user/mode": mode.value,
            "pilot/angle": _finite(pilot[0]), "pilot/throttle": _finite(pilot[1]),
            "car/steering": decision.command.steering,
            "car/throttle": decision.command.throttle, "car/reason": decision.reason,
        }
        if self._extras is not None:
            record.update(self._extras())
        self.writer.write(record, capture_time=frame.time_s)

    def erase_last(self, count: int) -> None:
        """Soft-delete the last ``count`` records of this session (restorable). Returns at
        once: the request is queued from a helper thread, since the writer's queue may be
        full of records on a slow disk, and ``erased`` grows by what was really deleted."""
        threading.Thread(target=self._erase, args=(count,), name="erase", daemon=True).start()

    def _erase(self, count: int) -> None:
        try:
            deleted = self.writer.erase_last(count).result(timeout=30)
        except Exception as exc:  # a failed tub is reported by the writer itself too
            log.error("could not erase the last %d records: %s", count, exc)
            with self._lock:
                self._last_erase = EraseDone(self._last_erase.done + 1, 0, str(exc))
            return
        with self._lock:
            self._erased += len(deleted)
            self._last_erase = EraseDone(self._last_erase.done + 1, len(deleted))
        log.warning("erased the last %d records (restore with `car tub restore %s %s`)",
                    len(deleted), self.path, _ranges(deleted))

    @property
    def erased(self) -> int:
        """Records soft-deleted so far by ``erase_last``."""
        return self._erased

    @property
    def last_erase(self) -> EraseDone:
        """The erase requests finished so far and what the last one did."""
        return self._last_erase

    def close(self) -> WriterStats:
        return self.writer.close()


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _ranges(indexes: list[int]) -> str:
    """``[5, 6, 7]`` → ``5:8``, the form `car tub restore` takes."""
    return f"{min(indexes)}:{max(indexes) + 1}" if indexes else "(none)"
