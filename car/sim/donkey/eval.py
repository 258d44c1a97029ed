"""`car sim eval --sim donkey://...`: the closed-loop score on a donkey simulator, from what it
reports: ``cte`` and ``hit`` in telemetry, laps from ``collision_with_starting_line`` (or
``cross_start``).

The rules follow the embedded eval (``car.sim.eval``) where the protocol allows: an
intervention is a hit (`car sim serve` reports ``off_track`` when the car leaves the track)
or |cte| over ``max_cte``, or no new path node for ``STALL_S``; the car is then put back at
the nearest node, at rest. A lap not finished in ``lap_limit_s`` of simulated time ends the
run unfinished (the embedded eval can use its expert's pace instead; a remote track has none).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from car.config import Config
from car.controllers import ScriptedController
from car.frames import Mode
from car.loop import DriveLoop, Ratekeeper, TickResult
from car.modes import Arbiter
from car.sim.donkey.client import DonkeyClient
from car.sim.donkey.link import DonkeyLink
from car.sim.eval import STALL_M, STALL_S, EvalResult, autonomy_pct

log = logging.getLogger(__name__)


def evaluate_remote(link: DonkeyLink, pilot: Any, config: Config, *, laps: int,
                    rate_hz: float, lap_limit_s: float = 120.0,
                    should_stop: Callable[[], bool] = lambda: False,
                    on_tick: Callable[[float], None] | None = None) -> EvalResult:
    """Drive ``laps`` laps of the loaded scene with ``pilot`` through the drive loop."""
    arbiter = Arbiter(config.drive, rate_hz, Mode.LOCAL)
    loop = DriveLoop(link.camera, link.actuator, ScriptedController(Mode.LOCAL), arbiter, pilot,
                     clock=link.clock)
    keeper = Ratekeeper(rate_hz, clock=link.clock,
                        sleep=(lambda s: None) if link.lockstep else time.sleep)
    client = link.client
    wall_start = time.monotonic()

    def sim_time() -> float:  # the simulator's clock; the wall's if it sends none
        t = link.status.time_s
        return t if math.isfinite(t) else time.monotonic() - wall_start

    start_s = sim_time()
    path: list[tuple[float, float, float]] = []
    points: list[tuple[float, float, str]] = []
    state: dict[str, Any] = {"headway": None, "headway_s": start_s, "lap_s": start_s,
                             "laps": client.laps}

    def after_tick(result: TickResult) -> bool:
        status = link.status
        now = sim_time()
        path.append((status.x, status.y, abs(status.cte_m)))
        if client.laps != state["laps"]:
            state["laps"], state["lap_s"] = client.laps, now
        cause = link.lost()
        if cause is None and _headway(state["headway"], client):
            state["headway"], state["headway_s"] = _place(client), now
        elif cause is None and now - state["headway_s"] > STALL_S:
            cause = "stalled"
        if cause is not None:
            points.append((status.x, status.y, cause))
            log.info("intervention %d at %.1f s: %s", len(points), now, cause)
            link.put_back()
            pilot.reset()
            state["headway"], state["headway_s"] = None, sim_time()
        if on_tick is not None:
            on_tick(float(min(laps, client.laps)))
        return client.laps >= laps or now - state["lap_s"] > lap_limit_s or should_stop()

    reason = loop.run(keeper, on_tick=after_tick)
    elapsed = sim_time() - start_s
    if reason == "done":
        reason = "laps done" if client.laps >= laps else (
            "interrupted" if should_stop() else
            f"time limit: lap {client.laps + 1} not done in {lap_limit_s:g} s")
    cte = np.array([p[2] for p in path]) if path else np.zeros(1)
    summary = loop.summary(keeper, elapsed)
    latency = loop.stats["frame_to_command"]
    summary["charged_latency_ms"] = latency.summary()
    return EvalResult(
        track=link.name, laps=laps, laps_completed=min(client.laps, laps),
        lap_times_s=list(client.lap_times_s[:laps]),
        autonomy_pct=autonomy_pct(len(points), elapsed), interventions=len(points),
        mean_abs_cte_m=float(cte.mean()), max_abs_cte_m=float(cte.max()),
        elapsed_s=elapsed, pilot=pilot.describe(),
        latency="none: lock-step" if link.lockstep else "real: the simulator runs in real time",
        stop_reason=reason, loop=summary, path=np.array(path, np.float64).reshape(-1, 3),
        intervention_points=points)


def _place(client: DonkeyClient) -> tuple[int | None, float, float] | None:
    t = client.telemetry
    return None if t is None else (t.active_node, t.x, t.y)


def _headway(last: tuple[int | None, float, float] | None, client: DonkeyClient) -> bool:
    """Whether the car has made headway since ``last``: a new path node, or (a simulator
    that reports none) ``STALL_M`` travelled."""
    now = _place(client)
    if last is None or now is None:
        return True
    if now[0] is not None:
        return now[0] != last[0]
    return math.hypot(now[1] - last[1], now[2] - last[2]) > STALL_M
