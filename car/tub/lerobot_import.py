"""`car tub import --format lerobot`: a LeRobot v3 dataset (ours, or any with a 2-float
``action`` and one camera video) back into a tub.

What maps to what:

- each episode becomes one session of the new tub, in episode order;
- ``action`` [0] and [1] become ``user/angle`` and ``user/throttle`` (``user/mode`` is
  "user"); the values are the dataset's float32 numbers, exactly;
- the camera's frames, decoded from the MP4 with PyAV at ``from_timestamp + timestamp``,
  become ``cam/image_array`` (JPEG, as every tub image);
- ``observation.state``: one float field per name; a name with a '/' (ours: the tub key it
  came from) is used as it is, another becomes ``state/NAME``; without usable names, one
  ``state`` list field;
- times: ``capture_time_s`` (ours) gives each record its capture time back; otherwise the
  episodes are laid end to end from the time of the import, at the dataset's timestamps.

The tub is written into a new ``.OUT.*.partial`` folder beside it and renamed to ``OUT``
when whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from car.errors import TubError
from car.tub.appender import TubAppender
from car.tub.lerobot_format import (
    ACTION,
    CAPTURE,
    EPISODES_DIR,
    STATE,
    read_info,
    require,
    written_whole,
)
from car.tub.values import prepare_record

BASE_INPUTS = ["cam/image_array", "user/angle", "user/throttle", "user/mode"]
BASE_TYPES = ["image_array", "float", "float", "str"]


@dataclass
class ImportSummary:
    out: Path
    frames: int
    episodes: int
    fps: float
    camera: str
    state_fields: list[str] = field(default_factory=list)


def import_lerobot(src: str | Path, out: str | Path, *, camera: str | None = None,
                   jpeg_quality: int = 90, progress: Callable[[Any], Any] | None = None
                   ) -> ImportSummary:
    """Read the LeRobot dataset at ``src`` into a new tub at ``out``."""
    root, out = Path(src), Path(out)
    info = read_info(root)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TubError(f"{out}: exists and is not empty; give a new folder for the tub")
    what = "a LeRobot import"
    pa, pq, av = require("pyarrow", what), require("pyarrow.parquet", what), require("av", what)
    features, fps = info["features"], float(info["fps"])
    camera = _camera(root, features, camera)
    _check_action(root, features)
    if not isinstance(info.get("video_path"), str):
        raise TubError(f"{root / 'meta/info.json'}: 'video_path' is missing")
    episodes = _episodes(root, pq, camera)
    state_fields, state_type = _state_fields(features.get(STATE))
    inputs, types = BASE_INPUTS + state_fields, BASE_TYPES + [state_type] * len(state_fields)
    frames = 0
    with written_whole(out) as partial:
        data = _Data(root, info, pa, pq)
        base_s, offset_s = time.time(), 0.0
        for episode in (progress(episodes) if progress else episodes):
            rows = data.episode(episode)
            times = rows.get(CAPTURE)
            if times is None:
                times = base_s + offset_s + rows["timestamp"]
                offset_s += float(rows["timestamp"][-1]) + 1.0 / fps
            video = root / info["video_path"].format(
                video_key=camera, chunk_index=int(episode[f"videos/{camera}/chunk_index"]),
                file_index=int(episode[f"videos/{camera}/file_index"]))
            start = float(episode[f"videos/{camera}/from_timestamp"])
            pictures = _frames(av, video, start + rows["timestamp"], 0.5 / fps)
            with TubAppender(partial, inputs, types, {"source": f"lerobot {root.name}"},
                             jpeg_quality=jpeg_quality,
                             session_info={"lerobot_episode": int(episode["episode_index"])}
                             ) as tub:
                for i, picture in enumerate(pictures):
                    action = rows[ACTION][i]
                    values = {"cam/image_array": picture, "user/angle": float(action[0]),
                              "user/throttle": float(action[1]), "user/mode": "user"}
                    if state_fields:
                        state = rows[STATE][i]
                        values.update({k: float(v) for k, v in zip(state_fields, state)}
                                      if state_type == "float" else {"state": state.tolist()})
                    capture_ms = float(times[i]) * 1000
                    tub.append(prepare_record(tub.input_types, values), round(capture_ms),
                               capture_ms)
                    frames += 1
        if frames == 0:
            raise TubError(f"{root}: the dataset has no frames")
    return ImportSummary(out, frames, len(episodes), fps, camera, state_fields)


def _camera(root: Path, features: dict[str, Any], wanted: str | None) -> str:
    videos = [k for k, f in features.items() if f.get("dtype") == "video"]
    if wanted is not None:
        if wanted not in videos:
            raise TubError(f"{root}: no video feature '{wanted}'; it has "
                           f"{', '.join(videos) or 'none'}")
        return wanted
    if len(videos) == 1:
        return videos[0]
    if not videos:
        stills = [k for k, f in features.items() if f.get("dtype") == "image"]
        kind = f" (its cameras {', '.join(stills)} are stored as images)" if stills else ""
        raise TubError(f"{root}: has no camera video feature{kind}; this reads datasets whose "
                       "camera is an MP4 video")
    raise TubError(f"{root}: has {len(videos)} camera videos ({', '.join(videos)}); choose "
                   "one with --camera")


def _check_action(root: Path, features: dict[str, Any]) -> None:
    action = features.get(ACTION)
    if action is None:
        raise TubError(f"{root}: has no 'action' feature; the tub needs steering and throttle")
    if action.get("dtype") not in ("float32", "float64") or list(action["shape"]) != [2]:
        raise TubError(f"{root}: 'action' is {action.get('dtype')} {list(action['shape'])}; "
                       "this needs 2 floats (steering, throttle)")


def _state_fields(feature: dict[str, Any] | None) -> tuple[list[str], str]:
    """The tub fields for ``observation.state``, and their type."""
    if feature is None or feature.get("dtype") not in ("float32", "float64"):
        return [], "float"
    shape = list(feature["shape"])
    names = feature.get("names")
    if len(shape) != 1:
        return [], "float"
    if isinstance(names, dict) and len(names) == 1:  # older datasets: {"motors": [...]}
        names = next(iter(names.values()))
    ok = (isinstance(names, list) and len(names) == shape[0] and len(set(names)) == len(names)
          and all(isinstance(n, str) and n and not n.startswith("_") for n in names))
    if not ok:
        return ["state"], "list"
    fields = [n if "/" in n else f"state/{n}" for n in names]
    clash = set(fields) & set(BASE_INPUTS)
    return (["state"], "list") if clash or len(set(fields)) != len(fields) else (fields, "float")


def _episodes(root: Path, pq: Any, camera: str) -> list[dict[str, Any]]:
    files = sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not files:
        raise TubError(f"{root}: no episode metadata ({EPISODES_DIR}/chunk-*/file-*.parquet)")
    need = ["episode_index", "data/chunk_index", "data/file_index",
            f"videos/{camera}/chunk_index", f"videos/{camera}/file_index",
            f"videos/{camera}/from_timestamp"]
    rows: list[dict[str, Any]] = []
    for path in files:
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as exc:
            raise TubError(f"{path}: cannot read it: {exc}") from None
        missing = [c for c in need if c not in table.column_names]
        if missing:
            raise TubError(f"{path}: episode metadata lacks {', '.join(missing)}")
        rows += table.select(need).to_pylist()
    return sorted(rows, key=lambda r: r["episode_index"])


class _Data:
    """The frame rows of the data files, read once each, by episode."""

    def __init__(self, root: Path, info: dict[str, Any], pa: Any, pq: Any):
        self.root, self.info, self.pa, self.pq = root, info, pa, pq
        self._files: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    def episode(self, episode: dict[str, Any]) -> dict[str, np.ndarray]:
        key = int(episode["data/chunk_index"]), int(episode["data/file_index"])
        if key not in self._files:
            self._files = {key: self._read(*key)}  # episodes come in file order: keep one
        columns = self._files[key]
        rows = np.flatnonzero(columns["episode_index"] == episode["episode_index"])
        if len(rows) == 0:
            raise TubError(f"{self.root}: episode {episode['episode_index']} has no rows in "
                           f"its data file")
        rows = rows[np.argsort(columns["frame_index"][rows], kind="stable")]
        return {name: values[rows] for name, values in columns.items()}

    def _read(self, chunk: int, file: int) -> dict[str, np.ndarray]:
        path = self.root / self.info["data_path"].format(chunk_index=chunk, file_index=file)
        if not path.is_file():
            raise TubError(f"{path}: missing (the episode metadata points to it)")
        try:
            table = self.pq.read_table(path)
        except (OSError, ValueError) as exc:
            raise TubError(f"{path}: cannot read it: {exc}") from None
        wanted = [ACTION, "timestamp", "frame_index", "episode_index"]
        missing = [c for c in wanted if c not in table.column_names]
        if missing:
            raise TubError(f"{path}: lacks the column(s) {', '.join(missing)}")
        out = {c: _numpy(table.column(c)) for c in wanted}
        for name in (STATE, CAPTURE):
            if name in table.column_names and name in self.info["features"]:
                out[name] = _numpy(table.column(name))
        for name in (ACTION, STATE):  # vectors, even of one element (a plain column)
            if name in out:
                out[name] = out[name].reshape(len(out[name]), -1)
        out["timestamp"] = out["timestamp"].astype(np.float64)
        return out


def _numpy(column: Any) -> np.ndarray:
    """A parquet column as numpy: scalars as 1-D, fixed-length lists as rows."""
    column = column.combine_chunks()
    if hasattr(column, "flatten") and column.type.num_fields == 1:  # a list type
        values = column.flatten().to_numpy(zero_copy_only=False)
        return values.reshape(len(column), -1)
    return column.to_numpy(zero_copy_only=False)


def _frames(av: Any, path: Path, times: np.ndarray, tolerance_s: float
            ) -> Iterator[np.ndarray]:
    """The RGB frames of ``path`` nearest to ``times`` (seconds, ascending)."""
    if not path.is_file():
        raise TubError(f"{path}: missing (the episode metadata points to it)")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise TubError(f"{path}: cannot open the video: {exc}") from None
    with container:
        stream = container.streams.video[0]
        first = float(times[0]) if len(times) else 0.0
        if first > 0:
            container.seek(int(max(0.0, first - tolerance_s) / stream.time_base),
                           stream=stream, backward=True)
        decoded = ((float(f.pts * f.time_base), f) for f in container.decode(stream)
                   if f.pts is not None)
        current = next(decoded, None)
        following = next(decoded, None)
        for t in times:
            while following is not None and abs(following[0] - t) <= abs(current[0] - t):
                current, following = following, next(decoded, None)
            if current is None or abs(current[0] - t) > tolerance_s:
                seen = "no frame" if current is None else f"the nearest is at {current[0]:.4f} s"
                raise TubError(f"{path}: no frame at {t:.4f} s ({seen}); the video and the "
                               "data's timestamps disagree")
            yield current[1].to_ndarray(format="rgb24")
