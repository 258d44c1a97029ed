"""Simulator speed on one core at 160x120, against baselines measured in the same run.

    python benchmarks/bench_sim.py [--seconds 3]

Rows:

- rendering: the default look, the ``--randomize`` look (blur, noise and a colour LUT per
  frame), and a 320x240 frame; the baseline is a single ``cv2.warpPerspective`` of the same
  top-down floor texture, the bare homography approach with no lens model, no mip levels,
  no sky and no reflections;
- physics: ``Vehicle.advance`` ticks/s, and full control steps/s at 20 Hz (10 physics ticks,
  track location and scoring) with the expert deciding each step.

Target (issue 3): at least 1,000 rendered frames/s at 160x120 on one core.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from car.config import SimConfig  # noqa: E402
from car.sim.appearance import random_appearance  # noqa: E402
from car.sim.expert import Expert  # noqa: E402
from car.sim.render import Renderer  # noqa: E402
from car.sim.tracks import load_track  # noqa: E402
from car.sim.vehicle import Vehicle, VehicleParams  # noqa: E402
from car.sim.world import Simulator  # noqa: E402

TRACK = "diyrobocars"


def rate(work: Callable[[int], None], seconds: float) -> float:
    """Calls per second of ``work(i)``, best of three timed stretches after a warm-up."""
    for i in range(20):
        work(i)
    best = 0.0
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            for i in range(50):
                work(count + i)
            count += 50
        best = max(best, count / (time.perf_counter() - start))
    return best


def poses(track, count: int = 500) -> list[tuple[float, float, float]]:
    return [track.pose_at(k * track.length_m / count) for k in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per row")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    sim_cfg = SimConfig()
    params = VehicleParams.from_config(sim_cfg)
    track = load_track(TRACK, params.turn_radius_m)
    path = poses(track)

    sim = Simulator(track, sim_cfg)
    default = sim.renderer
    tex = default.texture.levels[0]
    rng = np.random.default_rng(1)
    randomized = Renderer(track, random_appearance(track.style, sim_cfg, rng), rng=rng)
    big = Renderer(track, default.appearance, 320, 240)

    # The baseline's homography: a pinhole camera at the same mount (100° wide) maps image
    # pixels to floor points; an affine map takes those to texture pixels.
    mount = default.appearance
    f = 80 / math.tan(math.radians(50))
    pitch = math.radians(mount.camera_pitch_deg)
    cam = np.array([[0, 0, 1], [1 / f, 0, -80 / f], [0, 1 / f, -60 / f]])  # (z, x, y) per px
    to_car = np.array([[math.cos(pitch), 0, -math.sin(pitch)], [0, -1, 0],
                       [-math.sin(pitch) / mount.camera_height_m, 0,
                        -math.cos(pitch) / mount.camera_height_m]])
    image_to_floor = to_car @ cam  # homogeneous (forward, left, -up / height)
    image_to_floor[2] *= -1

    def warp(i: int) -> None:
        x, y, yaw = path[i % len(path)]
        c, s = math.cos(yaw), math.sin(yaw)
        ppm = default.texture.px_per_m
        floor_to_tex = np.array([[c * ppm, -s * ppm, (x - default.texture.x0) * ppm],
                                 [-s * ppm, -c * ppm, (default.texture.y1 - y) * ppm],
                                 [0, 0, 1]])
        cv2.warpPerspective(tex, floor_to_tex @ image_to_floor, (160, 120),
                            flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)

    render_rows = [
        ("baseline: one cv2.warpPerspective of the texture, 160x120", warp),
        ("render, default look, 160x120", lambda i: default.render(*path[i % len(path)])),
        ("render, --randomize look, 160x120", lambda i: randomized.render(*path[i % len(path)])),
        ("render, default look, 320x240", lambda i: big.render(*path[i % len(path)])),
    ]
    results = [(name, rate(work, args.seconds)) for name, work in render_rows]
    base = results[0][1]
    print(f"Rendering on 1 core ({TRACK}, texture {tex.shape[1]}x{tex.shape[0]})\n")
    print("| run | frames/s | vs baseline |")
    print("|---|---:|---:|")
    for name, fps in results:
        print(f"| {name} | {fps:,.0f} | {fps / base:.2f}x |")

    print(f"\nPhysics on 1 core ({params.physics_hz:g} Hz fixed step; the kinematic model is "
          "the baseline)\n")
    print("| run | per second | simulated s per wall s | vs kinematic |")
    print("|---|---:|---:|---:|")
    base_ticks = base_steps = 0.0
    for model in ("kinematic", "dynamic"):
        cfg = dataclasses.replace(sim_cfg, model=model)
        car = Vehicle(VehicleParams.from_config(cfg))
        car.command(0.2, 0.5)
        tick_rate = rate(lambda i, car=car: car.advance(100), args.seconds) * 100
        step_rate = rate(control_step(track, cfg), args.seconds)
        base_ticks, base_steps = base_ticks or tick_rate, base_steps or step_rate
        print(f"| {model}: Vehicle.advance, physics ticks | {tick_rate:,.0f} | "
              f"{tick_rate / params.physics_hz:,.0f} | {tick_rate / base_ticks:.2f}x |")
        print(f"| {model}: control step at 20 Hz (expert + 10 ticks + track location and "
              f"scoring) | {step_rate:,.0f} | {step_rate / 20:,.0f} | "
              f"{step_rate / base_steps:.2f}x |")


def control_step(track, cfg: SimConfig):
    """One 20 Hz control step of the expert driving, without rendering."""
    step_sim = Simulator(track, cfg)
    expert = Expert(track, step_sim.params, cfg.expert_speed_mps)

    def step(i: int) -> None:
        if step_sim.status().lap >= 1000:
            step_sim.reset()
        step_sim.step(*expert.act(step_sim.vehicle.state, 0.05), 0.05)

    return step

if __name__ == "__main__":
    main()
