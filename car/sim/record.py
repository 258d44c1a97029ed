"""Recording the expert into a tub: the frame, the expert's clean action as the label, and
the simulator's ground truth beside it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from car.errors import SimError
from car.sim.expert import DartNoise, Expert
from car.sim.world import SimStatus, Simulator
from car.tub.writer import TubWriter

# Field names and types of a simulator tub (donkeycar's names for the first four).
SIM_FIELDS: tuple[tuple[str, str], ...] = (
    ("cam/image_array", "image_array"),
    ("user/angle", "float"),  # the expert's clean steering: the label
    ("user/throttle", "float"),
    ("user/mode", "str"),
    ("sim/applied_angle", "float"),  # what the car executed (with DART noise)
    ("sim/applied_throttle", "float"),
    ("sim/cte", "float"),
    ("sim/speed", "float"),
    ("sim/x", "float"),
    ("sim/y", "float"),
    ("sim/yaw", "float"),
    ("sim/progress", "float"),
    ("sim/lap", "int"),
    ("sim/off_track", "boolean"),
)


@dataclass
class RecordSummary:
    records: int = 0
    laps: int = 0
    lap_times_s: list[float] = field(default_factory=list)
    off_track_events: int = 0
    resets: int = 0
    sim_time_s: float = 0.0
    interrupted: bool = False


def record_expert(sim: Simulator, expert: Expert, noise: DartNoise, writer: TubWriter, *,
                  laps: int, period_s: float,
                  on_step: Callable[[SimStatus], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> RecordSummary:
    """Drive ``laps`` laps with the expert, writing one record per control period.

    The frame is captured before the command, as on the car. ``should_stop()`` returning
    true (the CLI's Ctrl-C), or a KeyboardInterrupt, stops at a record boundary and returns
    what was done (``interrupted``); the caller closes the writer.
    Capture times are spaced by simulated time, so a tub's timestamps show the real rate.
    """
    summary = RecordSummary()
    start = time.monotonic()
    status = sim.status()
    lap = status.lap
    # A lap takes at most this long at a crawl; beyond it the expert is stuck.
    limit_s = sim.time_s + laps * (sim.track.length_m / 0.2) + 30.0
    try:
        while status.lap < laps:
            frame = sim.render()
            steering, throttle = expert.act(sim.vehicle.state, period_s)
            run_steering, run_throttle = noise.perturb(steering, throttle, period_s)
            writer.write({
                "cam/image_array": frame, "user/angle": steering, "user/throttle": throttle,
                "user/mode": "user", "sim/applied_angle": run_steering,
                "sim/applied_throttle": run_throttle, "sim/cte": status.cte_m,
                "sim/speed": status.speed_mps, "sim/x": status.x, "sim/y": status.y,
                "sim/yaw": status.yaw, "sim/progress": status.s_m, "sim/lap": status.lap,
                "sim/off_track": status.off_track,
            }, capture_time=start + status.time_s)
            summary.records += 1
            status = sim.step(run_steering, run_throttle, period_s)
            if status.lap != lap:
                lap = status.lap
                sim.new_lap()  # a new look and physics per lap when randomizing
            if sim.far_off_track:  # put the car back
                status = sim.reset_to_track()
                expert.reset()
                summary.resets += 1
            if on_step is not None:
                on_step(status)
            if should_stop is not None and should_stop():
                summary.interrupted = True
                break
            if status.time_s > limit_s:
                raise SimError(f"the expert made no progress on {sim.track.name} in "
                               f"{status.time_s:.0f} s of driving; lower --noise")
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.laps = status.lap
    summary.lap_times_s = list(status.lap_times_s)
    summary.off_track_events = status.off_track_events
    summary.sim_time_s = status.time_s
    return summary
