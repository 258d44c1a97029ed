"""A `gymnasium.Env` over the embedded simulator, for reinforcement learning.

Optional: this is the only module of ``car`` that imports gymnasium, and nothing imports it
but its users. Importing it registers ``CarSim-v0``, so
``gymnasium.make("car.sim.gym_env:CarSim-v0", track="oval")`` works from anywhere.

Same action layout and reward shape as gym-donkeycar, in metres (docs/gymnasium.md):
action ``[steering, throttle]`` with steering +1 full right; reward ``-1`` on leaving the
track (``|cte| > max_cte_m``, which ends the episode), else ``(1 - |cte| / max_cte_m) × speed``
moving forward and the (negative) speed reversing. The env never truncates by itself: the
registration's ``max_episode_steps`` (2000) does.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

try:
    import gymnasium
    from gymnasium import spaces
except ImportError as exc:
    raise ImportError(
        f"car.sim.gym_env needs gymnasium ({exc}): pip install 'car-autopilot[gym]' (from a "
        "checkout: pip install -e '.[gym]'), or pip install gymnasium") from exc

from car.config import Config
from car.sim.track import Track
from car.sim.tracks import load_track
from car.sim.vehicle import VehicleParams
from car.sim.world import SimStatus, Simulator, seed_streams

ENV_ID = "CarSim-v0"
MAX_EPISODE_STEPS = 2000


class CarSimEnv(gymnasium.Env):
    """One car on one track; a step is one control period; observations are camera frames."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"],
                                          "render_fps": Config().drive.rate_hz}

    def __init__(self, *, track: str | Track = "diyrobocars", config: Config | None = None,
                 rate_hz: float | None = None, max_cte_m: float | None = None,
                 randomize: bool = False, random_start: bool = False,
                 throttle_min: float = 0.0, throttle_max: float = 1.0,
                 render_mode: str | None = None):
        """Bad arguments raise ValueError (TrackError, a CarError, for a bad track).

        Args:
            track: a built-in track name, a track .json file, ``random:SEED``, or a Track.
            config: the car's configuration (physics, camera size); default ``Config()``.
            rate_hz: control rate; one step lasts ``1 / rate_hz`` s (default drive.rate_hz).
            max_cte_m: |cross-track error| that ends an episode (default track width / 2).
            randomize: domain randomisation, a new look every episode.
            random_start: start each episode at a random point of the track (else s = 0).
            throttle_min, throttle_max: the throttle range of the action space, in [-1, 1].
            render_mode: None or "rgb_array" (``render()`` then returns the camera frame).
        """
        config = Config() if config is None else config
        if not isinstance(config, Config):
            raise ValueError(f"config must be a car.config.Config, got {type(config).__name__}")
        rate_hz = config.drive.rate_hz if rate_hz is None else _number("rate_hz", rate_hz)
        throttle_min = _number("throttle_min", throttle_min)
        throttle_max = _number("throttle_max", throttle_max)
        physics_hz = config.sim.physics_hz
        if not (0 < rate_hz <= physics_hz):
            raise ValueError(f"rate_hz={rate_hz:g}: the control rate must be above 0 and at "
                             f"most sim.physics_hz ({physics_hz:g} Hz)")
        if not (-1.0 <= throttle_min <= throttle_max <= 1.0):
            raise ValueError(f"throttle_min={throttle_min:g}, throttle_max={throttle_max:g}: "
                             "need -1 <= throttle_min <= throttle_max <= 1")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode={render_mode!r}: use None or 'rgb_array'")
        if isinstance(track, str):
            track = load_track(track, VehicleParams.from_config(config.sim).turn_radius_m)
        elif not isinstance(track, Track):
            raise ValueError(f"track must be a track spec (a name, a .json file or "
                             f"random:SEED) or a Track, got {type(track).__name__}")
        max_cte_m = track.width_m / 2 if max_cte_m is None else _number("max_cte_m", max_cte_m)
        if not (max_cte_m > 0 and math.isfinite(max_cte_m)):
            raise ValueError(f"max_cte_m={max_cte_m:g}: the off-track limit must be a positive "
                             f"distance in metres (the track is {track.width_m:g} m wide)")

        self.config = config
        self.track = track
        self.rate_hz = rate_hz
        self.max_cte_m = max_cte_m
        self.random_start = bool(random_start)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": rate_hz}
        height, width = config.camera.height, config.camera.width
        self.observation_space = spaces.Box(0, 255, (height, width, 3), np.uint8)
        self.action_space = spaces.Box(np.array([-1.0, throttle_min], np.float32),
                                       np.array([1.0, throttle_max], np.float32),
                                       dtype=np.float32)
        # One simulator for the env's life: without randomize its look (textures, sensor noise
        # bank) is built once, from seed 0; every reset reseeds its random streams.
        self.sim = Simulator(track, config.sim, width=width, height=height, seed=0,
                             randomize=bool(randomize))
        if not randomize:
            self.sim.renderer  # noqa: B018 (built now, before any reseeding)
        self._status: SimStatus | None = None
        self._frame: np.ndarray | None = None  # the last observation
        self._steps = 0  # in this episode

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode at rest on the centreline; ``options={"s_m": S}`` picks where."""
        super().reset(seed=seed)
        sim = self.sim
        fresh = seed_streams(int(self.np_random.integers(2**63)))
        for name, stream in sim.streams.items():  # in place: the renderer holds "frames"
            stream.bit_generator.state = fresh[name].bit_generator.state
        s_m = self._start_s(options or {})
        # Start on a whole second, so the physics ticks fall the same way in every episode.
        sim.run_until(float(math.ceil(sim.time_s)))
        self._steps = 0
        sim.new_look()  # randomize: a new look, drawn from the reseeded stream
        self._status = sim.reset(s_m, 0.0)
        return self._observe(), self._info(terminated=False)

    def _start_s(self, options: dict[str, Any]) -> float:
        unknown = set(options) - {"s_m"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}: the only one is "
                             "'s_m' (start position along the track, metres)")
        if "s_m" in options:
            s_m = options["s_m"]
            if isinstance(s_m, bool) or not isinstance(s_m, (int, float, np.number)) \
                    or not math.isfinite(s_m):
                raise ValueError(f"reset option s_m={s_m!r}: give a finite number of metres "
                                 f"along the track (0 to {self.track.length_m:.2f})")
            return float(s_m) % self.track.length_m
        if self.random_start:
            return float(self.np_random.uniform(0.0, self.track.length_m))
        return 0.0

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply ``[steering, throttle]`` (clipped into the action space) for one period."""
        if self._status is None:
            raise gymnasium.error.ResetNeeded("call reset() before step()")
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"action {action!r}: give two numbers, [steering, throttle]") \
                from None
        if a.shape != (2,):
            raise ValueError(f"action of shape {a.shape}: give two numbers, [steering, "
                             "throttle], shape (2,)")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action {a.tolist()} is not finite: steering and throttle must "
                             "be finite numbers (is the policy's output NaN?)")
        a = np.clip(a, self.action_space.low, self.action_space.high)
        status = self.sim.step(float(a[0]), float(a[1]), 1.0 / self.rate_hz)
        self._status = status
        self._steps += 1
        terminated = abs(status.cte_m) > self.max_cte_m
        if terminated:
            reward = -1.0
        elif status.speed_mps > 0:
            reward = (1.0 - abs(status.cte_m) / self.max_cte_m) * status.speed_mps
        else:
            reward = status.speed_mps  # reversing costs, as in gym-donkeycar
        return self._observe(), float(reward), terminated, False, self._info(terminated)

    def render(self) -> np.ndarray | None:
        """The last observation, (H, W, 3) uint8 RGB, in "rgb_array" mode; else None. (Not a
        new frame: that would draw new sensor noise and change the episode.)"""
        if self.render_mode != "rgb_array" or self._frame is None:
            return None
        return self._frame.copy()

    def close(self) -> None:
        """Nothing heavy to release; safe to call more than once."""
        self._status = self._frame = None

    def _observe(self) -> np.ndarray:
        self._frame = self.sim.render()
        return self._frame

    def _info(self, terminated: bool) -> dict[str, Any]:
        st = self._status
        assert st is not None
        # Laps end on a step (progress is scored once a period): snapped to it, times are
        # the same in every episode whatever the simulator's clock read when it began.
        laps = [round(t * self.rate_hz) / self.rate_hz for t in st.lap_times_s]
        return {
            "cte_m": float(st.cte_m), "speed_mps": float(st.speed_mps), "x_m": float(st.x),
            "y_m": float(st.y), "yaw_rad": float(st.yaw),
            "time_s": self._steps / self.rate_hz, "lap": int(st.lap),
            "lap_times_s": laps, "last_lap_time_s": laps[-1] if laps else None,
            "off_track": bool(st.off_track), "progress_m": float(self.sim.progress.distance_m),
            "hit": "off_track" if terminated else "none",
        }


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name}={value!r}: give a number")
    return float(value)


if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="car.sim.gym_env:CarSimEnv",
                       max_episode_steps=MAX_EPISODE_STEPS)
