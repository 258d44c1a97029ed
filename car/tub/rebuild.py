"""Rebuilding a torn ``manifest.json`` from what survives of it and from the catalogs.

donkeycar rewrites its manifest in place after every record (truncate, then write), so a
crash often leaves it with 4 of its 5 lines and the tub will not open. Each line that still
parses is kept; inputs and types missing with it are inferred from the records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from car.errors import TubError
from car.tub.format import (
    DEFAULT_MAX_LEN,
    IMAGE_TYPES,
    INDEX,
    MANIFEST,
    TOMBSTONE,
    TYPES,
    Manifest,
)
from car.tub.scan import catalog_files, scan_catalog


def _manifest_lines(tub: Path) -> list[str]:
    try:
        text = (tub / MANIFEST).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    return [line for line in text.splitlines() if line.strip()]


def _salvage_deleted(line: str) -> set[int]:
    """The whole numbers of a torn line 5's ``deleted_indexes`` (the last one may be cut)."""
    _, found, rest = line.partition('"deleted_indexes": [')
    if not found:
        return set()
    listed, closed, _ = rest.partition("]")
    items = [item.strip() for item in listed.split(",")]
    if not closed:
        items = items[:-1]  # cut mid-number: "63" may read as "6"
    return {int(item) for item in items if item.isdigit()}


def _salvage_lines(tub: Path) -> list[Any]:
    """The manifest's lines that still parse, None for the others (always 5 items)."""
    lines = _manifest_lines(tub)
    out: list[Any] = []
    for number, kind in enumerate((list, list, dict, dict, dict)):
        try:
            value = json.loads(lines[number])
        except (IndexError, json.JSONDecodeError):
            value = None
        out.append(value if isinstance(value, kind) else None)
    return out


def _int(table: dict[str, Any] | None, key: str) -> int:
    """A positive whole number from the table, else 0."""
    value = (table or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _valid(inputs: Any, types: Any) -> bool:
    return (isinstance(inputs, list) and isinstance(types, list) and len(inputs) == len(types)
            and all(isinstance(i, str) for i in inputs) and all(t in TYPES for t in types))


def _infer_type(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "boolean"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "float"
    if all(isinstance(v, list) for v in values):
        return "list"
    if all(isinstance(v, str) for v in values):
        for type_name, ext in IMAGE_TYPES.items():
            if all(v.endswith("_" + ext) for v in values):
                return type_name
        return "str"
    return "str"


def rebuild_manifest(tub: Path) -> tuple[Manifest, list[str]]:
    """A manifest for ``tub`` from what is on disk, and notes on what could not be recovered."""
    inputs, types, metadata, manifest_metadata, catalogs = _salvage_lines(tub)
    notes: list[str] = []
    stub = Manifest(inputs=[], types=[])
    names = [name for name, _ in catalog_files(tub, stub)[0]]
    scans = [scan_catalog(tub / name, listed=False) for name in names]
    records = [line.record for scan in scans for line in scan.lines if line.record]
    if metadata and _valid(metadata.get("inputs"), metadata.get("types")) \
            and not _valid(inputs, types):  # the 2020 variant repeats them on line 3
        inputs, types = metadata["inputs"], metadata["types"]
    if not _valid(inputs, types):
        if not records:
            raise TubError(f"{tub / MANIFEST}: unreadable, and there is no record to rebuild "
                           "it from; this tub holds nothing")
        values: dict[str, list[Any]] = {}
        for record in records:
            for key, value in record.items():
                if not key.startswith("_"):
                    values.setdefault(key, []).append(value)
        inputs = list(values)
        types = [_infer_type(v) for v in values.values()]
        notes.append(f"inputs and types inferred from the records: "
                     f"{', '.join(f'{i}:{t}' for i, t in zip(inputs, types))}")
    deleted: set[int] = set()
    max_len = DEFAULT_MAX_LEN
    deleted |= {r[INDEX] for r in records if TOMBSTONE in r}
    if catalogs is not None and isinstance(catalogs.get("deleted_indexes"), list):
        deleted |= {i for i in catalogs["deleted_indexes"]
                    if isinstance(i, int) and not isinstance(i, bool) and i >= 0}
        max_len = _int(catalogs, "max_len") or DEFAULT_MAX_LEN
    else:
        lines = _manifest_lines(tub)
        salvaged = _salvage_deleted(lines[4]) if len(lines) > 4 else set()
        deleted |= salvaged
        torn = f"torn ({len(salvaged)} of its indexes could still be read)" if len(lines) > 4 \
            else "lost"
        notes.append(f"the list of deleted records was {torn} with the manifest's last line; "
                     "other deleted records are live again")
        if len(scans) > 1 and scans[0].lines:
            max_len = len(scans[0].lines)
    manifest = Manifest(
        inputs=list(inputs or []),
        types=list(types or []),
        metadata=metadata or {},
        manifest_metadata=manifest_metadata or {},
        catalog_paths=names,
        current_index=max([r[INDEX] + 1 for r in records] + [_int(catalogs, "current_index")]),
        max_len=max_len,
        deleted_indexes=deleted,
    )
    return manifest, notes
