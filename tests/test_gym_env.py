"""The gymnasium Env over the embedded simulator: API conformance, seeding, reward and
termination, argument errors, and that gymnasium stays optional."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

gymnasium = pytest.importorskip("gymnasium")

from gymnasium.utils.env_checker import check_env  # noqa: E402

from car.config import Config  # noqa: E402
from car.errors import CarError  # noqa: E402
from car.sim.expert import Expert  # noqa: E402
from car.sim.gym_env import ENV_ID, CarSimEnv  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
INFO_KEYS = {"cte_m", "speed_mps", "x_m", "y_m", "yaw_rad", "time_s", "lap", "lap_times_s",
             "last_lap_time_s", "off_track", "progress_m", "hit"}


def oval(**kw) -> CarSimEnv:
    return CarSimEnv(track="oval", **kw)


def pd_steering(info: dict, prev_cte_m: float) -> float:
    """Steer back toward the centreline (cte > 0 is right of it, steering +1 is right)."""
    cte = info["cte_m"]
    return -(2.0 * cte + 8.0 * (cte - prev_cte_m))


def run(env, seed: int, actions) -> tuple[list[np.ndarray], list[float], list[dict]]:
    obs, info = env.reset(seed=seed)
    frames, rewards, infos = [obs], [], [info]
    for action in actions:
        obs, reward, terminated, _, info = env.step(action)
        frames.append(obs)
        rewards.append(reward)
        infos.append(info)
        if terminated:
            break
    return frames, rewards, infos


def test_gymnasiums_env_checker_passes():
    env = gymnasium.make(f"car.sim.gym_env:{ENV_ID}", track="oval")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker reports problems as warnings
        check_env(env.unwrapped)  # with the spec: also makes it in each render mode
    env.close()


def test_make_by_registered_id_with_keyword_arguments():
    env = gymnasium.make(f"car.sim.gym_env:{ENV_ID}", track="oval", rate_hz=10,
                         throttle_min=-0.5, throttle_max=0.6, max_episode_steps=5)
    assert env.spec.id == ENV_ID
    assert gymnasium.spec(ENV_ID).max_episode_steps == 2000
    assert isinstance(env.unwrapped, CarSimEnv)
    assert env.metadata["render_fps"] == 10
    np.testing.assert_allclose(env.action_space.low, [-1.0, -0.5])
    np.testing.assert_allclose(env.action_space.high, [1.0, 0.6])
    env.reset(seed=0)
    ends = [env.step(np.array([0.0, 0.3], np.float32))[2:4] for _ in range(5)]
    assert ends == [(False, False)] * 4 + [(False, True)]  # truncated by the TimeLimit only
    assert env.unwrapped.sim.time_s > 0


def test_reset_gives_a_camera_frame_and_plain_info():
    env = oval()
    obs, info = env.reset(seed=1)
    assert env.observation_space.shape == (120, 160, 3)
    assert obs.shape == (120, 160, 3) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    assert set(info) == INFO_KEYS
    assert info["hit"] == "none" and info["lap"] == 0 and info["lap_times_s"] == []
    assert info["last_lap_time_s"] is None and info["time_s"] == 0.0
    assert abs(info["cte_m"]) < 1e-6 and info["speed_mps"] == 0.0
    json.dumps(info)  # JSON-serialisable: plain floats, ints, lists


def test_the_camera_size_follows_the_config():
    config = Config(camera=type(Config().camera)(width=64, height=48))
    env = oval(config=config)
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape == (48, 64, 3)


def test_step_returns_the_five_tuple():
    env = oval(render_mode="rgb_array")
    env.reset(seed=2)
    obs, reward, terminated, truncated, info = env.step([0.0, 0.5])
    assert obs.shape == (120, 160, 3) and obs.dtype == np.uint8
    assert type(reward) is float and type(terminated) is bool and type(truncated) is bool
    assert set(info) == INFO_KEYS and info["time_s"] == pytest.approx(0.05)
    json.dumps(info)
    np.testing.assert_array_equal(env.render(), obs)  # the frame the agent saw
    obs = env.step([0.0, 0.5])[0]
    twin = oval()
    twin.reset(seed=2)
    twin.step([0.0, 0.5])
    np.testing.assert_array_equal(twin.step([0.0, 0.5])[0], obs)  # render() changed nothing
    env.close()
    env.close()  # twice is fine


@pytest.mark.parametrize(("randomize", "rate_hz"), [(False, 20.0), (True, 20.0), (False, 30.0)])
def test_the_same_seed_repeats_an_episode(randomize: bool, rate_hz: float):
    actions = [[0.2 * np.sin(k / 5), 0.6] for k in range(25)]
    first = run(oval(randomize=randomize, rate_hz=rate_hz), 7, actions)
    other = oval(randomize=randomize, rate_hz=rate_hz)
    run(other, 3, actions[:11])  # a different history first (at 30 Hz, a period is 6.67 ticks)
    again = run(other, 7, actions)
    for a, b in zip(first[0], again[0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert first[1] == again[1]
    assert first[2] == again[2]
    if randomize:  # another seed is another look
        assert not np.array_equal(run(other, 8, [])[0][0], first[0][0])


def test_a_pd_controller_on_the_cross_track_error_stays_on_track():
    env = gymnasium.make(ENV_ID, track="oval")
    _, info = env.reset(seed=0)
    prev, total = 0.0, 0.0
    for _ in range(300):
        steering = pd_steering(info, prev)
        prev = info["cte_m"]
        _, reward, terminated, truncated, info = env.step([steering, 0.3])
        total += reward
        assert not (terminated or truncated), info
    assert total > 0 and info["progress_m"] > 10.0


def test_the_expert_laps_the_oval_and_the_lap_is_counted():
    env = oval()
    _, info = env.reset(seed=0)
    sim = env.sim
    expert = Expert(sim.track, sim.params, 2.0)
    total = 0.0
    for _ in range(600):
        steering, throttle = expert.act(sim.vehicle.state, 1.0 / env.rate_hz)
        _, reward, terminated, _, info = env.step([steering, throttle])
        total += reward
        assert not terminated, info
        if info["lap"]:
            break
    assert info["lap"] == 1 and total > 0
    assert info["progress_m"] >= sim.track.length_m
    assert info["last_lap_time_s"] == info["lap_times_s"][-1] == pytest.approx(info["time_s"])


def test_full_right_leaves_the_track_and_ends_the_episode():
    env = oval()
    env.reset(seed=0)
    for _ in range(100):
        _, reward, terminated, truncated, info = env.step([1.0, 0.5])
        if terminated:
            break
        assert reward >= 0.0 and info["hit"] == "none"
    assert terminated and not truncated
    assert reward == -1.0 and info["hit"] == "off_track"
    assert abs(info["cte_m"]) > env.max_cte_m == 0.5  # the oval is 1 m wide


def test_a_tighter_max_cte_ends_the_episode_sooner():
    steps = {}
    for max_cte_m in (0.5, 0.2):
        _, rewards, infos = run(oval(max_cte_m=max_cte_m), 0, [[1.0, 0.5]] * 100)
        assert rewards[-1] == -1.0 and infos[-1]["hit"] == "off_track"
        steps[max_cte_m] = len(rewards)
    assert steps[0.2] < steps[0.5]


def test_actions_outside_the_box_are_clipped():
    clipped = run(oval(), 4, [[5.0, 3.0]] * 5 + [[-9.0, -1.0]] * 5)
    inside = run(oval(), 4, [[1.0, 1.0]] * 5 + [[-1.0, 0.0]] * 5)  # throttle_min is 0
    assert clipped[1] == inside[1]
    assert clipped[2] == inside[2]
    _, _, infos = run(oval(), 4, [[0.0, -1.0]] * 5)  # no reverse in the default box
    assert infos[-1]["speed_mps"] == 0.0


@pytest.mark.parametrize("action", [[np.nan, 0.5], [0.0, np.inf], np.array([0.1, -np.inf])])
def test_a_non_finite_action_is_a_clear_error(action):
    env = oval()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"not finite.*NaN"):
        env.step(action)


@pytest.mark.parametrize("action", [[0.5], [0.1, 0.2, 0.3], [[0.1, 0.2]], "left"])
def test_an_action_of_the_wrong_shape_is_a_clear_error(action):
    env = oval()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\[steering, throttle\]"):
        env.step(action)


def test_step_before_reset_asks_for_a_reset():
    with pytest.raises(gymnasium.error.ResetNeeded, match="reset"):
        oval().step([0.0, 0.0])


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"track": "ovall"}, CarError, "no track 'ovall' \\(did you mean 'oval'\\?\\)"),
    ({"track": "random:x"}, CarError, "whole number"),
    ({"track": 3}, ValueError, "track spec"),
    ({"track": "oval", "max_cte_m": 0.0}, ValueError, "max_cte_m=0: .*positive"),
    ({"track": "oval", "max_cte_m": -1}, ValueError, "max_cte_m=-1"),
    ({"track": "oval", "max_cte_m": float("nan")}, ValueError, "max_cte_m=nan"),
    ({"throttle_min": 0.6, "throttle_max": 0.2}, ValueError, "throttle_min <= throttle_max"),
    ({"throttle_max": 1.5}, ValueError, "<= 1"),
    ({"rate_hz": 0}, ValueError, "rate_hz=0: .*above 0"),
    ({"rate_hz": -20}, ValueError, "rate_hz=-20"),
    ({"rate_hz": 1000}, ValueError, "physics_hz"),
    ({"rate_hz": "fast"}, ValueError, "rate_hz='fast': give a number"),
    ({"render_mode": "human"}, ValueError, "rgb_array"),
    ({"config": {"drive": {}}}, ValueError, "car.config.Config"),
])
def test_bad_arguments_are_clear_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        CarSimEnv(**kwargs)


def test_reset_options_and_random_starts():
    env = oval(random_start=True)
    _, info = env.reset(seed=0, options={"s_m": 10.0})
    x, y, _ = env.track.pose_at(10.0)
    assert (info["x_m"], info["y_m"]) == pytest.approx((x, y))
    starts = [env.reset(seed=s)[1]["x_m"] for s in (1, 2, 1)]
    assert starts[0] == starts[2] != starts[1]
    with pytest.raises(ValueError, match="s_m"):
        env.reset(options={"s_m": "far"})
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"lateral_m": 0.1})


def test_render_is_none_without_a_render_mode():
    env = oval()
    env.reset(seed=0)
    assert env.render() is None


def test_importing_car_does_not_import_gymnasium():
    code = ("import sys, car, car.sim, car.cli; car.cli.build_parser(); "
            "assert 'gymnasium' not in sys.modules, 'gymnasium was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_without_gymnasium_the_import_error_says_what_to_install():
    code = ("import sys; sys.modules['gymnasium'] = None\n"
            "try:\n    import car.sim.gym_env\n"
            "except ImportError as exc:\n    print(exc)\n"
            "else:\n    raise SystemExit('imported')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120,
                         capture_output=True, text=True).stdout
    assert "pip install" in out and "[gym]" in out and "pip install gymnasium" in out
