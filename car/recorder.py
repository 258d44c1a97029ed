"""`--record DIR`: the drive loop's recorder. One tub record per tick while recording is
on: the frame, what the user and the pilot said, and the command that was sent.

Field names follow donkeycar (``user/angle``, ``pilot/angle``, ...), so a drive can be
trained on or replayed. Writing happens on the tub writer's thread; when the disk falls
behind, records are dropped and counted, never the loop's timing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from car.config import RecordConfig
from car.frames import Frame, Mode
from car.modes import Decision
from car.tub.writer import TubWriter, WriterStats

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
        """Soft-delete the last ``count`` records (on the writer's thread; restorable)."""
        self.writer.delete_last(count)

    def close(self) -> WriterStats:
        return self.writer.close()


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
