"""`car tub check --repair`: fix what `check_tub` found. Nothing is lost on the way.

Every removed catalog line, and a manifest that is rebuilt, goes to ``repair_log.jsonl``
first; broken records are soft-deleted (restorable), never erased; images are never touched.
The catalogs are rewritten by the stream plan (car/tub/stream.py), which keeps line N holding
index N, since donkeycar applies ``deleted_indexes`` by line position.
"""

from __future__ import annotations

import os
from pathlib import Path

from car.errors import TubError
from car.tub.appender import TubAppender
from car.tub.check import CheckReport, check_tub
from car.tub.files import atomic_write, temp_name
from car.tub.format import (
    MANIFEST,
    Manifest,
    catalog_manifest_name,
    catalog_manifest_text,
    catalog_number,
    index_ranges,
    log_repair,
    read_catalog_manifest,
)
from car.tub.lock import TubLock
from car.tub.rebuild import rebuild_manifest
from car.tub.scan import CatalogScan, catalog_origin, require_inside, scan_tub
from car.tub.stream import plan_stream

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
        require_inside(tub)  # a repair never writes through a link out of the tub
        if not report.manifest_ok:
            old = _read_or_empty(tub / MANIFEST)
            manifest, notes = rebuild_manifest(tub)
            log_repair(tub, "old_manifest", "the manifest.json that was rebuilt", old)
            manifest.write(tub)
            done.append(log_repair(tub, "rebuild_manifest", "rebuilt manifest.json; "
                                   + "; ".join(notes or ["every line of it was readable"])))
        manifest = Manifest.read(tub)
        done += _rewrite_stream(tub, manifest)
        manifest.write(tub)  # also puts the manifest in donkeycar's exact form
        for catalog in scan_tub(tub, manifest).catalogs:
            done += _rewrite_catalog_manifest(catalog)
        appender = TubAppender(tub, lock=lock)  # leftovers, a torn tail, the next index
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


def _read_or_empty(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _rewrite_stream(tub: Path, manifest: Manifest) -> list[str]:
    """Apply the stream plan: line N holds index N, no listed catalog is empty."""
    scan = scan_tub(tub, manifest)
    plan = plan_stream(scan)
    if plan is None:
        return []  # records out of order: check reports it as not repairable
    done = [log_repair(tub, "remove_line", f"{where}: {why}", data)
            for where, why, data in plan.removed]
    # In stream order: a record moved to an earlier slot is written there before it is
    # taken from its later one, so a failure in between (a full disk) loses no record.
    for name in sorted(plan.changed, key=lambda n: catalog_number(n) or 0):
        path = tub / name
        if path.exists() and not path.is_file():
            raise TubError(f"{path}: is not a file; move it out of the tub, then repair again")
        atomic_write(path, plan.content[name])
        done.append(f"rewrote {name}")
    listed = [name for name, content in plan.content.items() if content]
    if listed != manifest.catalog_paths:
        done.append(log_repair(tub, "list_catalogs", f"catalogs listed as {listed} (were "
                               f"{manifest.catalog_paths})"))
        manifest.catalog_paths = listed
    new = set(plan.tombstones) - manifest.deleted_indexes  # older ones: the writer's open
    if new:
        done.append(log_repair(tub, "delete_tombstones", "marked tombstones deleted: "
                               + index_ranges(sorted(new))))
        manifest.deleted_indexes |= new
    return done


def _rewrite_catalog_manifest(catalog: CatalogScan) -> list[str]:
    path = catalog.path.with_name(catalog_manifest_name(catalog.name))
    lengths = [line.length for line in catalog.lines]
    meta = read_catalog_manifest(path)
    if meta is not None and meta.get("line_lengths") == lengths:
        return []
    start, created_at = catalog_origin(catalog, default_start=0)
    atomic_write(path, catalog_manifest_text(catalog.name, created_at, start, lengths))
    temp_name(path).unlink(missing_ok=True)
    return [f"rewrote {path.name}"]
