"""`car tub check`: find everything wrong with a tub, without changing a byte of it."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from car.tub import images
from car.tub.files import FIX_LINK
from car.tub.format import (
    IMAGE_TYPES,
    IMAGES,
    INDEX,
    TOMBSTONE,
    Manifest,
    ManifestError,
    catalog_manifest_name,
    is_temp_file,
    read_catalog_manifest,
    slices,
)
from car.tub.rebuild import rebuild_manifest
from car.tub.scan import TubScan, image_files, latest_lines, outside_files, scan_tub
from car.tub.stream import plan_stream

MAX_LOST = 1000  # more indexes than this between the last record and an image: a stray file
BAD_LINE_FIX = ("a deleted tombstone takes its index, or it goes if it is one line too many "
                "(kept in repair_log.jsonl either way)")


@dataclass(frozen=True)
class Problem:
    kind: str  # a stable name, e.g. "torn_line", "missing_image"
    where: str  # file, and line or record
    what: str
    fix: str | None  # what --repair does about it; None if it cannot
    index: int | None = None  # the record concerned, if one
    advice: str | None = None  # what a person can do about it, when --repair cannot


@dataclass
class CheckReport:
    path: Path
    scan: TubScan
    manifest_ok: bool
    problems: list[Problem] = field(default_factory=list)
    images_checked: int = 0

    @property
    def repairable(self) -> list[Problem]:
        return [p for p in self.problems if p.fix]

    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}


def check_tub(path: str | os.PathLike, decode: bool = True, progress: bool = False) -> CheckReport:
    """Report every defect of the tub at ``path``. ``decode`` decodes every image too."""
    tub = Path(path).absolute()
    problems: list[Problem] = []
    try:
        manifest = Manifest.read(tub)
        manifest_ok = True
    except ManifestError as exc:
        if not exc.repairable:
            raise
        manifest, _ = rebuild_manifest(tub)  # raises when there is nothing to rebuild from
        manifest_ok = False
        problems.append(Problem("bad_manifest", "manifest.json",
                                exc.detail.removeprefix("manifest.json").lstrip(": "),
                                "rebuild it from what still parses and from the catalogs"))
    scan = scan_tub(tub, manifest)
    report = CheckReport(tub, scan, manifest_ok, problems)
    problems += structure_problems(scan, manifest_ok)
    problems += _image_problems(report, decode, progress)
    problems += value_problems(scan)
    problems += [Problem("outside_file", str(where.relative_to(tub)), f"{what} (a tub's files "
                         "must be regular files inside it; no writer or repair will touch this "
                         "tub)", None, advice=FIX_LINK if what.startswith("is a symlink")
                         else "move it out of the tub")
                 for where, what in outside_files(tub)]
    problems += [Problem("temp_file", name, "a temp file a crash left", "finish the update it "
                         "holds if whole, else remove it (kept in repair_log.jsonl)")
                 for name in temp_files(tub)]
    if manifest.quirks:
        problems.append(Problem("nonstandard_manifest", "manifest.json",
                                "; ".join(manifest.quirks) + " (donkeycar may not read it)",
                                "rewrite it in donkeycar's form"))
    return report


def structure_problems(scan: TubScan, manifest_ok: bool = True) -> list[Problem]:
    """The cheap checks: catalogs, lines and indexes (no image is opened)."""
    return [*_catalog_problems(scan), *_index_problems(scan, manifest_ok)]


def _catalog_problems(scan: TubScan) -> Iterable[Problem]:
    for name in scan.missing_catalogs:
        yield Problem("missing_catalog", name, "listed in manifest.json but missing; its "
                      "records are lost", "put deleted tombstones in its lines' place")
    last = scan.catalogs[-1].name if scan.catalogs else None
    for catalog in scan.catalogs:
        if not catalog.listed and catalog.lines:
            yield Problem("unlisted_catalog", catalog.name, "not listed in manifest.json "
                          "(a crash came before the manifest update)", "list it")
        if catalog.listed and not catalog.lines and not catalog.torn_tail:
            yield Problem("empty_catalog", catalog.name, "listed but empty (donkeycar cannot "
                          "open a tub with an empty catalog)", "stop listing it")
        for line in catalog.lines:
            if line.error:
                yield Problem("bad_line", f"{catalog.name} line {line.number}", line.error,
                              BAD_LINE_FIX)
        if catalog.torn_tail:
            yield Problem("torn_line", f"{catalog.name} line {len(catalog.lines) + 1}",
                          f"torn last line ({len(catalog.torn_tail)} bytes; a crash while "
                          "writing)", "remove it (kept in repair_log.jsonl)"
                          if catalog.name == last else BAD_LINE_FIX)
        if catalog.missing_newline:
            yield Problem("missing_newline", f"{catalog.name} line {len(catalog.lines)}",
                          "last line has no newline", "add it")
        meta = read_catalog_manifest(catalog.path.with_name(catalog_manifest_name(catalog.name)))
        lengths = [line.length for line in catalog.lines]
        if lengths and (meta is None or meta.get("line_lengths") != lengths):
            yield Problem("stale_catalog_manifest", catalog_manifest_name(catalog.name),
                          "missing, or its line lengths do not match the catalog", "rewrite it")


def _index_problems(scan: TubScan, manifest_ok: bool) -> Iterable[Problem]:
    latest, pairs = latest_lines(scan.lines())
    for old, new in pairs:
        yield Problem("duplicate_index", f"{old.catalog} line {old.number}",
                      f"index {old.fields[INDEX]} is written again at {new.catalog} line "
                      f"{new.number} (a crashed donkeycar session reused it)",
                      "the newest copy (whose image is on disk) takes the first slot; the "
                      "other goes to repair_log.jsonl", old.fields[INDEX])
    misplaced = None if scan.missing_catalogs else _first_misplaced(scan)
    if misplaced:
        where, index, position = misplaced
        fixable = plan_stream(scan) is not None
        yield Problem("index_mismatch", where, f"holds index {index} where {position} belongs; "
                      "donkeycar would apply deletions to the wrong records",
                      "rebuild the catalog stream so that line N holds index N" if fixable
                      else None, index)
    deleted = scan.manifest.deleted_indexes
    loose = sorted(i for i, line in latest.items()
                   if TOMBSTONE in line.fields and i not in deleted)
    if loose:
        yield Problem("tombstone_not_deleted", "manifest.json",
                      f"{len(loose)} tombstone(s) of lost records are not marked deleted "
                      f"(first: {loose[0]}); donkeycar would read them", "mark them deleted")
    last = scan.max_record_index
    if manifest_ok and scan.manifest.current_index < last + 1:
        yield Problem("stale_manifest", "manifest.json",
                      f"current_index is {scan.manifest.current_index} but records reach "
                      f"{last}; a writer would reuse indexes", "set it to the next free index")
    orphans = sorted(i for i in image_files(scan.path) if i > last)
    if orphans and orphans[-1] - last > MAX_LOST:
        yield Problem("stray_image", f"{IMAGES}/ (index {orphans[-1]})",
                      f"an image far past the last record ({last}); not from a crash",
                      None, orphans[-1])
    elif orphans:
        yield Problem("orphan_image", f"{IMAGES}/ (indexes {orphans[0]}..{orphans[-1]})",
                      f"{len(orphans)} image index(es) past the last record (a crash came "
                      "before their catalog lines)", "keep their indexes as deleted tombstones")


def _first_misplaced(scan: TubScan) -> tuple[str, int, int] | None:
    """The first line whose index is not its position, repeated indexes left out."""
    position = 0
    seen: set[int] = set()
    last = scan.catalogs[-1].name if scan.catalogs else None
    for catalog in scan.catalogs:
        for line in catalog.lines:
            if line.record is not None and line.record[INDEX] in seen:
                continue  # a repeated index: repair keeps its first slot
            if line.record is not None:
                seen.add(line.record[INDEX])
            if line.record is not None and line.record[INDEX] != position:
                return f"{line.catalog} line {line.number}", line.record[INDEX], position
            position += 1
        if catalog.torn_tail and catalog.name != last:
            position += 1  # donkeycar reads a torn line in the middle as one (bad) record
    return None


def _image_problems(report: CheckReport, decode: bool, progress: bool) -> list[Problem]:
    manifest = report.scan.manifest
    keys = [(k, t) for k, t in manifest.input_types.items() if t in IMAGE_TYPES]
    if not keys:
        return []
    latest, _ = latest_lines(report.scan.lines())
    records = [line.fields for i, line in latest.items()
               if TOMBSTONE not in line.fields and i not in manifest.deleted_indexes]
    problems = []
    for record in tqdm(records, desc="checking images", unit="rec", disable=not progress,
                       leave=False):
        for key, type_name in keys:
            problem = _image_problem(report.path, record, key, type_name, decode)
            report.images_checked += 1
            if problem:
                problems.append(problem)
    return problems


def _image_problem(tub: Path, record: dict[str, Any], key: str, type_name: str,
                   decode: bool) -> Problem | None:
    index = record[INDEX]
    name = record.get(key)
    if name is None:
        return None  # the field was not recorded for this record (donkeycar allows that)
    fix = "mark the record deleted (restorable)"
    where = f"{IMAGES}/{name}"
    if not isinstance(name, str) or "/" in name or name.startswith("."):
        return Problem("bad_image_field", f"record {index}", f"'{key}' is not a file name",
                       fix, index)
    try:
        data = (tub / IMAGES / name).read_bytes()
    except FileNotFoundError:
        return Problem("missing_image", where, f"image of record {index} is missing", fix, index)
    except OSError as exc:
        return Problem("unreadable_image", where, f"cannot read: {exc}", fix, index)
    defect = images.defect(data, type_name)
    if defect is None and decode and images.decode(data, type_name) is None:
        defect = "cannot be decoded"
    if defect:
        return Problem("unreadable_image", where, f"image of record {index}: {defect}", fix,
                       index)
    return None


def temp_files(tub: Path) -> list[str]:
    """Temp files ``atomic_write`` left behind (never anyone else's ``.tmp``)."""
    return sorted(p.name for p in tub.glob("*.tmp") if is_temp_file(p.name))


def value_problems(scan: TubScan, show: int = 5) -> list[Problem]:
    """Live records whose values training cannot use: NaN or infinity in any field, or a
    non-number in a float or int field. One problem per field and kind; the records are
    fine for donkeycar to read, so they are reported with the `car tub delete` that drops
    them, not repaired."""
    types = scan.manifest.input_types
    latest, _ = latest_lines(scan.lines())
    found: dict[tuple[str, str], list[int]] = {}
    for index, line in sorted(latest.items()):
        if TOMBSTONE in line.fields or index in scan.manifest.deleted_indexes:
            continue
        for key, value in line.fields.items():
            if key.startswith("_") or value is None:
                continue
            if not _finite(value):
                found.setdefault((key, "NaN or infinity"), []).append(index)
            elif types.get(key) in ("float", "int") and (
                    isinstance(value, bool) or not isinstance(value, (int, float))):
                found.setdefault((key, f"not a number (its type is {types[key]})"),
                                 []).append(index)
    problems = []
    for (key, what), indexes in found.items():
        first = ", ".join(map(str, indexes[:show])) + (", ..." if len(indexes) > show else "")
        runs = slices(indexes)
        more = f" (the first 10 of {len(runs)} ranges)" if len(runs) > 10 else ""
        problems.append(Problem(
            "non_finite_value" if what.startswith("NaN") else "non_number_value",
            f"field '{key}'", f"{what} in {len(indexes)} live record(s): {first}; training "
            "leaves them out", None, indexes[0],
            advice=f"to drop them, run: car tub delete {scan.path} {' '.join(runs[:10])}{more}"))
    return problems


def _finite(value: Any) -> bool:
    """False for a float NaN or infinity, or a list holding one (at any depth)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(item) for item in value)
    return True
