"""The embedded simulator as the drive loop's camera and actuator.

Two ways to keep time:

- **real time** (`car drive --sim`): the simulated world follows the monotonic clock. A
  frame shows the car where it is now; a command acts after the simulated actuation delay,
  so the pilot's real latency is paid as it would be on the car.
- **lock-step** (`car sim eval`): the world waits for the loop, so a run takes as long as
  the computer needs and no longer. The loop's clock is simulated time (from 0). Each command acts
  after the actuation delay plus the pilot's latency: measured from frame to command on
  this computer, or a fixed ``latency_s``. A tick that takes longer than a period delays
  the next frame until it ends, as the Ratekeeper does on the car.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from car.frames import Command, Frame
from car.sim.world import SimStatus, Simulator

Clock = Callable[[], float]


class SimLink:
    """One simulator shared by ``camera`` and ``actuator``; ``clock`` is the loop's clock."""

    def __init__(self, sim: Simulator, period_s: float, *, lockstep: bool,
                 latency_s: float | None = None, wall: Clock = time.perf_counter,
                 monotonic: Clock = time.monotonic):
        self.sim = sim
        self.period_s = period_s
        self.lockstep = lockstep
        self.latency_s = latency_s  # lock-step: fixed pilot latency; None: measure it
        self._wall = wall
        self._monotonic = monotonic
        self._origin_s = monotonic() - sim.time_s  # real time: simulated = clock - origin
        self._captured_wall = wall()
        self._seq = 0
        self.last_latency_s = 0.0
        self.worst_abs_cte_m = 0.0
        self.lock = threading.Lock()  # the loop's thread and its watchdog both drive the car
        sim.renderer  # build the renderer now, not in the first tick  # noqa: B018
        self.camera = SimCamera(self)
        self.actuator = SimActuator(self)

    def clock(self) -> float:
        if self.lockstep:
            return self.sim.time_s
        return self._monotonic()

    def _catch_up(self) -> SimStatus:
        """Real time: advance the world to now with the command in force."""
        if self.lockstep:
            return self.sim.status()
        return self.sim.run_until(self._monotonic() - self._origin_s)

    def _note(self, status: SimStatus) -> None:
        self.worst_abs_cte_m = max(self.worst_abs_cte_m, abs(status.cte_m))

    def take_worst_abs_cte(self) -> float:
        """The largest |cte| seen since the last call (checked every period, not only at
        the frames)."""
        worst, self.worst_abs_cte_m = self.worst_abs_cte_m, 0.0
        return worst

    @property
    def status(self) -> SimStatus:
        return self.sim.status()

    @property
    def name(self) -> str:
        return self.sim.track.name

    def lost(self) -> str | None:
        """Why the car needs putting back (a whole track width off the centreline), or None."""
        return "far off the track" if self.sim.far_off_track else None

    def put_back(self) -> None:
        self.sim.reset_to_track()

    def close(self) -> None:
        """Nothing to release."""


class SimCamera:
    """Renders what the simulated car's camera sees now."""

    def __init__(self, link: SimLink):
        self.link = link
        self.size = link.sim.size

    def read(self) -> Frame:
        link = self.link
        with link.lock:
            link._catch_up()
            stamp = link.clock()
            image = link.sim.render()
            link._captured_wall = link._wall()
            frame = Frame(image, stamp, link._seq)
            link._seq += 1
        return frame

    def close(self) -> None:
        """Nothing to release."""


class SimActuator:
    """Drives the simulated car's servo and ESC."""

    fault: str | None = None

    def __init__(self, link: SimLink):
        self.link = link
        self.sent = 0

    def send(self, command: Command) -> None:
        with self.link.lock:
            self._send(command)

    def _send(self, command: Command) -> None:
        link = self.link
        sim = link.sim
        self.sent += 1
        if not link.lockstep:
            link._note(link._catch_up())
            sim.command(command.steering, command.throttle)
            return
        latency = link.latency_s if link.latency_s is not None else \
            max(0.0, link._wall() - link._captured_wall)
        link.last_latency_s = latency
        sim.command(command.steering, command.throttle, extra_delay_s=latency)
        # The next frame comes a period later, or as soon as this slow tick ends (the
        # Ratekeeper's rule). Advance a period at a time, so a brief excursion off the
        # track between two frames is still seen.
        end = sim.time_s + max(link.period_s, latency)
        while sim.time_s < end - 1e-9:
            link._note(sim.run_until(min(end, sim.time_s + link.period_s)))

    def close(self) -> None:
        """Leave the car with neutral commands (no time passes)."""
        self.link.sim.command(0.0, 0.0)
