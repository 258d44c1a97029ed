"""`car tub check --repair`: fix what `check_tub` found. Nothing is lost on the way.

Every removed catalog line is written to ``repair_log.jsonl`` first; broken records are
soft-deleted (restorable), never erased; images are never touched.
"""

from __future__ import annotations

import time
from pathlib import Path

from car.tub.appender import TubAppender
from car.tub.check import CheckReport
from car.tub.format import (
    INDEX,
    SESSION_ID,
    TIMESTAMP_MS,
    TOMBSTONE,
    Manifest,
    atomic_write,
    catalog_manifest_name,
    catalog_manifest_text,
    log_repair,
    read_catalog_manifest,
    record_line,
)
from car.tub.lock import TubLock
from car.tub.rebuild import rebuild_manifest
from car.tub.scan import CatalogScan, scan_tub

BROKEN_IMAGE = ("missing_image", "unreadable_image", "bad_image_field")


def repair_tub(report: CheckReport) -> list[str]:
    """Repair the tub ``report`` describes; returns one line per change made."""
    tub = report.path
    lock = TubLock(tub)
    done: list[str] = []
    try:
        for problem in report.problems:
            if problem.kind == "temp_file":
                (tub / problem.where).unlink(missing_ok=True)
                done.append(f"removed {problem.where}")
        if not report.manifest_ok:
            manifest, notes = rebuild_manifest(tub)
            manifest.write(tub)
            done.append(log_repair(tub, "rebuild_manifest",
                                   "rebuilt manifest.json from the catalogs; " + "; ".join(notes)))
        manifest = Manifest.read(tub)
        if report.scan.missing_catalogs:
            manifest.catalog_paths = [p for p in manifest.catalog_paths
                                      if p not in report.scan.missing_catalogs]
            manifest.write(tub)
            done.append(log_repair(tub, "unlist_catalog", "stopped listing missing catalogs "
                                   + ", ".join(report.scan.missing_catalogs)))
        scan = scan_tub(tub, manifest)
        superseded = _superseded_lines(scan.catalogs)
        for catalog in scan.catalogs:
            done += _rewrite_catalog(tub, catalog, superseded, manifest)
        manifest.write(tub)
        for catalog in scan_tub(tub, manifest).catalogs:
            done += _rewrite_catalog_manifest(catalog)
        appender = TubAppender(tub, lock=lock)
    except BaseException:
        lock.release()
        raise
    with appender:
        done += appender.repairs
        broken = sorted({p.index for p in report.problems
                         if p.kind in BROKEN_IMAGE and p.index is not None})
        if broken:
            appender.delete(broken)
            done.append(log_repair(tub, "delete_broken", f"marked {len(broken)} record(s) with a "
                                   f"missing or unreadable image deleted: {_ranges(broken)} "
                                   "(restorable with `car tub restore`)"))
    return done


def _superseded_lines(catalogs: list[CatalogScan]) -> set[tuple[str, int]]:
    """(catalog, line) of every record that a later line of the same index replaced."""
    latest: dict[int, tuple[str, int]] = {}
    superseded = set()
    for catalog in catalogs:
        for line in catalog.lines:
            if line.record is not None:
                index = line.record[INDEX]
                if index in latest:
                    superseded.add(latest[index])
                latest[index] = (catalog.name, line.number)
    return superseded


def _rewrite_catalog(tub: Path, catalog: CatalogScan, superseded: set[tuple[str, int]],
                     manifest: Manifest) -> list[str]:
    """Drop bad and superseded lines; a bad line whose index is certain becomes a tombstone."""
    if not any(line.error or (catalog.name, line.number) in superseded
               for line in catalog.lines):
        return []
    data = catalog.path.read_bytes()
    out = bytearray()
    done = []
    lines = catalog.lines
    for position, line in enumerate(lines):
        raw = data[line.offset:line.offset + line.length]
        where = f"{catalog.name} line {line.number}"
        if line.record is not None and (catalog.name, line.number) not in superseded:
            out += raw
            continue
        if line.record is not None:
            done.append(log_repair(tub, "drop_superseded", f"{where}: removed index "
                                   f"{line.record[INDEX]}, written again later", raw))
            continue
        before = _neighbour_index(lines[position - 1::-1] if position else [])
        after = _neighbour_index(lines[position + 1:])
        if before is not None and after is not None and after - before == 2:
            index = before + 1
            out += record_line({INDEX: index, SESSION_ID: "recovered",
                                TIMESTAMP_MS: 0, TOMBSTONE: line.error})
            manifest.deleted_indexes.add(index)
            done.append(log_repair(tub, "tombstone_line", f"{where}: {line.error}; replaced "
                                   f"by a deleted tombstone of index {index}", raw))
        else:
            done.append(log_repair(tub, "drop_line", f"{where}: {line.error}; removed", raw))
    out += data[catalog.good_length:]  # a torn tail is left for the appender to handle
    atomic_write(catalog.path, bytes(out))
    return done


def _neighbour_index(lines: object) -> int | None:
    for line in lines:  # type: ignore[attr-defined]
        if line.record is not None:
            return int(line.record[INDEX])
    return None


def _rewrite_catalog_manifest(catalog: CatalogScan) -> list[str]:
    path = catalog.path.with_name(catalog_manifest_name(catalog.name))
    meta = read_catalog_manifest(path) or {}
    lengths = [line.length for line in catalog.lines]
    if meta.get("line_lengths") == lengths:
        return []
    first = next((line.record for line in catalog.lines if line.record), None)
    start = first[INDEX] if first else int(meta.get("start_index", 0))
    created_at = float(meta.get("created_at", time.time()))
    atomic_write(path, catalog_manifest_text(catalog.name, created_at, start, lengths))
    return [f"rewrote {path.name}"]


def _ranges(indexes: list[int]) -> str:
    """``[1, 2, 3, 7]`` as ``1..3, 7``."""
    parts = []
    start = prev = indexes[0]
    for i in [*indexes[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(f"{start}..{prev}" if prev > start else str(start))
        if i is not None:
            start = prev = i
    return ", ".join(parts)
