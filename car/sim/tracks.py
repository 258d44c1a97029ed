"""Finding a track by what the user typed: a built-in name, a JSON file, or ``random:SEED``."""

from __future__ import annotations

import difflib
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from car.config import Config
from car.datafile import clip, parse_json, read_text
from car.errors import TrackError
from car.sim.track import Track, TrackStyle, build_track
from car.sim.vehicle import VehicleParams

TRACK_KEYS = ("name", "width_m", "centerline", "style", "description")
BUILTIN_DIR = "builtin_tracks"
DEFAULT_TRACK = "diyrobocars"
TRACK_HELP = "a built-in track name (see `car sim tracks`), a track .json file, or random:SEED"
MAX_TRACK_BYTES = 8 * 1024 * 1024  # a track of 100,000 points is about 2 MB


def builtin_names() -> list[str]:
    files = resources.files("car.sim").joinpath(BUILTIN_DIR).iterdir()
    return sorted(p.name[:-5] for p in files if p.name.endswith(".json"))


def load_track_for(spec: str, config: Config) -> Track:
    """A track by spec, checked against the configured car's turning radius."""
    return load_track(spec, VehicleParams.from_config(config.sim).turn_radius_m)


def load_track(spec: str, min_turn_radius_m: float) -> Track:
    """The track named by ``spec``: a built-in name, a path to a JSON file, or random:SEED."""
    if spec.startswith("random:"):
        text = spec[len("random:"):]
        if not (text.isascii() and text.isdigit()):
            raise TrackError(f"track '{spec}': the seed after 'random:' must be a whole number "
                             "≥ 0, for example random:7")
        return random_track(int(text), min_turn_radius_m)
    if spec in builtin_names():
        text = resources.files("car.sim").joinpath(BUILTIN_DIR, f"{spec}.json").read_text()
        return parse_track(text, f"built-in track '{spec}'", min_turn_radius_m)
    path = Path(spec)
    if not path.is_file():
        close = difflib.get_close_matches(spec, builtin_names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise TrackError(f"no track '{spec}'{hint}: give a built-in name "
                         f"({', '.join(builtin_names())}), a .json track file, or random:SEED")
    text = read_text(path, "track file", TrackError, MAX_TRACK_BYTES)
    return parse_track(text, str(path), min_turn_radius_m)


def parse_track(text: str, where: str, min_turn_radius_m: float) -> Track:
    """The track in a track file's text; every problem is a TrackError naming ``where``."""
    data = parse_json(text, where, TrackError, object_pairs_hook=_no_repeated_keys)
    if not isinstance(data, dict):
        raise TrackError(f"{where}: a track file is a JSON object with \"name\", \"width_m\" "
                         "and \"centerline\"")
    for key in data:
        if key not in TRACK_KEYS:
            close = difflib.get_close_matches(key, TRACK_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise TrackError(f"{where}: unknown key '{clip(key)}'{hint}; a track has "
                             f"{', '.join(TRACK_KEYS)}")
    for key in ("name", "width_m", "centerline"):
        if key not in data:
            raise TrackError(f"{where}: missing \"{key}\" (a track needs name, width_m and "
                             "centerline)")
    name = data["name"]
    if not isinstance(name, str) or not name.strip():
        raise TrackError(f"{where}: \"name\" must be a non-empty string")
    style = TrackStyle.from_json(data["style"], where) if "style" in data else TrackStyle()
    description = data.get("description", "")
    if not isinstance(description, str):
        raise TrackError(f"{where}: \"description\" must be a string")
    return build_track(name, data["width_m"], data["centerline"], style=style,
                       min_turn_radius_m=min_turn_radius_m, where=where,
                       description=description)


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"the key \"{clip(key)}\" appears twice in one object")
        data[key] = value
    return data


def track_json(track: Track, points_every_m: float = 0.5) -> dict[str, Any]:
    """A track as a track file's JSON object (the centreline thinned to ``points_every_m``)."""
    step = max(1, round(points_every_m / track.curve.ds))
    points = [[round(float(x), 3), round(float(y), 3)] for x, y in track.curve.xy[::step]]
    style = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(track.style).items()}
    return {"name": track.name, "width_m": track.width_m, "description": track.description,
            "style": style, "centerline": points}


def random_track(seed: int, min_turn_radius_m: float, attempts: int = 500) -> Track:
    """A procedural closed track the car can drive, the same for the same seed.

    A loop around the origin whose radius varies with a few random harmonics, so it has
    straights, sweepers and, where the radius dips, S-bends. Candidates that fail the
    drivability checks are redrawn from the same seeded stream.
    """
    rng = np.random.default_rng([seed, 0x7A3C])
    where = f"track 'random:{seed}'"
    last: TrackError | None = None
    for _ in range(attempts):
        base_m = rng.uniform(3.0, 6.5)
        width_m = round(float(rng.uniform(0.8, 1.3)), 2)
        count = 36
        theta = np.linspace(0, math.tau, count, endpoint=False)
        radius = np.ones(count)
        for k in range(2, 6):
            radius += rng.uniform(0, 0.32 / (k - 1)) * np.sin(k * theta + rng.uniform(0, math.tau))
        stretch = rng.uniform(1.0, 1.8)
        points = np.stack([stretch * base_m * radius * np.cos(theta),
                           base_m * radius * np.sin(theta)], axis=1)
        turn = rng.uniform(0, math.tau)
        rot = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
        points = points @ rot.T
        if rng.random() < 0.5:
            points = points[::-1]  # clockwise half of the time
        try:
            return build_track(f"random:{seed}", width_m, points,
                               min_turn_radius_m=min_turn_radius_m, where=where,
                               description=f"procedural track, seed {seed}",
                               style=TrackStyle(texture_seed=seed))
        except TrackError as exc:
            last = exc
    raise TrackError(f"{where}: no drivable track found in {attempts} draws ({last})")
