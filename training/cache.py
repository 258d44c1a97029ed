"""Decoded frames, cached on disk as one memory-mapped uint8 array.

The first epoch (or the first `car train` on some tubs) decodes every JPEG once, applies
the preprocessing geometry (crop, resize, colour order) and writes the result; later epochs
and later runs on the same tubs read the array instead, so a GPU is not left waiting on a
JPEG decoder. The cache key covers each image file's path, size and mtime and the geometry,
so a changed tub or a changed crop builds a new cache; an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from deploy.preprocess import Preprocess, PreprocessError
from training.records import RecordSet

CHUNK = 256


@dataclass
class FrameCache:
    frames: np.ndarray  # (N, h, w, 3) uint8, memory-mapped, in model colour order
    ok: np.ndarray  # (N,) bool: False where the image was missing or corrupt
    path: Path
    built: bool  # True if this call decoded the JPEGs, False if it reused a cache

    @property
    def bad_count(self) -> int:
        return int((~self.ok).sum())


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


def load_frames(data: RecordSet, preprocess: Preprocess, cache_dir: Path | None = None,
                workers: int = 2, progress: bool = True) -> FrameCache:
    """The cached frames of every record, building the cache if needed."""
    cache_dir = cache_dir or default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(data, preprocess)
    array_path, meta_path = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
    h, w = preprocess.height, preprocess.width
    shape = (len(data), h, w, 3)
    if array_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("shape") == list(shape):
            frames = np.memmap(array_path, np.uint8, "r", shape=shape)
            ok = np.ones(len(data), bool)
            ok[meta["bad"]] = False
            return FrameCache(frames, ok, array_path, built=False)
    tmp = cache_dir / f".{key}.{os.getpid()}.tmp"
    out = np.memmap(tmp, np.uint8, "w+", shape=shape)
    ok = np.ones(len(data), bool)

    def decode(i: int) -> None:
        rec = data.records[i]
        image = cv2.imread(str(data.tubs[rec.tub].path / "images" / rec.image),
                           cv2.IMREAD_COLOR)
        if image is None:
            ok[i] = False
            return
        try:
            out[i] = preprocess.geometry(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        except PreprocessError:  # a frame of another size
            ok[i] = False

    with ThreadPoolExecutor(max(1, workers)) as pool, tqdm(
            total=len(data), unit="frame", desc="decoding frames (once)",
            disable=not progress, leave=False) as bar:
        for start in range(0, len(data), CHUNK):
            chunk = range(start, min(start + CHUNK, len(data)))
            list(pool.map(decode, chunk))
            bar.update(len(chunk))
    out.flush()
    os.replace(tmp, array_path)
    meta_path.write_text(json.dumps({"shape": list(shape),
                                     "bad": np.flatnonzero(~ok).tolist()}))
    return FrameCache(np.memmap(array_path, np.uint8, "r", shape=shape), ok, array_path,
                      built=True)
