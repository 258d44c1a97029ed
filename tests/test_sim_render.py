"""The camera renderer: shape and dtype, and lines drawn where the geometry puts them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from car.config import SimConfig
from car.sim.appearance import Appearance, default_appearance, random_appearance
from car.sim.render import Renderer
from car.sim.tracks import load_track
from car.sim.world import Simulator
from tests.sim_helpers import TURN_RADIUS_M

OVAL = load_track("oval", TURN_RADIUS_M)  # first straight: y = -2.5, heading east from x = -4
EDGE = (240, 240, 205)
CENTRE = (190, 178, 70)
FLOOR = (98, 96, 60)


def clean_renderer(width: int = 160, height: int = 120) -> Renderer:
    """The default look without reflections, texture, vignette or noise: exact colours."""
    style = dataclasses.replace(OVAL.style, floor_texture="plain", reflectivity=0.0,
                                edge_line_rgb=EDGE, center_line_rgb=CENTRE, floor_rgb=FLOOR,
                                edge_line_width_m=0.06, center_line_width_m=0.06)
    appearance = dataclasses.replace(default_appearance(style, SimConfig()), vignette=0.0,
                                     noise_sigma=0.0)
    return Renderer(OVAL, appearance, width, height)


def pixel(frame: np.ndarray, uv: np.ndarray) -> np.ndarray:
    u, v = (int(c) for c in np.floor(uv))
    return frame[v, u].astype(int)


@pytest.mark.parametrize("size", [(160, 120), (320, 240), (224, 224)])
def test_frames_are_uint8_rgb_of_the_configured_size(size: tuple[int, int]) -> None:
    sim = Simulator(OVAL, width=size[0], height=size[1])
    frame = sim.render()
    assert frame.shape == (size[1], size[0], 3) and frame.dtype == np.uint8
    assert frame.flags.c_contiguous


def test_lines_appear_where_the_geometry_says() -> None:
    renderer = clean_renderer()
    cam = (-2.0, -2.5, 0.0)  # on the centreline of the first straight, facing east
    frame = renderer.render(*cam)
    half = OVAL.width_m / 2
    right_edge = renderer.project(*cam, np.array([[-1.4, -2.5 - half, 0.0]]))[0]
    left_edge = renderer.project(*cam, np.array([[-1.4, -2.5 + half, 0.0]]))[0]
    floor = renderer.project(*cam, np.array([[-1.4, -2.5 - half / 2, 0.0]]))[0]
    assert right_edge[0] > 80 > left_edge[0]  # the right edge is on the right of the image
    assert np.abs(pixel(frame, right_edge) - EDGE).max() < 25
    assert np.abs(pixel(frame, left_edge) - EDGE).max() < 25
    assert np.abs(pixel(frame, floor) - FLOOR).max() < 12
    # The centre line is dashed: a dash at s in [0, 0.3) + k * 0.6, a gap in [0.3, 0.6).
    dash = renderer.project(*cam, np.array([[-4.0 + 3.15, -2.5, 0.0]]))[0]
    gap = renderer.project(*cam, np.array([[-4.0 + 3.45, -2.5, 0.0]]))[0]
    assert np.abs(pixel(frame, dash) - CENTRE).max() < 25
    assert np.abs(pixel(frame, gap) - FLOOR).max() < 12
    # Farther away a line is a pixel or two wide: it is brightest where the projection says.
    for lateral in (-half, half):
        u, v = renderer.project(*cam, np.array([[0.5, -2.5 + lateral, 0.0]]))[0]
        row = frame[int(v), :, :].astype(int).sum(axis=1)
        lo = int(u) - 6
        assert abs(lo + int(np.argmax(row[lo:lo + 13])) - int(u)) <= 1


def test_lines_stand_out_in_the_default_look() -> None:
    """With the real look (texture, reflections, vignette, noise) the lines are still where
    the geometry says, brighter than the floor beside them."""
    sim = Simulator(OVAL)
    renderer = sim.renderer
    cam = (-2.0, -2.5, 0.0)
    frame = renderer.render(*cam).astype(int).sum(axis=2)
    half = OVAL.width_m / 2
    for ahead in (-1.4, -0.5, 0.5):
        for lateral in (-half, half):
            line = renderer.project(*cam, np.array([[ahead, -2.5 + lateral, 0.0]]))[0]
            beside = renderer.project(*cam, np.array([[ahead, -2.5 + lateral * 0.6, 0.0]]))[0]
            u, v = int(line[0]), int(line[1])
            peak = frame[v, max(0, u - 1):u + 2].max()
            assert peak > frame[int(beside[1]), int(beside[0])] + 120


def test_randomized_camera_mounts_differ() -> None:
    sim = Simulator(OVAL, seed=2, randomize=True)
    mounts = set()
    for _ in range(4):
        sim.new_look()
        a = sim.appearance
        mounts.add((a.camera_height_m, a.camera_pitch_deg, a.camera_fov_deg))
        lens = sim.renderer.lens
        assert (lens.height_m, lens.pitch_deg, lens.fov_deg) == (
            a.camera_height_m, a.camera_pitch_deg, a.camera_fov_deg)
    assert len(mounts) == 4


def test_horizon_and_sky() -> None:
    renderer = clean_renderer()
    frame = renderer.render(-2.0, -2.5, 0.0)
    far_ahead = renderer.project(-2.0, -2.5, 0.0, np.array([[1000.0, -2.5, 0.0]]))[0]
    assert 0.3 < far_ahead[1] / 120 < 0.45  # horizon at about 40% of the height, as in the tub
    assert renderer.sky_mask[5].all() and not renderer.sky_mask[-5].any()
    sky = frame[:20].reshape(-1, 3).mean(axis=0)
    assert np.abs(sky - FLOOR).max() > 20  # the world above the horizon is not floor


def test_turning_moves_the_world_the_right_way() -> None:
    renderer = clean_renderer()
    point = np.array([[0.0, -2.5 - 0.5, 0.0]])
    u_straight = renderer.project(-2.0, -2.5, 0.0, point)[0][0]
    u_turned_left = renderer.project(-2.0, -2.5, 0.2, point)[0][0]
    assert u_turned_left > u_straight  # yaw left: things on the right move further right


def test_randomized_looks_differ_but_keep_the_geometry() -> None:
    rng = np.random.default_rng(3)
    looks: list[Appearance] = [random_appearance(OVAL.style, SimConfig(), rng) for _ in range(3)]
    assert len({a.style.floor_rgb for a in looks}) == 3
    frames = [Renderer(OVAL, a).render(-2.0, -2.5, 0.0) for a in looks]
    assert all(f.shape == (120, 160, 3) and f.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0], frames[1])
