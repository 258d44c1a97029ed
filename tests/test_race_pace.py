"""Race pace: the racing expert laps within 3 % of its own speed profile, the grip limit is
felt, and `car sim record/eval --pace race` work as a user runs them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from car.config import Config
from car.sim.pace import make_expert, pace_config
from car.sim.race_expert import RacingExpert
from car.sim.raceline import racing_line
from car.sim.tracks import load_track_for
from car.sim.world import Simulator
from car.tub import Tub
from tests.sim_helpers import run

PERIOD_S = 0.05


def drive(sim: Simulator, expert, laps: int) -> tuple[list[float], int, float]:
    """(lap times, off-track events, top speed) of ``expert`` driving ``laps`` laps."""
    top = 0.0
    while sim.status().lap < laps and sim.time_s < 60.0 * laps:
        status = sim.step(*expert.act(sim.vehicle.state, PERIOD_S), PERIOD_S)
        top = max(top, status.speed_mps)
        if sim.far_off_track:
            sim.reset_to_track()
            expert.reset()
    status = sim.status()
    return list(status.lap_times_s), status.off_track_events, top


@pytest.mark.parametrize("name", ["oval", "technical", "diyrobocars", "random:11"])
def test_the_racing_expert_laps_within_3_percent_of_its_profile(name: str) -> None:
    config = Config()
    track = load_track_for(name, config)
    sim = Simulator(track, config.sim)
    expert = make_expert(track, sim.params, config, "race")
    assert isinstance(expert, RacingExpert)
    sim.reset(0.0, 0.0)
    laps, off, top = drive(sim, expert, 2)
    plan = expert.planned_lap_s()
    flying = laps[1]  # the first lap starts from rest
    assert off == 0
    assert flying <= 1.03 * plan, f"{name}: flying lap {flying:.2f} s, profile {plan:.2f} s"
    cruise = make_expert(track, sim.params, config, "cruise").planned_lap_s()
    assert plan < 0.8 * cruise  # race pace is much faster than cruise
    assert top > 0.8 * sim.params.top_speed_mps


def test_less_grip_is_felt_a_car_planned_for_more_slides_and_a_new_plan_is_slower() -> None:
    config = Config()
    track = load_track_for("technical", config)
    grippy = Simulator(track, config.sim)
    plan_08 = make_expert(track, grippy.params, config, "race")
    slippery_sim = dataclasses.replace(config.sim, mu=0.4)
    slippery = Simulator(track, slippery_sim)
    slippery.reset(0.0, 0.0)
    _, off, _ = drive(slippery, RacingExpert(track, slippery.params, plan_08.line), 1)
    assert off >= 1  # driving the mu 0.8 plan on a mu 0.4 floor leaves the track
    plan_04 = make_expert(track, slippery.params, Config(sim=slippery_sim), "race")
    assert plan_04.planned_lap_s() > 1.1 * plan_08.planned_lap_s()
    slippery = Simulator(track, slippery_sim)
    slippery.reset(0.0, 0.0)
    laps, off, _ = drive(slippery, plan_04, 1)
    assert off == 0 and laps[0] > plan_08.planned_lap_s()


def test_race_pace_lifts_the_throttle_cap_only() -> None:
    config = Config()
    raced = pace_config(config, "race")
    assert raced.drive.max_throttle == 1.0 and config.drive.max_throttle == 0.5
    assert dataclasses.replace(raced, drive=config.drive) == config
    assert pace_config(config, "cruise") is config


def test_the_racing_line_is_cached_per_track_and_car() -> None:
    config = Config()
    track = load_track_for("oval", config)
    params = Simulator(track, config.sim).params
    first = racing_line(track, params, 0.15, 0.9)
    assert racing_line(track, params, 0.15, 0.9) is first
    assert racing_line(track, params, 0.15, 0.8) is not first


def test_eval_the_racing_expert_with_a_speed_map(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    plot = tmp_path / "race.png"
    code, out, _ = run(capsys, "sim", "eval", "--expert", "--track", "oval", "--laps", "2",
                       "--pace", "race", "--randomize", "--seed", "4", "--json", "--plot",
                       str(plot))
    result = json.loads(out)
    assert code == 0 and result["pace"] == "race" and result["finished"]
    assert result["autonomy_pct"] == 100.0
    assert "racing expert" in result["pilot"]
    assert result["top_speed_mps"] > 3.0  # uncapped: the cruise expert tops out at 2 m/s
    assert len(result["physics"]) >= 2  # one draw per lap, in the report
    assert {"mu_scale", "motor_scale", "steering_trim", "extra_delay_ms"} <= \
        set(result["physics"][0])
    image = cv2.imread(str(plot))
    assert image is not None and image.shape[1] >= 620
    # The path is drawn in the speed colours (the turbo map's reds and blues), not |cte|'s.
    saturated = np.logical_and(image[:, :, 2] > 150, image[:, :, 0] < 80).sum()
    assert saturated > 200


def test_record_at_race_pace_keeps_the_pace_and_each_laps_physics(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "tub"
    code, stdout, err = run(capsys, "sim", "record", "--track", "oval", "--laps", "2",
                            "--out", str(out), "--hz", "10", "--pace", "race", "--randomize",
                            "--seed", "5")
    assert code == 0, stdout
    assert "race pace, planned lap" in err
    info = Tub(out).sessions()[0].info["sim"]
    assert info["pace"] == "race" and info["model"] == "dynamic" and info["mu"] == 0.8
    assert len(info["physics"]) == 2 and info["physics"][0] != info["physics"][1]
    speeds = [r["sim/speed"] for r in Tub(out).records()]
    assert max(speeds) > 3.0


def test_race_pace_on_a_donkey_simulator_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "sim", "eval", "--model", "m.onnx", "--sim",
                       "donkey://127.0.0.1:9091", "--pace", "race")
    assert code != 0
    assert "--pace race cannot be used with --sim" in err
    assert len(err.strip().splitlines()) == 1
