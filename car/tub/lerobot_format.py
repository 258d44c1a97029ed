"""The parts of LeRobot's dataset format (codebase v3.0) that `car tub export` and `car tub
import` share: file layout, feature names, and loading the optional packages.

A v3.0 dataset is a folder::

    meta/info.json                          fps, totals, features, path templates
    meta/stats.json                         per-feature min/max/mean/std/count (normalisation)
    meta/tasks.parquet                      the task strings (index) and their task_index
    meta/episodes/chunk-000/file-000.parquet  one row per episode: its rows in the data
                                            files, its span in each video, its stats
    data/chunk-000/file-000.parquet         one row per frame: action, observation.state, ...
    videos/KEY/chunk-000/file-000.mp4       the camera's frames, episodes one after another

pyarrow and PyAV are imported only when a dataset is read or written (``require``), so the
car runtime never loads them.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from car.errors import TubError

CODEBASE_VERSION = "v3.0"
INSTALL = "pip install 'car-autopilot[lerobot]'"

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
CHUNKS_SIZE = 1000  # files per chunk folder, LeRobot's default
DATA_FILES_MB = 100  # LeRobot's defaults for when it appends to a dataset
VIDEO_FILES_MB = 200

CAMERA = "observation.images.cam"
ACTION = "action"
STATE = "observation.state"
CAPTURE = "capture_time_s"  # ours: each frame's wall-clock capture time, seconds since 1970
ACTION_NAMES = ["steering", "throttle"]
ROBOT_TYPE = "donkey_car"
# Columns every LeRobot dataset has, as LeRobot declares them.
INDEX_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


def require(name: str, what: str) -> ModuleType:
    """Import ``pyarrow``, ``pyarrow.parquet`` or ``av``, or say in one line how to get it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        package = "PyAV" if name == "av" else "pyarrow"
        raise TubError(f"{what} needs {package}: {INSTALL}") from None


def read_info(root: Path) -> dict[str, Any]:
    """``meta/info.json`` of a LeRobot v3 dataset, checked enough to be read; a TubError in
    one line names what is wrong."""
    path = root / INFO_PATH
    if not root.is_dir():
        raise TubError(f"{root}: not a folder; give a LeRobot dataset folder")
    if not path.is_file():
        raise TubError(f"{root}: not a LeRobot dataset (no {INFO_PATH})")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TubError(f"{path}: cannot read it: {exc}") from None
    if not isinstance(info, dict):
        raise TubError(f"{path}: expected a JSON object")
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3."):
        hint = ("; convert it with LeRobot's convert_dataset_v21_to_v30 first"
                if version.startswith("v2") else "")
        raise TubError(f"{path}: codebase_version is {version or 'missing'}, this reads "
                       f"LeRobot v3.x datasets{hint}")
    for key, kind, name in (("fps", (int, float), "number"), ("features", dict, "JSON object"),
                            ("data_path", str, "string")):
        value = info.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TubError(f"{path}: '{key}' is missing or not a {name}")
    if info["fps"] <= 0:
        raise TubError(f"{path}: fps is {info['fps']}; it must be positive")
    for name, feature in info["features"].items():
        if not isinstance(feature, dict) or "dtype" not in feature or "shape" not in feature:
            raise TubError(f"{path}: feature '{name}' has no dtype or shape")
    return info


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")


@contextlib.contextmanager
def written_whole(out: Path) -> Iterator[Path]:
    """A new ``.OUT.*.partial`` folder beside ``out`` to write into: renamed to ``out`` (an
    empty one is replaced) when the block ends, removed whole when it fails, so a stopped
    export or import leaves no half dataset or tub behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield partial
        if out.exists():
            out.rmdir()
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
