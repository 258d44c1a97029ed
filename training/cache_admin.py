"""The frame cache's entries, their sizes and when they were last used, and pruning them:
least recently used first down to a size cap, older than some age, or all of them.

An entry is a pair KEY.u8 (the frames) + KEY.json (its index: shape, per-frame status, the
tubs it was built from). Training touches the index each time it reuses an entry, so the
index's modification time is the entry's last use. Files that belong to no whole entry (an
array without its index, an index without its array, the temporary files of a stopped
build) are leftovers and are always pruned. Deleting an entry that a running `car train`
has open is safe on POSIX: its memory map keeps the data until that run ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

TEMPORARY = re.compile(r"^\..+\.(\d+)\.tmp$")  # .KEY.PID.tmp, .KEY.json.PID.tmp


@dataclass
class CacheEntry:
    key: str
    size_bytes: int  # the array and its index
    last_used: float  # seconds since the epoch
    frames: int | None  # None where the index cannot be read
    shape: tuple[int, ...] | None
    tubs: list[str]  # empty for entries built before the index named its tubs

    @property
    def files(self) -> list[str]:
        return [f"{self.key}.u8", f"{self.key}.json"]


@dataclass
class CacheListing:
    path: Path
    entries: list[CacheEntry]  # most recently used first
    leftovers: list[Path] = field(default_factory=list)  # pruned whatever the cap
    busy: list[Path] = field(default_factory=list)  # temporary files of a running build

    @property
    def size_bytes(self) -> int:
        return sum(e.size_bytes for e in self.entries) + sum(_size(p) for p in self.leftovers)


@dataclass
class PruneResult:
    removed: list[CacheEntry]
    leftovers: list[Path]
    freed_bytes: int
    left: CacheListing


def list_cache(cache_dir: Path) -> CacheListing:
    """What is in ``cache_dir`` (an empty listing if it does not exist)."""
    if not cache_dir.is_dir():
        return CacheListing(cache_dir, [])
    names = {p.name: p for p in cache_dir.iterdir() if p.is_file()}
    entries, leftovers, busy = [], [], []
    for name, path in names.items():
        match = TEMPORARY.match(name)
        if match is not None:
            (busy if running(int(match.group(1))) else leftovers).append(path)
        elif name.endswith(".json") and f"{name[:-5]}.u8" in names:
            entries.append(_entry(path, names[f"{name[:-5]}.u8"]))
        elif name.endswith(".u8") and f"{name[:-3]}.json" in names:
            continue  # the array of an entry
        elif name.endswith((".u8", ".json")):  # half an entry; other files are not ours
            leftovers.append(path)
    entries.sort(key=lambda e: e.last_used, reverse=True)
    return CacheListing(cache_dir, entries, sorted(leftovers), sorted(busy))


def prune(cache_dir: Path, *, max_bytes: int | None = None, older_than_s: float | None = None,
          everything: bool = False, keep: tuple[str, ...] = (), dry_run: bool = False
          ) -> PruneResult:
    """Remove leftovers, then every entry with ``everything``, those unused for
    ``older_than_s``, and least recently used ones until the rest fit ``max_bytes``.
    Entries in ``keep`` (keys) stay whatever the cap."""
    listing = list_cache(cache_dir)
    now = time.time()
    doomed: list[CacheEntry] = []
    kept: list[CacheEntry] = []
    for entry in listing.entries:
        old = older_than_s is not None and now - entry.last_used > older_than_s
        (doomed if (everything or old) and entry.key not in keep else kept).append(entry)
    if max_bytes is not None:
        total = sum(e.size_bytes for e in kept)
        for entry in sorted(kept, key=lambda e: e.last_used):  # least recently used first
            if total <= max_bytes:
                break
            if entry.key in keep:
                continue
            doomed.append(entry)
            total -= entry.size_bytes
    freed = sum(_size(p) for p in listing.leftovers) + sum(e.size_bytes for e in doomed)
    if not dry_run:
        for path in listing.leftovers:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for entry in doomed:
            for name in entry.files:  # the index first: an array without one is a leftover
                with contextlib.suppress(FileNotFoundError):
                    (cache_dir / name).unlink()
    gone = {e.key for e in doomed}
    left = CacheListing(cache_dir, [e for e in listing.entries if e.key not in gone], [],
                        listing.busy)  # after the prune (or as it would be, with dry_run)
    return PruneResult(doomed, listing.leftovers, freed, left)


def running(pid: int) -> bool:
    """Whether process ``pid`` runs (someone else's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process
        return True
    return True


def _entry(index: Path, array: Path) -> CacheEntry:
    key = index.name[:-5]
    st_index, st_array = index.stat(), array.stat()
    frames, shape, tubs = None, None, []
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        if st_index.st_size < 64 << 20:  # a larger index is not one of ours
            meta = json.loads(index.read_text())
            shape = tuple(int(v) for v in meta["shape"])
            frames = shape[0]
            tubs = [str(t) for t in meta.get("tubs", [])]
    return CacheEntry(key, st_index.st_size + st_array.st_size, st_index.st_mtime, frames,
                      shape, tubs)


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
