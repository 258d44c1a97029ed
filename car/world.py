"""A World: a simulator the car drives in, the embedded one (``car.sim.link.SimLink``) or a
donkey simulator over TCP (``car.sim.donkey.link.DonkeyLink``). Drive, record and eval use
it through this Protocol only.

A world gives the loop its ``camera`` and ``actuator`` and its ``clock``. In real time it
follows the monotonic clock; in lock-step (``lockstep``) it waits for the loop: each command
sent to its actuator runs one period of simulated time, and the clock is simulated time.
Beside them it reports the car's pose and telemetry (``status``), says when the car has
left the track (``departure``: the eval's intervention; ``lost``: so far off that a drive
puts it back), puts the car back on the track at rest (``put_back``), and says whether the
car is making headway along the track (``made_headway``), so one runner applies one set of
rules to every world (``car.runner``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from car.actuator import Actuator
from car.camera import Camera
from car.health import Health

STALL_M = 0.5  # headway: at least this far along the track (or a new path node)


@dataclass(frozen=True)
class SimStatus:
    """What a world knows about the car now: ground truth for recording and scoring."""

    time_s: float  # the world's time
    x: float
    y: float
    yaw: float
    speed_mps: float
    steering: float  # applied by the servo now (after delay and slew), normalised
    throttle: float  # applied by the ESC now, normalised
    cte_m: float
    s_m: float
    lap: int  # laps completed
    lap_times_s: tuple[float, ...]
    off_track: bool
    off_track_events: int


class World(Protocol):
    """A simulated car on a track, as the loop and the runner see it."""

    camera: Camera
    actuator: Actuator
    lockstep: bool
    pace: str  # "cruise", or "race" where the world's reference expert drives at the limit

    @property
    def name(self) -> str:
        """The track or scene, and where it runs."""
        ...

    @property
    def status(self) -> SimStatus: ...

    def clock(self) -> float:
        """The loop's clock: simulated time in lock-step, else ``time.monotonic()``."""
        ...

    def departure(self) -> str | None:
        """Why the car counts as off the track since the last call (an intervention when
        scoring), or None."""
        ...

    def lost(self) -> str | None:
        """Why the car is so far off that it must be put back, or None."""
        ...

    def put_back(self) -> None:
        """The car at rest back on the track, near where it left it."""
        ...

    def made_headway(self) -> bool:
        """Whether the car has advanced along the track (``STALL_M``, or to a new path
        node) since the last time this said so, or since it was put back."""
        ...

    def lap_progress(self) -> float:
        """Laps driven, with the fraction of the current lap where the world knows it."""
        ...

    def charged_latency_s(self) -> float | None:
        """The pilot latency this world charged to the car on the last command (lock-step),
        or None: it runs in real time and the car paid the real latency."""
        ...

    def reference_lap_s(self) -> float | None:
        """A planned lap time on this track (the yardstick for an eval's time limit), or
        None where the world has no plan."""
        ...

    @property
    def latency_note(self) -> str:
        """How the pilot's latency reaches the car, for the eval report."""
        ...

    def health(self) -> Health | None: ...

    def close(self) -> None: ...
