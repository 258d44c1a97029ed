"""The expert is a valid teacher: clean laps with noise off, few excursions with noise on."""

from __future__ import annotations

import pytest

from car.config import SimConfig
from car.sim.expert import DartNoise, Expert
from car.sim.tracks import builtin_names, load_track
from car.sim.world import Simulator
from tests.sim_helpers import TURN_RADIUS_M

TRACKS = [*builtin_names(), *(f"random:{seed}" for seed in range(20))]
PERIOD_S = 0.05


def drive(spec: str, sigma: float, laps: int = 3) -> tuple[int, int, float, float]:
    """(laps, off-track events, max |cte|, mean |label - executed|) of an expert run."""
    track = load_track(spec, TURN_RADIUS_M)
    sim = Simulator(track)
    expert = Expert(track, sim.params, SimConfig().expert_speed_mps)
    noise = DartNoise(sigma, sim.streams["noise"])
    status = sim.status()
    worst, gap, steps = 0.0, 0.0, 0
    while status.lap < laps and status.time_s < 300:
        label = expert.act(sim.vehicle.state, PERIOD_S)
        executed = noise.perturb(*label, PERIOD_S)
        gap += abs(label[0] - executed[0])
        status = sim.step(*executed, PERIOD_S)
        worst = max(worst, abs(status.cte_m))
        steps += 1
    return status.lap, status.off_track_events, worst, gap / steps


@pytest.mark.parametrize("spec", TRACKS)
def test_three_clean_laps_with_noise_off(spec: str) -> None:
    laps, events, worst_cte, _ = drive(spec, 0.0)
    assert laps == 3
    assert events == 0
    assert worst_cte < 0.25


def test_default_noise_makes_recoveries_with_few_excursions() -> None:
    sigma = SimConfig().expert_noise
    assert sigma > 0
    results = [drive(spec, sigma) for spec in TRACKS]
    assert all(laps == 3 for laps, *_ in results)
    events = sum(r[1] for r in results)
    assert events <= len(TRACKS) // 4  # few: at most one per four tracks, 3 laps each
    # The executed action really differs from the label, and the car really leaves the line.
    assert min(r[3] for r in results) > 0.05
    assert max(r[2] for r in results) > 0.15


def test_the_expert_can_drive_a_lane() -> None:
    """``sim.expert_line_m`` moves the driving line: 0.25 m right drives the right lane."""
    track = load_track("diyrobocars", TURN_RADIUS_M)
    sim = Simulator(track)
    expert = Expert(track, sim.params, 2.0, line_m=0.25)
    ctes = []
    status = sim.status()
    while status.lap < 1:
        status = sim.step(*expert.act(sim.vehicle.state, PERIOD_S), PERIOD_S)
        ctes.append(status.cte_m)
    assert status.off_track_events == 0
    assert sum(ctes[100:]) / len(ctes[100:]) == pytest.approx(0.25, abs=0.03)
