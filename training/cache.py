"""Decoded frames, cached on disk as one memory-mapped uint8 array.

The first epoch (or the first `car train` on some tubs) decodes every JPEG once, applies
the preprocessing geometry (crop, resize, colour order) and writes the result; later epochs
and later runs on the same tubs read the array instead, so a GPU is not left waiting on a
JPEG decoder. The cache key covers each image file's path, size and mtime and the geometry,
so a changed tub or a changed crop builds a new cache; an unchanged one is reused. A cache
that cannot be read back (a crash mid-write, a full disk) is rebuilt, and the temporary
files of a build that was stopped are removed by the next one. With a size cap
(``paths.frame_cache_max_gb``), the least recently used entries go first; `car cache info`
and `car cache prune` show and trim it by hand (training/cache_admin.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from car.tub.images import decode, defect
from deploy.json_file import JsonFileError, read_json
from deploy.preprocess import Preprocess, PreprocessError
from training.cache_admin import TEMPORARY, prune, running
from training.records import RecordSet

CHUNK = 256
STALE_S = 600  # a temporary file untouched this long, of a process gone, was abandoned
log = logging.getLogger(__name__)
GOOD, BROKEN, OTHER_SIZE = 0, 1, 2
REASONS = {BROKEN: "with a missing or corrupt image", OTHER_SIZE: "of another frame size"}


@dataclass
class FrameCache:
    frames: np.ndarray  # (N, h, w, 3) uint8, memory-mapped, in model colour order
    status: np.ndarray  # (N,) GOOD, BROKEN or OTHER_SIZE
    path: Path
    built: bool  # True if this call decoded the JPEGs, False if it reused a cache

    @property
    def ok(self) -> np.ndarray:
        return self.status == GOOD

    @property
    def bad_count(self) -> int:
        return int((self.status != GOOD).sum())

    def bad_reasons(self) -> dict[str, int]:
        return {REASONS[code]: int((self.status == code).sum()) for code in REASONS
                if (self.status == code).any()}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "car" / "frames"


def cache_key(data: RecordSet, preprocess: Preprocess) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(preprocess.to_dict(), sort_keys=True).encode())
    for rec in data.records:
        path = data.tubs[rec.tub].path / "images" / rec.image
        try:
            st = path.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{path}|{stamp}\n".encode())
    return digest.hexdigest()[:24]


def read_frame(path: Path) -> np.ndarray | None:
    """A recorded JPEG as RGB uint8, or None if it is missing, truncated or undecodable
    (OpenCV alone decodes a truncated JPEG into a half-grey frame without complaint)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if defect(data, "image_array") is not None:
        return None
    image = decode(data, "image_array")
    return image if image is not None and image.ndim == 3 else None


def load_frames(data: RecordSet, preprocess: Preprocess, cache_dir: Path | None = None,
                workers: int = 2, progress: bool = True, max_bytes: int | None = None
                ) -> FrameCache:
    """The cached frames of every record, building the cache if needed. With ``max_bytes``,
    the least recently used other entries are then removed until the cache fits it."""
    cache_dir = cache_dir or default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(cache_dir)
    key = cache_key(data, preprocess)
    array_path, meta_path = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
    shape = (len(data), preprocess.height, preprocess.width, 3)
    cached = _open_existing(array_path, meta_path, shape)
    if cached is None:
        cached = _build_entry(data, preprocess, cache_dir, key, shape, workers, progress)
    else:
        with contextlib.suppress(OSError):
            os.utime(meta_path)  # its last use, for the size cap's least-recently-used order
    if max_bytes is not None:
        _enforce_cap(cache_dir, max_bytes, key)
    return cached


def _enforce_cap(cache_dir: Path, max_bytes: int, key: str) -> None:
    result = prune(cache_dir, max_bytes=max_bytes, keep=(key,))
    if result.removed:
        log.info("frame cache over %.1f GB: removed %d least recently used entr%s (%.1f GB)",
                 max_bytes / 1e9, len(result.removed), "y" if len(result.removed) == 1
                 else "ies", result.freed_bytes / 1e9)
    if result.left.size_bytes > max_bytes:
        log.warning("the frame cache holds %.1f GB, over its %.1f GB cap: this training's "
                    "own frames are larger than the cap (raise paths.frame_cache_max_gb)",
                    result.left.size_bytes / 1e9, max_bytes / 1e9)


def _build_entry(data: RecordSet, preprocess: Preprocess, cache_dir: Path, key: str,
                 shape: tuple[int, ...], workers: int, progress: bool) -> FrameCache:
    array_path, meta_path = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
    tmp = cache_dir / f".{key}.{os.getpid()}.tmp"
    try:
        status = _build(data, preprocess, tmp, shape, workers, progress)
        os.replace(tmp, array_path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    meta_tmp = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
    tubs = sorted({str(tub.path.resolve()) for tub in data.tubs})
    meta_tmp.write_text(json.dumps({"shape": list(shape), "status": status.tolist(),
                                    "tubs": tubs}))
    os.replace(meta_tmp, meta_path)
    return FrameCache(np.memmap(array_path, np.uint8, "r", shape=shape), status, array_path,
                      built=True)


def _open_existing(array_path: Path, meta_path: Path, shape: tuple[int, ...]
                   ) -> FrameCache | None:
    if not meta_path.exists():
        return None
    try:  # at most a few bytes a record: a larger index is not one of ours
        meta = read_json(meta_path, "frame cache index", max_bytes=4 * shape[0] + (64 << 10))
    except JsonFileError as exc:
        log.info("%s; building the cache again", exc)
        return None
    try:
        status = np.asarray(meta["status"], np.uint8)
        if (meta.get("shape") != list(shape) or len(status) != shape[0]
                or array_path.stat().st_size != int(np.prod(shape))):
            return None
        return FrameCache(np.memmap(array_path, np.uint8, "r", shape=shape), status,
                          array_path, built=False)
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        return None  # absent, or damaged: build it again


def _remove_abandoned(cache_dir: Path) -> None:
    """Delete the temporary files of cache builds that were stopped (their process is gone
    and they have not changed for STALE_S), one info line each."""
    if os.name != "posix":
        return  # no cheap way to ask whether a process runs
    for entry in os.scandir(cache_dir):
        match = TEMPORARY.match(entry.name)
        if match is None or running(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            if time.time() - entry.stat().st_mtime >= STALE_S:
                os.unlink(entry.path)
                log.info("removed %s, left by a frame cache build that was stopped",
                         entry.path)


def _build(data: RecordSet, preprocess: Preprocess, tmp: Path, shape: tuple[int, ...],
           workers: int, progress: bool) -> np.ndarray:
    out = np.memmap(tmp, np.uint8, "w+", shape=shape)
    status = np.zeros(len(data), np.uint8)

    def decode_one(i: int) -> None:
        rec = data.records[i]
        image = read_frame(data.tubs[rec.tub].path / "images" / rec.image)
        if image is None:
            status[i] = BROKEN
            return
        try:
            out[i] = preprocess.geometry(image)
        except PreprocessError:
            status[i] = OTHER_SIZE

    with ThreadPoolExecutor(max(1, workers)) as pool, tqdm(
            total=len(data), unit="frame", desc="decoding frames (once)",
            disable=not progress, leave=False) as bar:
        for start in range(0, len(data), CHUNK):
            chunk = range(start, min(start + CHUNK, len(data)))
            list(pool.map(decode_one, chunk))
            bar.update(len(chunk))
    out.flush()
    return status
