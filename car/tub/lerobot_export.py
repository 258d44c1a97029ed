"""`car tub export --format lerobot`: tubs to a LeRobot v3.0 dataset (see lerobot_format).

What maps to what:

- each session of each tub (its live records; deleted ones are left out) is one episode;
- ``action`` = [steering, throttle] as float32, from ``user/angle`` and ``user/throttle``
  unless other keys are given;
- ``observation.state`` = the tub's other numeric fields (float, int, boolean inputs, the
  pilot's outputs aside) that every record has, as float32, named by their tub keys; for a
  tub with none (donkeycar's) the feature is left out;
- ``observation.images.cam`` = the camera frames, H.264 (yuv420p) in one MP4 at ``fps``;
- ``capture_time_s`` = each frame's wall-clock capture time (seconds since 1970, float64),
  so `car tub import` gives the records back their own times;
- ``timestamp`` = frame_index / fps, as LeRobot finds frames in the video by it;
- ``fps`` = the capture rate (the median step of the capture timestamps), rounded to whole
  frames per second, as LeRobot keeps it.

Everything is written into a new ``.OUT.*.partial`` folder beside it and renamed to ``OUT``
at the end, so a failed export leaves no half dataset behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from car.errors import TubError
from car.tub.format import CAPTURE_MS, IMAGE_TYPES, INDEX, SESSION_ID, TIMESTAMP_MS
from car.tub.lerobot_format import (
    ACTION,
    ACTION_NAMES,
    CAMERA,
    CAPTURE,
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    DATA_FILES_MB,
    DATA_PATH,
    EPISODES_PATH,
    INDEX_FEATURES,
    INFO_PATH,
    ROBOT_TYPE,
    STATE,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_FILES_MB,
    VIDEO_PATH,
    require,
    write_json,
    written_whole,
)
from car.tub.lerobot_tables import column_stats, episode_table, frames_table, image_stats
from car.tub.lerobot_tables import tasks_table as make_tasks_table
from car.tub.movie import movie_fps
from car.tub.reader import Tub
from car.tub.video import H264Sink

NUMERIC_TYPES = ("float", "int", "boolean")
GOP = 10  # a key frame every 10 frames: a random read decodes at most 9 extra
CRF = "18"  # near-transparent quality; the tub's JPEGs are lossy already
STATS_FRAMES = 100  # frames per episode sampled for the image statistics


@dataclass
class Episode:
    tub: Tub
    image_key: str
    records: list[dict[str, Any]]


@dataclass
class ExportSummary:
    out: Path
    frames: int
    episodes: int
    fps: int
    fps_source: str
    size: tuple[int, int]  # width, height of the video
    state_names: list[str] = field(default_factory=list)


def export_lerobot(paths: Iterable[str | Path], out: str | Path, *,
                   steering_key: str = "user/angle", throttle_key: str = "user/throttle",
                   state_keys: list[str] | None = None, fps: int | None = None,
                   task: str = "drive", progress: Callable[[Any], Any] | None = None
                   ) -> ExportSummary:
    """Write the tubs at ``paths`` as one LeRobot v3.0 dataset at ``out`` (a new folder)."""
    what = "a LeRobot export"
    pa, pq, av = require("pyarrow", what), require("pyarrow.parquet", what), require("av", what)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TubError(f"{out}: exists and is not empty; give a new folder for the dataset")
    episodes = _episodes([Tub(p) for p in paths])
    keys = (steering_key, throttle_key)
    names = _state_names(episodes, keys, state_keys)
    records = [r for e in episodes for r in e.records]
    for record in records:
        for key in keys + tuple(names):
            if not isinstance(record.get(key), (int, float)):
                tub = next(e.tub for e in episodes if record in e.records)
                raise TubError(f"{tub.path}: record {record[INDEX]} has no number in '{key}'; "
                               "delete it (`car tub delete`) or name other keys")
    if fps is None:
        rate, source = movie_fps(records)
        fps = max(1, round(rate))
    else:
        source = "as given"
    with written_whole(out) as partial:
        summary = _write(partial, episodes, keys, names, fps, task, progress, pa, pq, av)
    summary.out, summary.fps_source = out, source
    return summary


def _episodes(tubs: list[Tub]) -> list[Episode]:
    """One episode per session of each tub, in order, with its live records."""
    episodes = []
    for tub in tubs:
        keys = [k for k, t in tub.input_types.items() if t == "image_array"]
        if not keys:
            kinds = [t for t in tub.input_types.values() if t in IMAGE_TYPES]
            have = f" (only {', '.join(kinds)})" if kinds else ""
            raise TubError(f"{tub.path}: has no colour camera field (image_array){have}; a "
                           "LeRobot export needs one")
        sessions: dict[Any, list[dict[str, Any]]] = {}
        for record in tub.records():
            sessions.setdefault(record.get(SESSION_ID), []).append(record)
        episodes += [Episode(tub, keys[0], recs) for recs in sessions.values()]
    if not episodes:
        raise TubError("the tubs have no live records to export")
    return episodes


def _state_names(episodes: list[Episode], action_keys: tuple[str, str],
                 given: list[str] | None) -> list[str]:
    if given is not None:
        for episode in episodes:
            missing = [k for k in given if episode.tub.input_types.get(k) not in NUMERIC_TYPES]
            if missing:
                raise TubError(f"{episode.tub.path}: no numeric field {', '.join(missing)} "
                               "(a state field is a float, int or boolean input)")
        return list(given)
    first = episodes[0].tub
    names = [k for k, t in first.input_types.items() if t in NUMERIC_TYPES
             and k not in action_keys and not k.startswith("pilot/")]
    return [k for k in names if all(e.tub.input_types.get(k) in NUMERIC_TYPES
                                    and all(isinstance(r.get(k), (int, float))
                                            for r in e.records) for e in episodes)]


def _write(root: Path, episodes: list[Episode], keys: tuple[str, str], names: list[str],
           fps: int, task: str, progress: Callable[[Any], Any] | None,
           pa: Any, pq: Any, av: Any) -> ExportSummary:
    first = episodes[0]
    height, width = first.tub.load_image(first.records[0], first.image_key).shape[:2]
    size = (width + width % 2, height + height % 2)  # yuv420p needs even sizes: pad
    video_path = root / VIDEO_PATH.format(video_key=CAMERA, chunk_index=0, file_index=0)
    video_path.parent.mkdir(parents=True)
    video = H264Sink(video_path, fps, size, pixel_format="rgb24",  # a key frame every GOP
                     options={"crf": CRF, "g": str(GOP), "bf": "0", "preset": "veryfast"})
    columns: dict[str, list[Any]] = {k: [] for k in (ACTION, STATE, CAPTURE, *INDEX_FEATURES)
                                     if k != STATE or names}
    samples: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    work = [(e, i, r) for e, ep in enumerate(episodes) for i, r in enumerate(ep.records)]
    try:
        for e, i, record in (progress(work) if progress else work):
            episode = episodes[e]
            image = episode.tub.load_image(record, episode.image_key)
            if image.shape[:2] != (height, width) or image.ndim != 3:
                raise TubError(f"{episode.tub.path}: record {record[INDEX]}'s frame is "
                               f"{image.shape}, the first was {(height, width, 3)}; one video "
                               "holds one size")
            video.write(image)
            stride = -(-len(episode.records) // STATS_FRAMES)  # at most STATS_FRAMES
            if i % stride == 0:
                samples.append(image[::2, ::2] if width > 300 else image)
            index = len(columns["index"])
            columns[ACTION].append([float(record[k]) for k in keys])
            if names:
                columns[STATE].append([float(record[k]) for k in names])
            stamp = record.get(CAPTURE_MS, record.get(TIMESTAMP_MS))
            columns[CAPTURE].append(float(stamp) / 1000 if stamp is not None else 0.0)
            for name, value in (("timestamp", i / fps), ("frame_index", i),
                                ("episode_index", e), ("index", index), ("task_index", 0)):
                columns[name].append(value)
            if i == len(episode.records) - 1:
                start = index + 1 - len(episode.records)
                rows.append(_episode_row(e, start, index + 1, fps, task, columns, samples))
                samples = []
    except BaseException:
        video.abort()
        raise
    video.close()
    features = _features(names, size, fps, columns)
    pq.write_table(frames_table(pa, columns, features),
                   _made(root / DATA_PATH.format(chunk_index=0, file_index=0)))
    pq.write_table(episode_table(pa, rows), _made(root / EPISODES_PATH.format(chunk_index=0,
                                                                              file_index=0)))
    pq.write_table(make_tasks_table(pa, [task]), _made(root / TASKS_PATH))
    stats = {key: column_stats(np.asarray(values)) for key, values in columns.items()}
    stats[CAMERA] = _merged_image_stats(rows)
    write_json(root / STATS_PATH, stats)
    write_json(root / INFO_PATH, {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": ROBOT_TYPE,
        "total_episodes": len(episodes),
        "total_frames": len(columns["index"]),
        "total_tasks": 1,
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILES_MB,
        "video_files_size_in_mb": VIDEO_FILES_MB,
        "fps": fps,
        "splits": {"train": f"0:{len(episodes)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": features,
    })
    return ExportSummary(root, len(columns["index"]), len(episodes), fps, "", size, names)


def _episode_row(e: int, start: int, end: int, fps: int, task: str,
                 columns: dict[str, list[Any]], samples: list[np.ndarray]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "episode_index": e, "tasks": [task], "length": end - start,
        "data/chunk_index": 0, "data/file_index": 0,
        "dataset_from_index": start, "dataset_to_index": end,
        f"videos/{CAMERA}/chunk_index": 0, f"videos/{CAMERA}/file_index": 0,
        f"videos/{CAMERA}/from_timestamp": start / fps,
        f"videos/{CAMERA}/to_timestamp": end / fps,
    }
    stats = {key: column_stats(np.asarray(values[start:end]))
             for key, values in columns.items()}
    stats[CAMERA] = image_stats(samples)
    for key, by_name in stats.items():
        for name, value in by_name.items():
            row[f"stats/{key}/{name}"] = value
    row["meta/episodes/chunk_index"] = 0
    row["meta/episodes/file_index"] = 0
    return row


def _merged_image_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The camera's statistics over all episodes, weighted by their sampled frames."""
    prefix = f"stats/{CAMERA}/"
    counts = np.array([row[prefix + "count"][0] for row in rows], dtype=np.float64)
    weights = counts / counts.sum()

    def stack(name: str) -> np.ndarray:
        return np.array([row[prefix + name] for row in rows], dtype=np.float64)

    means = stack("mean")
    mean = np.tensordot(weights, means, 1)
    variance = np.tensordot(weights, stack("std") ** 2 + (means - mean) ** 2, 1)
    merged = {"min": stack("min").min(0).tolist(), "max": stack("max").max(0).tolist(),
              "mean": mean.tolist(), "std": np.sqrt(variance).tolist(),
              "count": [int(counts.sum())]}
    for name in rows[0]:
        if name.startswith(prefix + "q"):
            quantile = name.removeprefix(prefix)
            merged[quantile] = np.tensordot(weights, stack(quantile), 1).tolist()
    return merged


def _features(names: list[str], size: tuple[int, int], fps: int,
              columns: dict[str, list[Any]]) -> dict[str, Any]:
    width, height = size
    features: dict[str, Any] = {
        CAMERA: {"dtype": "video", "shape": [height, width, 3],
                 "names": ["height", "width", "channels"],
                 "info": {"video.height": height, "video.width": width, "video.codec": "h264",
                          "video.pix_fmt": "yuv420p", "video.is_depth_map": False,
                          "video.fps": fps, "video.channels": 3, "has_audio": False}},
        ACTION: {"dtype": "float32", "shape": [2], "names": list(ACTION_NAMES)},
    }
    if STATE in columns:
        features[STATE] = {"dtype": "float32", "shape": [len(names)], "names": list(names)}
    features[CAPTURE] = {"dtype": "float64", "shape": [1], "names": None}
    features.update({k: dict(v) for k, v in INDEX_FEATURES.items()})
    return features


def _made(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
