"""Scanning a tub's catalogs line by line, tolerating what crashes leave behind.

The scan never changes a file. It finds every catalog (those the manifest lists, and those a
crash left on disk before the manifest named them), parses each line, and sets aside what
cannot be parsed: a torn last line, a zero-filled tail after a power loss, a bad line.
Readers use the good records; `car tub check` reports the rest; repair fixes it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from car.errors import TubError
from car.tub.files import link_error, link_what
from car.tub.format import (
    IMAGE_INDEX_RE,
    IMAGES,
    INDEX,
    TOMBSTONE,
    Manifest,
    catalog_manifest_name,
    catalog_name,
    catalog_number,
    is_tub_file,
    read_catalog_manifest,
)


@dataclass
class CatalogLine:
    """One newline-terminated line of a catalog file."""

    catalog: str
    number: int  # 1-based line number within the file
    offset: int  # byte offset of the line in the file
    length: int  # bytes, newline included
    record: dict[str, Any] | None
    error: str | None = None  # why ``record`` is None

    @property
    def fields(self) -> dict[str, Any]:
        """The record of a line known to be readable."""
        if self.record is None:
            raise ValueError(f"{self.catalog} line {self.number} holds no record")
        return self.record


@dataclass
class CatalogScan:
    """What one catalog file holds."""

    name: str
    path: Path
    listed: bool
    lines: list[CatalogLine] = field(default_factory=list)
    torn_tail: bytes = b""  # bytes after the last newline that do not form a record
    missing_newline: bool = False  # the last line is a complete record without its newline
    size: int = 0

    @property
    def good_length(self) -> int:
        """Byte length of the file without its torn tail."""
        return self.size - len(self.torn_tail)


@dataclass
class TubScan:
    """Every catalog of a tub, in index order."""

    path: Path
    manifest: Manifest
    catalogs: list[CatalogScan]
    missing_catalogs: list[str]  # listed in the manifest, absent on disk

    def lines(self) -> Iterator[CatalogLine]:
        for catalog in self.catalogs:
            yield from catalog.lines

    def records(self) -> Iterator[dict[str, Any]]:
        for line in self.lines():
            if line.record is not None:
                yield line.record

    @property
    def max_record_index(self) -> int:
        """The largest ``_index`` in any catalog, or -1 for an empty tub."""
        return max((r[INDEX] for r in self.records()), default=-1)


def parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """A catalog line (no newline) as a record, or None and the reason it is not one."""
    text = raw.rstrip(b"\r")
    if not text.strip():
        return None, "blank line"
    if not text.strip(b"\0"):
        return None, "zero-filled (lost in a power cut)"
    try:
        record = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, "not JSON"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    index = record.get(INDEX)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        return None, f"no valid {INDEX}"
    return record, None


def scan_catalog(path: Path, listed: bool) -> CatalogScan:
    """Parse one catalog file. A missing file scans as empty."""
    scan = CatalogScan(name=path.name, path=path, listed=listed)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return scan
    except OSError as exc:
        raise TubError(f"{path}: cannot read this catalog: {exc}") from None
    scan.size = len(data)
    offset = 0
    number = 0
    while offset < len(data):
        end = data.find(b"\n", offset)
        if end < 0:  # no final newline: a complete record is kept, anything else is torn
            raw = data[offset:]
            record, _ = parse_line(raw)
            if record is None:
                scan.torn_tail = raw
            else:
                scan.missing_newline = True
                scan.lines.append(CatalogLine(path.name, number + 1, offset, len(raw), record))
            break
        number += 1
        record, error = parse_line(data[offset:end])
        scan.lines.append(CatalogLine(path.name, number, offset, end + 1 - offset, record, error))
        offset = end + 1
    return scan


def catalog_files(tub: Path, manifest: Manifest) -> tuple[list[tuple[str, bool]], list[str]]:
    """All catalogs in index order as (name, listed), and the listed ones missing on disk."""
    listed = list(dict.fromkeys(manifest.catalog_paths))
    on_disk = {p.name for p in tub.glob("catalog_*.catalog")
               if catalog_number(p.name) is not None and p.is_file()}
    missing = [name for name in listed if not (tub / name).is_file()]
    names = [name for name in listed if name not in missing]
    names += [name for name in on_disk if name not in listed]
    names.sort(key=lambda n: (catalog_number(n) is None, catalog_number(n) or 0))
    return [(name, name in listed) for name in names], missing


def scan_tub(tub: Path, manifest: Manifest | None = None) -> TubScan:
    """Read the manifest (unless given) and scan every catalog."""
    manifest = manifest or Manifest.read(tub)
    names, missing = catalog_files(tub, manifest)
    catalogs = [scan_catalog(tub / name, listed) for name, listed in names]
    return TubScan(path=tub, manifest=manifest, catalogs=catalogs, missing_catalogs=missing)


def image_files(tub: Path) -> dict[int, list[str]]:
    """Files in ``images/`` by the record index their name starts with."""
    found: dict[int, list[str]] = {}
    try:
        entries = os.scandir(tub / IMAGES)
    except FileNotFoundError:
        return found
    with entries:
        for entry in entries:
            match = IMAGE_INDEX_RE.match(entry.name)
            if match and not entry.name.endswith(".tmp"):
                found.setdefault(int(match.group(1)), []).append(entry.name)
    return found


def latest_lines(lines: Iterable[CatalogLine]
                 ) -> tuple[dict[int, CatalogLine], list[tuple[CatalogLine, CatalogLine]]]:
    """The line that holds each index, and the (superseded, kept) pairs of repeated indexes.

    A later line of an index replaces an earlier one (a crashed donkeycar session reuses an
    index and overwrites its image, so the image belongs to the later line), except that a
    tombstone never replaces a real record.
    """
    latest: dict[int, CatalogLine] = {}
    pairs: list[tuple[CatalogLine, CatalogLine]] = []
    for line in lines:
        if line.record is None:
            continue
        index = line.record[INDEX]
        old = latest.get(index)
        if old is None:
            latest[index] = line
        elif TOMBSTONE in line.fields and TOMBSTONE not in old.fields:
            pairs.append((line, old))
        else:
            pairs.append((old, line))
            latest[index] = line
    return latest, pairs


def next_catalog_name(tub: Path, manifest: Manifest) -> str:
    """A name for a new catalog: ``catalog_{count}.catalog`` as donkeycar names them."""
    names, missing = catalog_files(tub, manifest)
    taken = {name for name, _ in names} | set(missing)
    number = len(manifest.catalog_paths)
    while catalog_name(number) in taken:
        number += 1
    return catalog_name(number)


def catalog_origin(catalog: CatalogScan, default_start: int) -> tuple[int, float]:
    """A catalog's start index and creation time, for its catalog manifest."""
    meta = read_catalog_manifest(catalog.path.with_name(catalog_manifest_name(catalog.name)))
    meta = meta or {}
    first = next((line.record for line in catalog.lines if line.record is not None), None)
    start = first[INDEX] if first else meta.get("start_index", default_start)
    created = meta.get("created_at")
    return int(start), float(created) if isinstance(created, (int, float)) else time.time()


def outside_files(tub: Path) -> list[tuple[Path, str]]:
    """The tub's own files (manifest, catalogs and their manifests, temp files, log, lock,
    images/ and every image in it) that are not regular files or folders inside it, each
    with what it is instead (``is a symlink to /elsewhere``).

    A symlink there would make a writer change, or a repair rewrite, a file outside the
    tub. Files of other names are not the tub's and are left alone.
    """
    found: list[tuple[Path, str]] = []
    try:
        entries = sorted(os.scandir(tub), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        path = tub / entry.name
        if entry.name != IMAGES and not is_tub_file(entry.name):
            continue
        if entry.is_symlink():
            found.append((path, link_what(path)))
        elif entry.name == IMAGES and not entry.is_dir(follow_symlinks=False):
            found.append((path, "is not a folder"))
        elif entry.name != IMAGES and not entry.is_file(follow_symlinks=False):
            found.append((path, "is not a regular file"))
    folder = tub / IMAGES
    if folder.is_symlink() or not folder.is_dir():
        return found
    with os.scandir(folder) as images:
        odd = sorted(e.name for e in images if IMAGE_INDEX_RE.match(e.name)
                     and not e.is_file(follow_symlinks=False))
    for name in odd:
        path = tub / IMAGES / name
        found.append((path, link_what(path) if path.is_symlink() else "is not a regular file"))
    return found


def require_inside(tub: Path) -> None:
    """Raise ``link_error`` for the first of ``outside_files`` (saying how many more), if any."""
    found = outside_files(tub)
    if found:
        error = link_error(*found[0])
        if len(found) > 1:
            error = TubError(f"{error} (and {len(found) - 1} more like it: `car tub check "
                             f"{tub}` lists them)")
        raise error
