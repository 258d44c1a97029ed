"""When a temporal pilot's state must start afresh: the rnn's hidden state and the ring of
the last T frames of a 3d model describe one unbroken stretch of driving, and a frame that
does not follow on from the last one must not be read as if it did.

The one rule, used by the drive loop and so by everything that runs through it (`car
drive`, `car record`, both evals, `car replay` and `car tub plot`): the state is reset

- at a gap in a replayed tub's record indexes (a deleted or unreadable record), or where
  its session changes;
- on a stale frame (a gap in time);
- when the driving mode changes (the state belongs to one stretch of one mode);
- when the car is put back on the track (the runner says so).
"""

from __future__ import annotations

from car.frames import Frame


class Continuity:
    """Remembers the last frame the pilot saw; ``breaks`` says whether the next one starts
    a new stretch, and why."""

    def __init__(self) -> None:
        self._last: Frame | None = None

    def breaks(self, frame: Frame, *, stale: bool = False,
               mode_changed: bool = False) -> str | None:
        """Why the pilot's temporal state must be reset before ``frame``, or None."""
        last, self._last = self._last, frame
        if last is None:  # the state is fresh already: a new engine, or just reset
            return None
        if stale:
            return "stale frame"
        if mode_changed:
            return "mode change"
        if frame.index is not None:
            if frame.session != last.session:
                return "new session"
            if last.index is None or frame.index != last.index + 1:
                return "gap in the records"
        return None

    def restart(self) -> None:
        """The state was just reset (the car was put back, a new model took over): the
        next frame starts a new stretch without another reset."""
        self._last = None
