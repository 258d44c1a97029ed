"""Scoring primitives on a track: progress, laps and lap times, off-track events."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from car.sim.track import Location, Track


@dataclass
class Progress:
    """Follows one car around a track from the positions it is given.

    Progress is unwrapped (it keeps growing past the start line), so a lap counts only when
    the car has really gone round: driving backwards over the line takes progress away.
    Progress made off the track does not count, and no update counts more than the car
    could have driven, so a shortcut across the infield gains nothing.
    """

    track: Track
    distance_m: float = 0.0  # unwrapped progress since the start, metres along the centreline
    laps: int = 0
    lap_times_s: list[float] = field(default_factory=list)
    off_track: bool = False
    off_track_events: int = 0
    location: Location | None = None
    _last_s: float | None = None
    _last_xy: tuple[float, float] | None = None
    _lap_start_s: float = 0.0

    def start(self, s_m: float, time_s: float) -> None:
        """Begin counting from centreline position ``s_m`` at ``time_s``."""
        self.distance_m = 0.0
        self.laps = 0
        self.lap_times_s = []
        self.off_track = False
        self.off_track_events = 0
        self.location = None
        self._last_s = s_m
        self._last_xy = None
        self._lap_start_s = time_s

    def update(self, x: float, y: float, time_s: float) -> Location:
        """Account for the car being at (x, y) at ``time_s``; returns where that is."""
        hint = self.location.index if self.location is not None else None
        loc = self.track.locate(x, y, hint)
        self.location = loc
        if self._last_s is None:
            self._last_s = loc.s_m
        length = self.track.length_m
        outside = abs(loc.cte_m) > self.track.width_m / 2
        if not outside and not self.off_track:
            step = math.remainder(loc.s_m - self._last_s, length)
            if self._last_xy is not None:  # at most what the car drove, with room for curves
                moved = math.hypot(x - self._last_xy[0], y - self._last_xy[1])
                limit = 3.0 * moved + 0.05
                step = max(-limit, min(limit, step))
            self.distance_m += step
        self._last_s = loc.s_m
        self._last_xy = (x, y)
        while self.distance_m >= (self.laps + 1) * length:
            self.laps += 1
            self.lap_times_s.append(time_s - self._lap_start_s)
            self._lap_start_s = time_s
        if outside and not self.off_track:
            self.off_track_events += 1
        self.off_track = outside
        return loc

    def relocate(self, x: float, y: float) -> Location:
        """After a reset: find the car again without counting the jump as progress."""
        loc = self.track.locate(x, y, None)
        self.location = loc
        self._last_s = loc.s_m
        self._last_xy = (x, y)
        self.off_track = abs(loc.cte_m) > self.track.width_m / 2
        return loc
