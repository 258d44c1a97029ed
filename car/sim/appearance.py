"""How a rendered world looks: the track's style, the camera mount and the image pipeline.

The default look follows the shared real tub. ``random_appearance`` is the domain
randomisation behind ``--randomize``: floor, lines, lighting, camera mount, shadows,
distractors, noise and blur all vary, drawn from a seeded stream.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from car.config import SimConfig
from car.sim.track import TrackStyle

FLOOR_PALETTE = ((98, 96, 60), (120, 120, 118), (64, 64, 66), (150, 145, 135), (110, 90, 70),
                 (80, 90, 110), (135, 128, 95))


@dataclass(frozen=True)
class Appearance:
    style: TrackStyle
    camera_height_m: float
    camera_pitch_deg: float
    camera_fov_deg: float
    background_seed: int = 0
    shadows: int = 0
    distractors: int = 0
    channel_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gamma: float = 1.0
    vignette: float = 0.35  # corner darkening of the wide-angle lens, 0..1
    noise_sigma: float = 0.0  # per-frame sensor noise, in 8-bit levels
    blur_sigma: float = 0.0  # per-frame Gaussian blur, in pixels

    @property
    def needs_lut(self) -> bool:
        return self.channel_gain != (1.0, 1.0, 1.0) or self.gamma != 1.0


def default_appearance(style: TrackStyle, sim: SimConfig) -> Appearance:
    return Appearance(style=style, camera_height_m=sim.camera_height_m,
                      camera_pitch_deg=sim.camera_pitch_deg, camera_fov_deg=sim.camera_fov_deg,
                      background_seed=style.texture_seed, noise_sigma=2.0, blur_sigma=0.0)


def random_appearance(style: TrackStyle, sim: SimConfig, rng: np.random.Generator) -> Appearance:
    """A new look for the same track geometry."""
    def jitter(rgb: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
        values = np.array(rgb) + rng.uniform(-amount, amount, 3)
        return tuple(int(v) for v in np.clip(values, 0, 255))

    width = rng.uniform(0.6, 1.6)
    floor = FLOOR_PALETTE[int(rng.integers(len(FLOOR_PALETTE)))]
    new_style = dataclasses.replace(
        style,
        floor_rgb=jitter(floor, 18),
        edge_line_rgb=jitter((235, 235, 215), 20),
        center_line_rgb=jitter((200, 175, 70), 30),
        edge_line_width_m=style.edge_line_width_m * width,
        center_line_width_m=style.center_line_width_m * width * rng.uniform(0.8, 1.25),
        dash_length_m=float(rng.uniform(0.15, 0.5)),
        dash_gap_m=float(rng.uniform(0.15, 0.5)),
        floor_texture=str(rng.choice(TrackStyle.FLOOR_TEXTURES, p=[0.6, 0.25, 0.15])),
        reflectivity=float(rng.uniform(0.0, 0.6)),
        background=str(rng.choice(TrackStyle.BACKGROUNDS, p=[0.75, 0.25])),
        texture_seed=int(rng.integers(2**31)),
    )
    return Appearance(
        style=new_style,
        camera_height_m=max(0.03, sim.camera_height_m + float(rng.uniform(-0.03, 0.03))),
        camera_pitch_deg=sim.camera_pitch_deg + float(rng.uniform(-4, 4)),
        camera_fov_deg=sim.camera_fov_deg + float(rng.uniform(-10, 10)),
        background_seed=int(rng.integers(2**31)),
        shadows=int(rng.integers(0, 12)),
        distractors=int(rng.integers(0, 60)),
        channel_gain=tuple(float(g) for g in rng.uniform(0.8, 1.2, 3) * rng.uniform(0.7, 1.3)),
        gamma=float(rng.uniform(0.8, 1.25)),
        vignette=float(rng.uniform(0.0, 0.6)),
        noise_sigma=float(rng.uniform(0, 8)),
        blur_sigma=float(rng.choice([0.0, rng.uniform(0.4, 1.2)], p=[0.4, 0.6])),
    )
