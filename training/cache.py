"""Decoded frames, cached on disk as memory-mapped uint8 arrays, one shard per session.

The first `car train` on some tubs decodes every JPEG once, applies the preprocessing
geometry (crop, resize, colour order) and writes the result; later epochs and later runs
read the arrays instead, so a GPU is not left waiting on a JPEG decoder. The cache is
sharded by recording session: each session's frames are one entry (KEY.u8 + KEY.json), its
key covering the path, size and mtime of each of its image files and the geometry. Adding a
tub or a session builds only the new shards; a changed session or crop builds a new one;
an unchanged one is reused; a shard that cannot be read back (a crash mid-write, a full
disk) is rebuilt. Distributed training builds the shards split across a node's processes
and each rank then reads only the shards its samples fall in. The temporary files of a
build that was stopped are removed by the next one. With a size cap
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from car.tub.images import decode, defect
from deploy.json_file import JsonFileError, read_json
from deploy.preprocess import Preprocess, PreprocessError
from training.cache_admin import TEMPORARY, prune, running
from training.frame_shards import ShardedFrames
from training.records import RecordSet

CHUNK = 256
STALE_S = 600  # a temporary file untouched this long, of a process gone, was abandoned
log = logging.getLogger(__name__)
GOOD, BROKEN, OTHER_SIZE = 0, 1, 2
REASONS = {BROKEN: "with a missing or corrupt image", OTHER_SIZE: "of another frame size"}


@dataclass(frozen=True)
class Shard:
    """One session's stretch of the record set and its cache entry."""

    key: str
    records: range  # positions in the record set
    path: Path  # KEY.u8; its index is KEY.json beside it


@dataclass
class FrameCache:
    frames: ShardedFrames  # (N, h, w, 3) uint8 in model colour order, by record position
    status: np.ndarray  # (N,) GOOD, BROKEN or OTHER_SIZE
    shards: list[Shard]
    built_shards: int  # how many shards this call decoded from the JPEGs (0: all reused)

    @property
    def built(self) -> bool:
        return self.built_shards > 0

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


def plan_shards(data: RecordSet, preprocess: Preprocess, cache_dir: Path) -> list[Shard]:
    """One shard per stretch of records from one session, keyed by its files and geometry."""
    geometry = json.dumps(preprocess.to_dict(), sort_keys=True).encode()
    shards: list[Shard] = []
    start = 0
    records = data.records
    for i in range(1, len(records) + 1):
        if i < len(records) and (records[i].tub, records[i].session) == (
                records[start].tub, records[start].session):
            continue
        digest = hashlib.sha256(geometry)
        for rec in records[start:i]:
            path = data.tubs[rec.tub].path / "images" / rec.image
            try:
                st = path.stat()
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
            digest.update(f"{path}|{stamp}\n".encode())
        key = digest.hexdigest()[:24]
        shards.append(Shard(key, range(start, i), cache_dir / f"{key}.u8"))
        start = i
    return shards


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
                workers: int = 2, progress: bool = True, max_bytes: int | None = None, *,
                share: tuple[int, int] = (0, 1), wait: Callable[[], None] | None = None
                ) -> FrameCache:
    """The cached frames of every record, building the shards that are missing.

    With ``share=(k, n)``, this process first opens or builds every n-th shard from the
    k-th (a node's n processes split the decoding), then calls ``wait`` (a barrier: the
    others finish their shares), then opens the rest, building any still missing. Reused
    shards are marked as used now, for the size cap's least-recently-used order. With
    ``max_bytes``, the least recently used other entries are then removed until the cache
    fits it."""
    cache_dir = cache_dir or default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(cache_dir)
    shards = plan_shards(data, preprocess, cache_dir)
    k, n = share
    mine = list(range(k, len(shards), n))
    entries, built = _open_or_build(data, preprocess, shards, mine, workers, progress)
    if wait is not None:
        wait()
    rest = [i for i in range(len(shards)) if i not in entries]
    more, built_rest = _open_or_build(data, preprocess, shards, rest, workers, progress)
    entries |= more
    if max_bytes is not None:
        _enforce_cap(cache_dir, max_bytes, tuple(s.key for s in shards))
    shape = (preprocess.height, preprocess.width, 3)
    ordered = [entries[i] for i in range(len(shards))]
    return FrameCache(ShardedFrames([e[0] for e in ordered], shape),
                      np.concatenate([e[1] for e in ordered]), shards, built + built_rest)


def _open_or_build(data: RecordSet, preprocess: Preprocess, shards: list[Shard],
                   chosen: list[int], workers: int, progress: bool
                   ) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], int]:
    """The ``chosen`` shards opened (each index read once), the missing ones built first;
    and how many were built."""
    shape = (preprocess.height, preprocess.width, 3)
    entries, missing = {}, []
    for i in chosen:
        entry = _open_existing(shards[i], shape)
        if entry is None:
            missing.append(i)
            continue
        entries[i] = entry
        with contextlib.suppress(OSError):
            os.utime(shards[i].path.with_suffix(".json"))
    with _bar(sum(len(shards[i].records) for i in missing), len(missing), len(shards),
              progress and bool(missing)) as bar:
        for i in missing:
            _build_entry(data, preprocess, shards[i], shape, workers, bar)
            entry = _open_existing(shards[i], shape)
            if entry is None:
                raise OSError(f"{shards[i].path}: the frame cache shard cannot be read back")
            entries[i] = entry
    return entries, len(missing)


def _bar(frames: int, shards: int, of: int, progress: bool) -> tqdm:
    return tqdm(total=frames, unit="frame", disable=not progress, leave=False,
                desc=f"decoding frames (once; {shards} of {of} session shards)")


def _enforce_cap(cache_dir: Path, max_bytes: int, keys: tuple[str, ...]) -> None:
    result = prune(cache_dir, max_bytes=max_bytes, keep=keys)
    if result.removed:
        log.info("frame cache over %.1f GB: removed %d least recently used entr%s (%.1f GB)",
                 max_bytes / 1e9, len(result.removed), "y" if len(result.removed) == 1
                 else "ies", result.freed_bytes / 1e9)
    if result.left.size_bytes > max_bytes:
        log.warning("the frame cache holds %.1f GB, over its %.1f GB cap: this training's "
                    "own frames are larger than the cap (raise paths.frame_cache_max_gb)",
                    result.left.size_bytes / 1e9, max_bytes / 1e9)


def _build_entry(data: RecordSet, preprocess: Preprocess, shard: Shard,
                 shape: tuple[int, ...], workers: int, bar: tqdm) -> None:
    """Decode one shard into a temporary file, then rename it and its index into place."""
    tmp = shard.path.with_name(f".{shard.key}.{os.getpid()}.tmp")
    try:
        status = _build(data, shard.records, preprocess, tmp, shape, workers, bar)
        os.replace(tmp, shard.path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    meta_path = shard.path.with_suffix(".json")
    meta_tmp = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
    first = data.records[shard.records.start]
    meta_tmp.write_text(json.dumps({
        "shape": [len(shard.records), *shape], "status": status.tolist(),
        "tubs": [str(data.tubs[first.tub].path.resolve())], "session": first.session}))
    os.replace(meta_tmp, meta_path)


def _open_existing(shard: Shard, shape: tuple[int, ...]
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """The shard's memory-mapped frames and status, or None if absent or damaged."""
    meta_path = shard.path.with_suffix(".json")
    if not meta_path.exists():
        return None
    count = len(shard.records)
    try:  # at most a few bytes a record: a larger index is not one of ours
        meta = read_json(meta_path, "frame cache index", max_bytes=4 * count + (64 << 10))
    except JsonFileError as exc:
        log.info("%s; building the cache again", exc)
        return None
    full = (count, *shape)
    try:
        status = np.asarray(meta["status"], np.uint8)
        if (meta.get("shape") != list(full) or len(status) != count
                or shard.path.stat().st_size != int(np.prod(full))):
            return None
        return np.memmap(shard.path, np.uint8, "r", shape=full), status
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        return None


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


def _build(data: RecordSet, positions: range, preprocess: Preprocess, tmp: Path,
           shape: tuple[int, ...], workers: int, bar: tqdm) -> np.ndarray:
    out = np.memmap(tmp, np.uint8, "w+", shape=(len(positions), *shape))
    status = np.zeros(len(positions), np.uint8)

    def decode_one(i: int) -> None:
        rec = data.records[positions.start + i]
        image = read_frame(data.tubs[rec.tub].path / "images" / rec.image)
        if image is None:
            status[i] = BROKEN
            return
        try:
            out[i] = preprocess.geometry(image)
        except PreprocessError:
            status[i] = OTHER_SIZE

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, len(positions), CHUNK):
            chunk = range(start, min(start + CHUNK, len(positions)))
            list(pool.map(decode_one, chunk))
            bar.update(len(chunk))
    out.flush()
    return status
