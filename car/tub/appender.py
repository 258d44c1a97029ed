"""Appending records to a tub, synchronously, with crash recovery on open.

Write order for one record, chosen so that a kill -9 at any instant leaves a tub that
reopens cleanly:

1. each image is created with ``O_EXCL``: an existing file is never overwritten;
2. the catalog line is appended with one ``write()`` call;
3. every ``checkpoint()`` fsyncs the new images and the catalog, then replaces the catalog
   manifest and ``manifest.json`` atomically (write a temp file, fsync, rename).

Opening a tub that a crash interrupted (ours or donkeycar's) repairs it before appending:
a torn last line is removed (its bytes go to ``repair_log.jsonl``), catalogs the manifest
does not list yet are added, and the next index is recomputed from what is on disk: past
every record *and* every image file, so no index is reused. Indexes skipped that way get a
deleted tombstone line, so line N of the catalog stream keeps holding ``_index`` N.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from car.errors import TubError
from car.tub import images
from car.tub.catalog import OpenCatalog
from car.tub.check import MAX_LOST
from car.tub.files import (
    append,
    fsync_dir,
    link_error,
    open_for_writing,
    refuse_link,
    sync,
    write_all,
    write_error,
)
from car.tub.format import (
    CAPTURE_MS,
    DEFAULT_MAX_LEN,
    IMAGE_TYPES,
    IMAGES,
    INDEX,
    LOCK,
    MANIFEST,
    SESSION_ID,
    TIMESTAMP_MS,
    TOMBSTONE,
    Manifest,
    catalog_manifest_name,
    image_file_name,
    index_ranges,
    log_repair,
    read_catalog_manifest,
    record_line,
    session_number,
    settle_temp_files,
    tombstone,
)
from car.tub.lock import TubLock
from car.tub.scan import (
    TubScan,
    catalog_origin,
    image_files,
    next_catalog_name,
    require_inside,
    scan_tub,
)
from car.tub.values import check_inputs


class TubAppender:
    """Appends records to one tub. Holds the tub's lock until closed. Not thread-safe."""

    def __init__(self, path: str | os.PathLike, inputs: list[str] | None = None,
                 types: list[str] | None = None, metadata: Mapping[str, Any] | None = None,
                 *, jpeg_quality: int = 90, max_len: int = DEFAULT_MAX_LEN,
                 lock: TubLock | None = None, session_info: Mapping[str, Any] | None = None):
        """``session_info`` (JSON values) describes this session, for example the simulator
        settings it was recorded with; it is kept in the manifest under sessions.info."""
        self.path = Path(path).absolute()
        self._session_info = dict(session_info) if session_info else None
        self.jpeg_quality = jpeg_quality
        self.repairs: list[str] = []
        self._catalog: OpenCatalog | None = None
        self._unsynced_images: list[Path] = []
        self._manifest_dirty = False
        self._session_recorded = False
        _check_target(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        require_inside(self.path)  # a link in the tub would have us write outside it
        self._lock = lock or TubLock(self.path)
        try:
            if (self.path / MANIFEST).exists():
                scan = self._open_existing(inputs, types)
            else:
                scan = self._create(inputs, types, metadata, max_len)
            (self.path / IMAGES).mkdir(exist_ok=True)
            self.session_number = _next_session_number(scan)
            self.session_id = f"{time.strftime('%y-%m-%d')}_{self.session_number}"
            self.session_start = self.next_index  # this session's first record index
            self.checkpoint()
        except BaseException:
            self._close_files()
            raise

    # ------------------------------------------------------------------ opening

    def _create(self, inputs: list[str] | None, types: list[str] | None,
                metadata: Mapping[str, Any] | None, max_len: int) -> TubScan:
        if not inputs or not types:
            raise TubError(f"{self.path}: a new tub needs its inputs and types")
        check_inputs(inputs, types)
        self.manifest = Manifest(inputs=list(inputs), types=list(types),
                                 metadata=dict(metadata or {}),
                                 manifest_metadata={"created_at": time.time()}, max_len=max_len)
        self.next_index = 0
        self.tombstones: set[int] = set()
        self._manifest_dirty = True
        return scan_tub(self.path, self.manifest)

    def _open_existing(self, inputs: list[str] | None, types: list[str] | None) -> TubScan:
        self.repairs += settle_temp_files(self.path)
        self.manifest = Manifest.read(self.path)
        if inputs is not None and (inputs != self.manifest.inputs
                                   or list(types or []) != self.manifest.types):
            raise TubError(
                f"{self.path}: was recorded with inputs {self.manifest.inputs} of types "
                f"{self.manifest.types}; record these fields into a new tub"
            )
        scan = scan_tub(self.path, self.manifest)
        if scan.missing_catalogs:
            raise TubError(
                f"{self.path}: {', '.join(scan.missing_catalogs)} is listed in manifest.json "
                "but missing; if it is still being copied, wait; else run `car tub check "
                "--repair` first")
        last = scan.catalogs[-1] if scan.catalogs else None
        if last is not None and last.torn_tail:
            self._repair("drop_torn_line", f"{last.name}: removed a torn last line "
                         f"({len(last.torn_tail)} bytes) left by a crash", last.torn_tail)
            os.truncate(last.path, last.good_length)
        if last is not None and last.missing_newline:
            self._repair("add_newline", f"{last.name}: ended its last line")
            append(last.path, b"\n")
            last.lines[-1].length += 1
        unlisted = [c.name for c in scan.catalogs if not c.listed and c.lines]
        if unlisted:
            self._repair("list_catalog", f"listed {', '.join(unlisted)} in manifest.json (a "
                         "crash came before the manifest update)")
            self.manifest.catalog_paths += unlisted
        tombstones = {r[INDEX] for r in scan.records() if TOMBSTONE in r}
        if tombstones - self.manifest.deleted_indexes:
            self._repair("delete_tombstones", "marked crash tombstones deleted: "
                         + index_ranges(sorted(tombstones - self.manifest.deleted_indexes)))
            self.manifest.deleted_indexes |= tombstones
        last_record = scan.max_record_index
        on_disk = max(image_files(self.path), default=-1)
        self.next_index = max(self.manifest.current_index, last_record + 1, on_disk + 1)
        if self.next_index - last_record - 1 > MAX_LOST:  # a crash loses a handful at most
            source = f"images/ holds a file of index {on_disk}" if on_disk + 1 == \
                self.next_index else f"manifest.json says the next index is {self.next_index}"
            raise TubError(f"{self.path}: {source}, far past the last record ({last_record}); "
                           "that is not crash damage: look at `car tub check` first")
        if self.next_index != self.manifest.current_index:
            self._manifest_dirty = True
        if scan.catalogs:
            self._reopen_catalog(scan)
        lost = range(last_record + 1, self.next_index)
        if lost:
            self._repair("tombstone",
                         f"indexes {index_ranges(list(lost))}: written by a crashed session "
                         "without a catalog line; kept as deleted tombstones (never reused)")
            # Deleted before their lines exist: a kill in between leaves nothing readable.
            self.manifest.deleted_indexes.update(lost)
            self._write_manifest(current_index=lost.start)
            for index in lost:
                self._append_line(index, tombstone(index, "crash", _now_ms()))
            tombstones.update(lost)
        self.tombstones = tombstones
        return scan

    def _reopen_catalog(self, scan: TubScan) -> None:
        last = scan.catalogs[-1]
        start, created_at = catalog_origin(last, default_start=self.next_index)
        lengths = [line.length for line in last.lines]
        self._catalog = OpenCatalog(self.path, last.name, start, lengths, created_at)
        meta = read_catalog_manifest(last.path.with_name(catalog_manifest_name(last.name)))
        self._catalog.dirty = meta is None or meta.get("line_lengths") != lengths

    def _repair(self, action: str, detail: str, data: bytes | None = None) -> None:
        self.repairs.append(log_repair(self.path, action, detail, data))
        self._manifest_dirty = True

    # ------------------------------------------------------------------ writing

    @property
    def input_types(self) -> dict[str, str]:
        return self.manifest.input_types

    def append(self, values: Mapping[str, Any], timestamp_ms: int | None = None,
               capture_ms: float | None = None) -> int:
        """Write one record (values already checked by ``prepare_record``); return its index."""
        index = self.next_index
        record: dict[str, Any] = {}
        types = self.input_types
        for key, value in values.items():
            type_name = types[key]
            if type_name in IMAGE_TYPES:
                name = image_file_name(index, key, type_name)
                self._write_image(name, images.encode(value, type_name, self.jpeg_quality))
                record[key] = name
            else:
                record[key] = value
        record[INDEX] = index
        record[SESSION_ID] = self.session_id
        record[TIMESTAMP_MS] = _now_ms() if timestamp_ms is None else int(timestamp_ms)
        if capture_ms is not None:
            record[CAPTURE_MS] = round(float(capture_ms), 3)
        self._append_line(index, record)
        if not self._session_recorded:
            self._record_session()
        return index

    def _write_image(self, name: str, data: bytes) -> None:
        refuse_link(self.path / IMAGES)  # checked on open too; this is where it matters
        path = self.path / IMAGES / name
        try:
            fd = open_for_writing(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            if path.is_symlink():
                raise link_error(path) from None
            raise TubError(f"{path}: already exists and will not be overwritten; is another "
                           "program writing this tub?") from None
        try:
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise write_error(path, exc, "nothing was lost: the partial image was removed, "
                              "its record not written") from None
        self._unsynced_images.append(path)

    def _append_line(self, index: int, record: dict[str, Any]) -> None:
        catalog = self._catalog
        if catalog is None or (index % self.manifest.max_len == 0 and catalog.line_lengths):
            catalog = self._start_catalog(index)
        catalog.append(record_line(record))
        self.next_index = index + 1
        self._manifest_dirty = True
        if catalog.name not in self.manifest.catalog_paths:
            # Listed only once it holds a line (donkeycar cannot open an empty catalog), and
            # once that line and its images are on disk.
            self._sync_images()
            catalog.sync()
            self.manifest.catalog_paths.append(catalog.name)
            self._write_manifest()

    def _start_catalog(self, index: int) -> OpenCatalog:
        if self._catalog is not None:
            self._catalog.sync()
            self._catalog.close()
        name = next_catalog_name(self.path, self.manifest)
        self._catalog = OpenCatalog(self.path, name, index, [], time.time())
        return self._catalog

    def _record_session(self) -> None:
        sessions = self.manifest.manifest_metadata.setdefault("sessions", {})
        sessions.setdefault("all_full_ids", []).append(self.session_id)
        sessions["last_id"] = self.session_number
        sessions["last_full_id"] = self.session_id
        if self._session_info is not None:
            sessions.setdefault("info", {})[self.session_id] = self._session_info
        self._session_recorded = True
        self._manifest_dirty = True

    # ------------------------------------------------------------------ deleting

    def delete(self, indexes: Iterable[int]) -> list[int]:
        """Soft-delete written records (restorable). Returns the indexes newly deleted."""
        changed = self.manifest.mark((i for i in indexes if 0 <= i < self.next_index), True)
        self._write_manifest()
        return changed

    def restore(self, indexes: Iterable[int]) -> list[int]:
        """Undo a soft delete. Tombstones stay deleted. Returns the indexes restored."""
        changed = self.manifest.mark(indexes, False, protected=self.tombstones)
        self._write_manifest()
        return changed

    def delete_last(self, count: int) -> list[int]:
        """Soft-delete the last ``count`` live records."""
        return self._delete_last(count, 0)

    def erase_last(self, count: int) -> list[int]:
        """The "erase last N" button: the last ``count`` live records of this session only
        (an erase never reaches into an earlier drive)."""
        return self._delete_last(count, self.session_start)

    def _delete_last(self, count: int, first: int) -> list[int]:
        dead = self.manifest.deleted_indexes | self.tombstones
        chosen: list[int] = []
        index = self.next_index - 1
        while index >= first and len(chosen) < count:
            if index not in dead:
                chosen.append(index)
            index -= 1
        return self.delete(chosen)

    # ------------------------------------------------------------------ durability

    def checkpoint(self) -> None:
        """Make everything appended so far durable, and the manifests match it."""
        self._sync_images()
        if self._catalog is not None:
            self._catalog.sync()
        if self._manifest_dirty:
            self._write_manifest()

    def _sync_images(self) -> None:
        for path in self._unsynced_images:
            fd = os.open(path, os.O_RDONLY)
            try:
                sync(fd, path)
            finally:
                os.close(fd)
        if self._unsynced_images:
            fsync_dir(self.path / IMAGES)
            self._unsynced_images.clear()

    def _write_manifest(self, current_index: int | None = None) -> None:
        self.manifest.current_index = self.next_index if current_index is None else current_index
        self.manifest.write(self.path)
        self._manifest_dirty = False

    def close(self) -> None:
        try:
            self.checkpoint()
        finally:
            self._close_files()

    def _close_files(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None
        self._lock.release()

    def __enter__(self) -> TubAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _now_ms() -> int:
    return round(time.time() * 1000)


def _next_session_number(scan: TubScan) -> int:
    numbers = [session_number(r.get(SESSION_ID)) for r in scan.records()]
    last = scan.manifest.sessions.get("last_id", -1)
    return max([n for n in numbers if n is not None] + [int(last)]) + 1


def _check_target(path: Path) -> None:
    """Refuse to turn a folder of other files into a tub."""
    if path.exists() and not path.is_dir():
        raise TubError(f"{path}: exists and is not a folder; give a tub folder")
    if path.is_dir() and not (path / MANIFEST).exists():
        if any(path.glob("catalog_*.catalog")):
            raise TubError(f"{path}: manifest.json is missing; run `car tub check --repair` "
                           "to rebuild it from the catalogs")
        if any(p.name not in (IMAGES, LOCK) for p in path.iterdir()):
            raise TubError(f"{path}: exists, is not empty and is not a tub; record into a "
                           "new or empty folder")
