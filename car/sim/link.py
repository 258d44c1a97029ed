"""The embedded simulator as a World (``car.world``): the drive loop's camera and actuator,
and the car's pose, departures and headway for the runner.

Two ways to keep time:

- **real time** (`car drive --sim`, `car record --sim`): the simulated world follows the
  monotonic clock. The camera renders on its own thread, as a real camera captures on its
  own, each frame timed to be ready just before the loop reads it, and ``read()`` hands
  over the newest frame, stamped with the time of the pose it shows. A command acts after
  the simulated actuation delay, so the pilot's real latency is paid as it would be on the
  car.
- **lock-step** (`car sim eval`): the world waits for the loop, so a run takes as long as
  the computer needs and no longer. The loop's clock is simulated time (from 0); frames are
  rendered when read. Each command acts after the actuation delay plus the pilot's latency:
  measured from frame to command on this computer, or a fixed ``latency_s``. A tick that
  takes longer than a period delays the next frame until it ends, as the Ratekeeper does
  on the car.

With ``randomize``, every lap brings a new look (floor, lines, light, camera mount).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from car.camera import CameraError
from car.config import Config
from car.frames import Command, Frame
from car.health import Health
from car.sim.pace import DEFAULT_PACE, check_pace, make_expert
from car.sim.track import Track
from car.sim.world import Simulator
from car.world import STALL_M, SimStatus

Clock = Callable[[], float]
FIRST_FRAME_S = 5.0  # real time: the camera thread's first frame must come by then
LEAD_MARGIN_S = 0.002  # a frame is due this long before the loop's read, beyond its render


class SimLink:
    """One simulator shared by ``camera`` and ``actuator``; ``clock`` is the loop's clock."""

    def __init__(self, sim: Simulator, period_s: float, *, lockstep: bool,
                 latency_s: float | None = None, wall: Clock = time.perf_counter,
                 monotonic: Clock = time.monotonic, pace: str = DEFAULT_PACE):
        self.sim = sim
        self.pace = check_pace(pace)  # the expert's pace: its planned lap is the reference
        self.period_s = period_s
        self.lockstep = lockstep
        self.latency_s = latency_s  # lock-step: fixed pilot latency; None: measure it
        self._wall = wall
        self._monotonic = monotonic
        self._origin_s = monotonic() - sim.time_s  # real time: simulated = clock - origin
        self._captured_wall = wall()
        self.last_latency_s = 0.0
        self.worst_abs_cte_m = 0.0
        self._look_lap = sim.progress.laps
        self._headway_mark_m = sim.progress.distance_m
        self.lock = threading.Lock()  # the loop's thread, its watchdog and the camera's
        sim.renderer  # build the renderer now, not in the first tick  # noqa: B018
        self.actuator = SimActuator(self)
        self.camera: SimCamera | LiveSimCamera = SimCamera(self) if lockstep else \
            LiveSimCamera(self, period_s)

    @classmethod
    def on_track(cls, track: Track, config: Config, period_s: float, *, lockstep: bool,
                 seed: int = 0, randomize: bool = False, latency_s: float | None = None,
                 pace: str = DEFAULT_PACE) -> SimLink:
        """A new simulator on ``track`` with the configured car and camera, as a World."""
        sim = Simulator(track, config.sim, width=config.camera.width,
                        height=config.camera.height, seed=seed, randomize=randomize)
        return cls(sim, period_s, lockstep=lockstep, latency_s=latency_s, pace=pace)

    # ---------------------------------------------------------------- the world's time
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

    def _pose_to_render(self) -> tuple[float, float, float]:
        """The camera's pose now, after a new look if a lap just ended (call under lock)."""
        if self.sim.progress.laps != self._look_lap:
            self._look_lap = self.sim.progress.laps
            self.sim.new_lap()  # randomize: a new look and physics every lap
        return self.sim.camera_pose()

    # ---------------------------------------------------------------- the World protocol
    @property
    def status(self) -> SimStatus:
        return self.sim.status()

    @property
    def name(self) -> str:
        return self.sim.track.name

    def take_worst_abs_cte(self) -> float:
        """The largest |cte| seen since the last call (checked every physics catch-up and
        every period in lock-step, not only at the frames)."""
        worst, self.worst_abs_cte_m = self.worst_abs_cte_m, 0.0
        return worst

    def departure(self) -> str | None:
        """Off the track (|cte| over half its width) at any time since the last call."""
        worst = max(self.take_worst_abs_cte(), abs(self.sim.status().cte_m))
        return "off track" if worst > self.sim.track.width_m / 2 else None

    def lost(self) -> str | None:
        """A whole track width off the centreline: put the car back."""
        return "far off the track" if self.sim.far_off_track else None

    def put_back(self) -> None:
        with self.lock:
            self.sim.reset_to_track()
            self._headway_mark_m = self.sim.progress.distance_m

    def made_headway(self) -> bool:
        distance = self.sim.progress.distance_m
        if distance > self._headway_mark_m + STALL_M:
            self._headway_mark_m = distance
            return True
        return False

    def lap_progress(self) -> float:
        return self.sim.progress.distance_m / self.sim.track.length_m

    def charged_latency_s(self) -> float | None:
        return self.last_latency_s if self.lockstep else None

    def reference_lap_s(self) -> float | None:
        """The planned lap time of the expert at this world's pace."""
        sim = self.sim
        expert = make_expert(sim.track, sim.params, Config(sim=sim.config), self.pace)
        return expert.planned_lap_s()

    @property
    def latency_note(self) -> str:
        if not self.lockstep:
            return "real: the simulator runs in real time"
        return "measured" if self.latency_s is None else f"fixed {self.latency_s * 1000:g} ms"

    def health(self) -> Health | None:
        return None

    def close(self) -> None:
        self.camera.close()


class SimCamera:
    """Renders what the simulated car's camera sees when the loop reads, on the loop's
    thread: the lock-step camera (in real time the world would first catch up to now;
    ``benchmarks/bench_loop.py`` measures that against ``LiveSimCamera``)."""

    def __init__(self, link: SimLink):
        self.link = link
        self.size = link.sim.size
        self._seq = 0

    def read(self) -> Frame:
        link = self.link
        with link.lock:
            link._note(link._catch_up())
            stamp = link.clock()
            image = link.sim.renderer.render(*link._pose_to_render())
            link._captured_wall = link._wall()
            frame = Frame(image, stamp, self._seq)
            self._seq += 1
        return frame

    def close(self) -> None:
        """Nothing to release."""


class LiveSimCamera:
    """Real time: renders on its own thread and hands the newest frame to ``read()``, as a
    real camera's reader thread does; the loop's capture is a hand-over, not a render.

    Each frame is timed to be ready just before the loop is due to read it (one loop period
    after its last read, less the longest recent render and a margin), like a camera
    triggered by the loop: the frame is about a render old when read, and the renderer
    works while the loop sleeps. Before the first read it renders one frame at once."""

    def __init__(self, link: SimLink, period_s: float):
        self.link = link
        self.size = link.sim.size
        self.period_s = period_s
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._failed: str | None = None
        self._read_s: float | None = None  # when the loop last read
        self._renders_s: deque[float] = deque([0.002], maxlen=32)  # recent render times
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-camera", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._render()
            served: float | None = None  # the read the newest frame was made for
            while not self._stop.is_set():
                read_s = self._next_read(served)
                if read_s is None or read_s == served:
                    continue
                served = read_s
                lead_s = max(self._renders_s) + LEAD_MARGIN_S
                if self._stop.wait(max(0.0, read_s + self.period_s - lead_s
                                       - self.link._monotonic())):
                    return
                self._render()
        except Exception as exc:  # reported by read(), which the loop handles
            with self._cond:
                self._failed = f"the simulator's camera failed: {type(exc).__name__}: {exc}"
                self._cond.notify_all()

    def _next_read(self, served: float | None) -> float | None:
        """Waits (up to a second) for the loop to read after ``served``; that read's time."""
        with self._cond:
            self._cond.wait_for(lambda: self._read_s != served or self._stop.is_set(),
                                timeout=1.0)
            return self._read_s

    def _render(self) -> None:
        link = self.link
        t0 = time.perf_counter()
        with link.lock:
            link._note(link._catch_up())
            pose = link._pose_to_render()
            stamp = link._monotonic()
        image = link.sim.renderer.render(*pose)  # only this thread renders
        self._renders_s.append(time.perf_counter() - t0)
        with self._cond:
            seq = self._latest.seq + 1 if self._latest is not None else 0
            self._latest = Frame(image, stamp, seq)
            self._cond.notify_all()

    def read(self) -> Frame:
        with self._cond:
            self._cond.wait_for(lambda: self._latest is not None or self._failed is not None,
                                timeout=FIRST_FRAME_S)
            if self._failed is not None:
                raise CameraError(self._failed)
            if self._latest is None:
                raise CameraError(f"the simulator's camera gave no frame in {FIRST_FRAME_S:g} s")
            self._read_s = self.link._monotonic()
            self._cond.notify_all()
            return self._latest  # may be the previous frame: the loop judges its age

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)


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

    def describe(self) -> str:
        return "the simulated car"

    def health(self) -> Health | None:
        return None

    def status(self) -> dict[str, object]:
        return {}

    def close(self) -> None:
        """Leave the car with neutral commands (no time passes)."""
        with self.link.lock:
            self.link.sim.command(0.0, 0.0)

