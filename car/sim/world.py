"""The embedded simulator: one car on one track, stepped at the control rate, rendered on
demand. ``car.sim.link.SimLink`` puts it behind the World protocol for the drive loop."""

from __future__ import annotations

import math

import numpy as np

from car.config import SimConfig
from car.errors import SimError
from car.sim.appearance import Appearance, default_appearance, random_appearance
from car.sim.render import Renderer
from car.sim.scoring import Progress
from car.sim.track import Track
from car.sim.vehicle import Variation, Vehicle, VehicleParams
from car.world import SimStatus


class Simulator:
    """A car on a track. ``step()`` applies a command for one control period; ``render()``
    shows what the car's camera sees. Everything random comes from ``seed``."""

    def __init__(self, track: Track, sim: SimConfig | None = None, *, width: int = 160,
                 height: int = 120, seed: int = 0, randomize: bool = False):
        self.track = track
        self.config = sim or SimConfig()
        self.params = VehicleParams.from_config(self.config)
        self.vehicle = Vehicle(self.params)
        self.progress = Progress(track)
        self.size = (width, height)
        self.randomize = randomize
        self.streams = seed_streams(seed)
        self._renderer: Renderer | None = None
        self._appearance: Appearance | None = None
        self._time_s = 0.0
        self.seed = seed
        self.variations: list[Variation] = []  # with randomize: the physics of each lap
        if randomize:
            self._vary(0)
        self.reset()

    @property
    def appearance(self) -> Appearance:
        if self._appearance is None:
            self.new_look()
        assert self._appearance is not None
        return self._appearance

    def new_look(self) -> None:
        """With randomize on, draw a new appearance (the next render rebuilds its textures);
        without it, keep the one look."""
        if self.randomize:
            self._appearance = random_appearance(self.track.style, self.config,
                                                 self.streams["appearance"])
            self._renderer = None
        elif self._appearance is None:
            self._appearance = default_appearance(self.track.style, self.config)

    def new_lap(self) -> None:
        """A lap ended: with randomize on, a new look and new physics for the next lap."""
        self.new_look()
        if self.randomize:
            self._vary(len(self.variations))

    def _vary(self, lap: int) -> None:
        variation = variation_for_lap(self.seed, lap)
        self.variations.append(variation)
        self.vehicle.vary(variation)

    def render(self) -> np.ndarray:
        """The camera's (H, W, 3) uint8 RGB frame at the car's current pose."""
        return self.renderer.render(*self.camera_pose())

    @property
    def renderer(self) -> Renderer:
        """The renderer of the current look, built on first use."""
        if self._renderer is None:
            width, height = self.size
            self._renderer = Renderer(self.track, self.appearance, width, height,
                                      rng=self.streams["frames"])
        return self._renderer

    @property
    def time_s(self) -> float:
        return self._time_s

    def reset(self, s_m: float = 0.0, lateral_m: float = 0.0) -> SimStatus:
        """Park the car at progress ``s_m``, ``lateral_m`` right of the centreline, facing
        along it, and start scoring afresh."""
        x, y, yaw = self.track.pose_at(s_m)
        self.vehicle.place(x + lateral_m * math.sin(yaw), y - lateral_m * math.cos(yaw), yaw)
        self.progress.start(s_m, self._time_s)
        self.progress.relocate(x, y)
        return self.status()

    def reset_to_track(self) -> SimStatus:
        """Put the car back at rest on the nearest centreline pose; laps and events are kept."""
        st = self.vehicle.state
        loc = self.track.locate(st.x, st.y, None)
        self.vehicle.place(*self.track.pose_at(loc.s_m))
        self.progress.relocate(self.vehicle.state.x, self.vehicle.state.y)
        return self.status()

    @property
    def far_off_track(self) -> bool:
        """A whole track width from the centreline: lost, and put back by the recorder and
        by `car drive --sim` (eval counts an intervention at half that)."""
        loc = self.progress.location
        return loc is not None and abs(loc.cte_m) > self.track.width_m

    def step(self, steering: float, throttle: float, period_s: float) -> SimStatus:
        """Send a command, then let ``period_s`` of simulated time pass."""
        if not (period_s > 0 and math.isfinite(period_s)):
            raise SimError(f"a simulator step must last a positive time, got {period_s} s")
        self.command(steering, throttle)
        return self.run_until(self._time_s + period_s)

    def command(self, steering: float, throttle: float, extra_delay_s: float = 0.0,
                brake: float = 0.0) -> None:
        """Send a command now; it acts after the actuation delay plus ``extra_delay_s``."""
        self.vehicle.command(steering, throttle, extra_delay_s, brake)

    def resize(self, width: int, height: int) -> None:
        """Render frames of another size from now on (the next render rebuilds)."""
        if (width, height) != self.size:
            self.size = (width, height)
            self._renderer = None

    def run_until(self, time_s: float) -> SimStatus:
        """Let simulated time pass up to ``time_s`` (no-op if it is already later)."""
        if time_s > self._time_s:
            self._time_s = time_s
            ticks = round(self._time_s * self.params.physics_hz) - self.vehicle.state.tick
            self.vehicle.advance(max(0, ticks))
            st = self.vehicle.state
            self.progress.update(st.x, st.y, self._time_s)
        return self.status()

    def status(self) -> SimStatus:
        st = self.vehicle.state
        pr = self.progress
        loc = pr.location
        _, throttle = self.vehicle.applied
        return SimStatus(
            time_s=self._time_s, x=st.x, y=st.y, yaw=st.yaw, speed_mps=st.speed_mps,
            steering=st.wheel_angle_rad / self.params.max_steering_rad, throttle=throttle,
            cte_m=loc.cte_m if loc else 0.0, s_m=loc.s_m if loc else 0.0, lap=pr.laps,
            lap_times_s=tuple(pr.lap_times_s), off_track=pr.off_track,
            off_track_events=pr.off_track_events,
        )

    def camera_pose(self) -> tuple[float, float, float]:
        """(x, y, yaw) of the camera: on the car's axis, ahead of the rear axle."""
        st = self.vehicle.state
        ahead = self.config.camera_forward_m
        return st.x + ahead * math.cos(st.yaw), st.y + ahead * math.sin(st.yaw), st.yaw


def seed_streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent random streams from one seed, so turning rendering or noise on or off
    never changes what another stream draws."""
    names = ("noise", "appearance", "frames")
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children)}


def variation_for_lap(seed: int, lap: int) -> Variation:
    """The physics of lap ``lap`` under ``--randomize`` (the same for the same seed and lap,
    whatever happened before): grip ±20 %, motor ±15 %, steering trim ±0.05 and 0–30 ms of
    extra actuation latency, each uniform."""
    rng = np.random.default_rng([seed, lap, 0x9A11])
    return Variation(mu_scale=float(rng.uniform(0.8, 1.2)),
                     motor_scale=float(rng.uniform(0.85, 1.15)),
                     steering_trim=float(rng.uniform(-0.05, 0.05)),
                     extra_delay_s=float(rng.uniform(0.0, 0.03)))
