"""`car tub check --repair`: fix what `check_tub` found. Nothing is lost on the way.

Every removed catalog line is written to ``repair_log.jsonl`` first; broken records are
soft-deleted (restorable), never erased; images are never touched. Repairs keep line N of
the catalog stream holding index N, since donkeycar applies ``deleted_indexes`` by line
position: a line that cannot be read becomes a deleted tombstone of its position's index,
never a gap.
"""

from __future__ import annotations

import os
from pathlib import Path

from car.errors import TubError
from car.tub.appender import TubAppender
from car.tub.check import CheckReport, check_tub
from car.tub.format import (
    INDEX,
    MANIFEST,
    SESSION_ID,
    TIMESTAMP_MS,
    TOMBSTONE,
    Manifest,
    atomic_write,
    catalog_manifest_name,
    catalog_manifest_text,
    catalog_number,
    index_ranges,
    log_repair,
    read_catalog_manifest,
    record_line,
)
from car.tub.lock import TubLock
from car.tub.rebuild import rebuild_manifest
from car.tub.scan import CatalogScan, catalog_origin, latest_lines, scan_catalog, scan_tub

BROKEN_IMAGE = ("missing_image", "unreadable_image", "bad_image_field")


def check_and_repair(path: str | os.PathLike, decode: bool = True,
                     progress: bool = False) -> tuple[CheckReport, list[str]]:
    """Lock the tub, check it, repair what was found; returns the report and the changes."""
    tub = Path(path).absolute()
    if not (tub / MANIFEST).is_file() and not any(tub.glob("catalog_*.catalog")):
        raise TubError(f"{tub}: not a tub (no manifest.json and no catalog)")
    lock = TubLock(tub)  # held from the check to the end of the repair
    try:
        report = check_tub(tub, decode=decode, progress=progress)
    except BaseException:
        lock.release()
        raise
    if not report.problems:
        lock.release()
        return report, []
    return report, repair_tub(report, lock)


def repair_tub(report: CheckReport, lock: TubLock) -> list[str]:
    """Repair the tub ``report`` describes, holding its ``lock`` (checked under it too).

    Returns one line per change made. The lock is released on return.
    """
    tub = report.path
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
                                   "rebuilt manifest.json; " + "; ".join(notes or ["all of it "
                                                                                 "was readable"])))
        manifest = Manifest.read(tub)
        done += _refill_missing_catalogs(tub, manifest)
        done += _rewrite_catalogs(tub, manifest)
        manifest.write(tub)
        for catalog in scan_tub(tub, manifest).catalogs:
            done += _rewrite_catalog_manifest(catalog)
        appender = TubAppender(tub, lock=lock)  # torn tails, unlisted catalogs, next index
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
                                   f"missing or unreadable image deleted: "
                                   f"{index_ranges(broken)} (restorable)"))
    return done


def _tombstone(index: int, reason: str) -> bytes:
    return record_line({INDEX: index, SESSION_ID: "recovered", TIMESTAMP_MS: 0,
                        TOMBSTONE: reason})


def _refill_missing_catalogs(tub: Path, manifest: Manifest) -> list[str]:
    """A listed catalog that is gone becomes a catalog of deleted tombstones for its indexes."""
    done = []
    names = sorted(manifest.catalog_paths, key=lambda n: catalog_number(n) or 0)
    position = 0
    for number, name in enumerate(names):
        path = tub / name
        if path.is_file():
            position += len(scan_catalog(path, listed=True).lines)
            continue
        if path.exists():
            raise TubError(f"{path}: is not a file; move it out of the tub, then repair again")
        end = manifest.current_index
        for later in names[number + 1:]:
            if (tub / later).is_file():
                end = catalog_origin(scan_catalog(tub / later, listed=True), end)[0]
                break
        lost = list(range(position, max(position, end)))
        atomic_write(path, b"".join(_tombstone(i, "catalog missing") for i in lost))
        manifest.deleted_indexes.update(lost)
        position += len(lost)
        done.append(log_repair(tub, "refill_catalog", f"{name} was missing: rewrote it with "
                               f"deleted tombstones for indexes {index_ranges(lost)}"))
    return done


def _rewrite_catalogs(tub: Path, manifest: Manifest) -> list[str]:
    """Drop superseded duplicates; unreadable lines become tombstones of their position."""
    scan = scan_tub(tub, manifest)
    latest, pairs = latest_lines(scan.lines())
    superseded = {id(old) for old, _ in pairs}
    real = {i for i, line in latest.items() if TOMBSTONE not in line.record}  # type: ignore[operator]
    tombstones = {i for i, line in latest.items() if i not in real}
    done = []
    position = 0
    for catalog in scan.catalogs:
        data = catalog.path.read_bytes()
        out = bytearray()
        changed = False
        for line in catalog.lines:
            raw = data[line.offset:line.offset + line.length]
            where = f"{catalog.name} line {line.number}"
            if id(line) in superseded:
                done.append(log_repair(tub, "drop_superseded", f"{where}: removed index "
                                       f"{line.record[INDEX]}, written again later", raw))  # type: ignore[index]
                changed = True
                continue
            if line.record is None:
                changed = True
                if position in real:  # the stream is out of step here; do not guess
                    done.append(log_repair(tub, "drop_line", f"{where}: {line.error}; removed",
                                           raw))
                    continue
                out += _tombstone(position, line.error or "unreadable")
                tombstones.add(position)
                done.append(log_repair(tub, "tombstone_line", f"{where}: {line.error}; "
                                       f"replaced by a deleted tombstone of index {position}",
                                       raw))
            else:
                out += raw
            position += 1
        if changed:
            atomic_write(catalog.path, bytes(out) + data[catalog.good_length:])
    if tombstones - manifest.deleted_indexes:
        done.append(log_repair(tub, "delete_tombstones", "marked tombstones deleted: "
                               + index_ranges(sorted(tombstones - manifest.deleted_indexes))))
        manifest.deleted_indexes |= tombstones
    return done


def _rewrite_catalog_manifest(catalog: CatalogScan) -> list[str]:
    path = catalog.path.with_name(catalog_manifest_name(catalog.name))
    lengths = [line.length for line in catalog.lines]
    meta = read_catalog_manifest(path)
    if meta is not None and meta.get("line_lengths") == lengths:
        return []
    start, created_at = catalog_origin(catalog, default_start=0)
    atomic_write(path, catalog_manifest_text(catalog.name, created_at, start, lengths))
    return [f"rewrote {path.name}"]
