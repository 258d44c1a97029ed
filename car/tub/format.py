"""The donkeycar tub v2 on-disk format: file names, the 5-line manifest, and value types.

A tub is a folder::

    manifest.json               5 JSON lines: inputs, types, user metadata,
                                manifest metadata (created_at, sessions), catalog metadata
                                (paths, current_index, max_len, deleted_indexes)
    catalog_N.catalog           one JSON record per line, ``json.dumps(sort_keys=True)``
    catalog_N.catalog_manifest  one JSON line: created_at, line_lengths, path, start_index
    images/{index}_{key}_.jpg   one file per image field ('/' in the key becomes '_')

Every record carries ``_index``, ``_timestamp_ms`` (wall clock when it was written) and
``_session_id``. This project adds ``_capture_timestamp_ms``: the wall-clock time at which
the camera captured the frame, in milliseconds as a float. Records of an index that a crash
left unrecoverable are written as tombstones (``_tombstone``: the reason) and are always in
``deleted_indexes``, so that line N of the catalog stream always holds ``_index`` N, as
donkeycar's reader assumes.

The 2020 variant (the shared real tub) has ``{"types", "inputs", "start"}`` as line 3, no
sessions and no ``_session_id``; it reads the same way.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from car.errors import TubError
from car.tub.files import append, atomic_write, fsync_dir, link_error

MANIFEST = "manifest.json"
IMAGES = "images"
LOCK = ".car-tub.lock"
REPAIR_LOG = "repair_log.jsonl"
DEFAULT_MAX_LEN = 1000

INDEX = "_index"
TIMESTAMP_MS = "_timestamp_ms"
SESSION_ID = "_session_id"
CAPTURE_MS = "_capture_timestamp_ms"
TOMBSTONE = "_tombstone"

SCALAR_TYPES = ("float", "int", "str", "boolean", "nparray", "list", "vector")
IMAGE_TYPES = {"image_array": ".jpg", "gray16_array": ".png"}
TYPES = SCALAR_TYPES + tuple(IMAGE_TYPES)

CATALOG_RE = re.compile(r"^catalog_(\d+)\.catalog$")
IMAGE_INDEX_RE = re.compile(r"^(\d+)_.*_\.(?:jpg|png)$")


def image_file_name(index: int, key: str, type_name: str = "image_array") -> str:
    """donkeycar's image name: ``{index}_{key with '/' as '_'}_.jpg`` (``.png`` for gray16)."""
    return f"{index}_{key.replace('/', '_')}_{IMAGE_TYPES[type_name]}"


def catalog_name(number: int) -> str:
    return f"catalog_{number}.catalog"


def catalog_manifest_name(catalog: str) -> str:
    return catalog.removesuffix(".catalog") + ".catalog_manifest"


def catalog_number(name: str) -> int | None:
    match = CATALOG_RE.match(name)
    return int(match.group(1)) if match else None


def session_number(session_id: Any) -> int | None:
    """The N of a donkeycar session id ``YY-MM-DD_N``, or None."""
    if not isinstance(session_id, str):
        return None
    tail = session_id.rpartition("_")[2]
    return int(tail) if tail.isdigit() else None


def record_line(record: dict[str, Any]) -> bytes:
    """One catalog line, byte-for-byte as donkeycar writes it (ASCII JSON, sorted keys)."""
    return (json.dumps(record, allow_nan=False, sort_keys=True) + "\n").encode("ascii")


class ManifestError(TubError):
    """A manifest.json that cannot be used. ``repairable``: crash damage that
    `car tub check --repair` can rebuild from the catalogs."""

    def __init__(self, message: str, repairable: bool = False):
        hint = "; run `car tub check --repair` to rebuild it from the catalogs"
        super().__init__(message + (hint if repairable else ""))
        at = message.find(MANIFEST)
        self.detail = message[at:] if at >= 0 else message  # no folder, no advice
        self.repairable = repairable


@dataclass
class Manifest:
    """The five lines of ``manifest.json``."""

    inputs: list[str]
    types: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)
    manifest_metadata: dict[str, Any] = field(default_factory=dict)
    catalog_paths: list[str] = field(default_factory=list)
    current_index: int = 0
    max_len: int = DEFAULT_MAX_LEN
    deleted_indexes: set[int] = field(default_factory=set)
    quirks: list[str] = field(default_factory=list, compare=False)  # read, not donkeycar's form

    @property
    def legacy(self) -> bool:
        """True for the 2020 variant, whose line 3 repeats inputs and types."""
        return "inputs" in self.metadata and "types" in self.metadata

    @property
    def input_types(self) -> dict[str, str]:
        return dict(zip(self.inputs, self.types))

    @property
    def sessions(self) -> dict[str, Any]:
        return self.manifest_metadata.get("sessions") or {}

    @classmethod
    def read(cls, tub: Path) -> Manifest:
        """Parse ``tub/manifest.json``; any defect is a TubError naming the file and line."""
        path = tub / MANIFEST
        if not tub.is_dir():
            raise TubError(f"{tub}: not a folder; a tub is a folder with a manifest.json")
        if not path.is_file():
            if any(tub.glob("catalog_*.catalog")):
                raise ManifestError(f"{path}: missing", repairable=True)
            raise TubError(
                f"{tub}: not a tub (no manifest.json); give the folder written by `car record` "
                "or donkeycar"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{path}: not text ({exc.reason})", repairable=True) from None
        except OSError as exc:
            raise TubError(f"{path}: cannot read: {exc}") from None
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, path: Path) -> Manifest:
        """Parse a manifest's text; ``path`` names it in errors."""
        lines = [line for line in text.splitlines() if line.strip()]
        quirks = []
        if len(lines) != len(text.splitlines()):
            quirks.append("blank lines")
        if len(lines) < 5:
            raise ManifestError(f"{path}: has {len(lines)} of its 5 lines (torn by a crash?)",
                                repairable=True)
        parsed = []
        for number, line in enumerate(lines[:5], start=1):
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{path} line {number}: not JSON ({exc.msg})",
                                    repairable=True) from None
        inputs, types, metadata, manifest_metadata, catalogs = parsed
        expect = [(1, inputs, list), (2, types, list), (3, metadata, dict),
                  (4, manifest_metadata, dict), (5, catalogs, dict)]
        for number, value, kind in expect:
            if not isinstance(value, kind):
                raise ManifestError(f"{path} line {number}: expected a JSON {kind.__name__}",
                                    repairable=True)
        if len(inputs) != len(types) or not all(isinstance(x, str) for x in inputs + types):
            raise ManifestError(f"{path}: lines 1 and 2 must be lists of input names and "
                                "type names of one length; fix them by hand")
        for name, type_name in zip(inputs, types):
            if type_name not in TYPES:
                raise ManifestError(
                    f"{path} line 2: unknown type '{type_name}' of input '{name}'; "
                    f"known types: {', '.join(TYPES)}"
                )
        for key in ("max_len", "deleted_indexes"):
            if key not in catalogs:
                quirks.append(f"line 5 has no {key}")
        try:
            raw_deleted = catalogs.get("deleted_indexes", [])
            deleted = {int(i) for i in raw_deleted if isinstance(i, (int, float))
                       and not isinstance(i, bool) and float(i).is_integer() and i >= 0}
            if len(deleted) != len(raw_deleted):
                quirks.append("deleted_indexes holds other than whole numbers, or repeats")
            if not isinstance(catalogs["paths"], list):
                raise TypeError("paths must be a list")
            manifest = cls(
                inputs=inputs,
                types=types,
                metadata=metadata,
                manifest_metadata=manifest_metadata,
                catalog_paths=[str(p) for p in catalogs["paths"]],
                current_index=int(catalogs["current_index"]),
                max_len=int(catalogs.get("max_len", DEFAULT_MAX_LEN)),
                deleted_indexes=deleted,
                quirks=quirks,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{path} line 5: bad catalog metadata ({exc!r})",
                                repairable=True) from None
        if manifest.max_len < 1:
            raise ManifestError(f"{path} line 5: max_len must be positive", repairable=True)
        for name in manifest.catalog_paths:
            if catalog_number(name) is None:
                raise ManifestError(f"{path} line 5: '{name}' is not a catalog name "
                                    "(catalog_N.catalog)", repairable=True)
        paths = manifest.catalog_paths
        if paths != sorted(set(paths), key=lambda n: catalog_number(n) or 0):
            quirks.append("catalog paths out of order or repeated")
        return manifest

    def mark(self, indexes: Iterable[int], deleted: bool,
             protected: Iterable[int] = ()) -> list[int]:
        """Add indexes to (or take them from) ``deleted_indexes``; returns those changed.

        ``protected`` indexes (tombstones) are never taken out.
        """
        wanted = set(indexes)
        if deleted:
            changed = sorted(wanted - self.deleted_indexes)
            self.deleted_indexes.update(changed)
        else:
            changed = sorted((wanted & self.deleted_indexes) - set(protected))
            self.deleted_indexes.difference_update(changed)
        return changed

    def catalog_metadata(self) -> dict[str, Any]:
        return {
            "paths": self.catalog_paths,
            "current_index": self.current_index,
            "max_len": self.max_len,
            "deleted_indexes": sorted(self.deleted_indexes),
        }

    def text(self) -> str:
        lines = [self.inputs, self.types, self.metadata, self.manifest_metadata,
                 self.catalog_metadata()]
        return "".join(json.dumps(line) + "\n" for line in lines)

    def write(self, tub: Path) -> None:
        """Replace ``manifest.json`` atomically: a crash leaves the old or the new one."""
        atomic_write(tub / MANIFEST, self.text().encode("utf-8"))


def catalog_manifest_text(catalog: str, created_at: float, start_index: int,
                          line_lengths: list[int]) -> bytes:
    """The one line of ``catalog_N.catalog_manifest`` as donkeycar writes it."""
    content = {
        "created_at": created_at,
        "line_lengths": line_lengths,
        "path": catalog_manifest_name(catalog),
        "start_index": start_index,
    }
    return (json.dumps(content, allow_nan=False, sort_keys=True) + "\n").encode("ascii")


def read_catalog_manifest(path: Path) -> dict[str, Any] | None:
    """The catalog manifest's content, or None if it is missing or unreadable."""
    try:
        content = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    except (OSError, UnicodeDecodeError, IndexError, json.JSONDecodeError):
        return None
    return content if isinstance(content, dict) else None


def is_temp_file(name: str) -> bool:
    """True for the temp files ``atomic_write`` leaves if killed (and only for those)."""
    return name.endswith(".tmp") and _is_data_file(name.removesuffix(".tmp"))


def is_tub_file(name: str) -> bool:
    """True for the names of a tub's own files in its folder (images/ aside)."""
    return name in (REPAIR_LOG, LOCK) or _is_data_file(name) or is_temp_file(name)


def _is_data_file(name: str) -> bool:
    """The manifest, a catalog or a catalog's manifest."""
    return (name == MANIFEST or catalog_number(name) is not None
            or catalog_number(name.removesuffix("_manifest")) is not None)


def log_repair(tub: Path, action: str, detail: str, data: bytes | None = None) -> str:
    """Append what a repair did (and any bytes it removed) to ``repair_log.jsonl``.

    Nothing a repair removes is lost: torn or superseded catalog lines are kept here.
    Returns the one-line description.
    """
    entry: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "action": action,
                             "detail": detail}
    if data is not None:
        entry["removed_bytes_latin1"] = data.decode("latin-1")
    append(tub / REPAIR_LOG, (json.dumps(entry) + "\n").encode("utf-8"))
    return detail


def _runs(indexes: list[int]) -> list[tuple[int, int]]:
    """Sorted indexes as (first, last) runs of consecutive numbers."""
    runs: list[tuple[int, int]] = []
    for i in indexes:
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def index_ranges(indexes: list[int]) -> str:
    """Sorted indexes as ``1..3, 7``."""
    return ", ".join(f"{a}..{b}" if b > a else str(a) for a, b in _runs(indexes)) or "none"


def slices(indexes: list[int]) -> list[str]:
    """Sorted indexes as half-open ``START:END`` ranges, the form `car tub` takes."""
    return [f"{a}:{b + 1}" for a, b in _runs(indexes)]


def tombstone(index: int, reason: str, timestamp_ms: int = 0) -> dict[str, Any]:
    """The record that stands in for an index whose record was lost; always deleted."""
    return {INDEX: index, SESSION_ID: "recovered", TIMESTAMP_MS: timestamp_ms,
            TOMBSTONE: reason}


def settle_temp_files(tub: Path) -> list[str]:
    """Finish or undo what ``atomic_write`` left when it was killed; returns what was done.

    A ``manifest.json.tmp`` that parses whole is the newer manifest (written and fsynced,
    not yet renamed): it replaces ``manifest.json``. Any other temp file of ours is removed,
    its bytes kept in the repair log. Files of other names are never touched.
    """
    done = []
    for tmp in sorted(tub.glob("*.tmp")):
        if not is_temp_file(tmp.name):
            continue
        if tmp.is_symlink():  # never read, rename or log what a link points to
            raise link_error(tmp)
        data = tmp.read_bytes()
        if tmp.name == MANIFEST + ".tmp":
            try:
                Manifest.parse(data.decode("utf-8"), tmp)
                whole = True
            except (TubError, UnicodeDecodeError):
                whole = False
            if whole:
                os.replace(tmp, tub / MANIFEST)
                fsync_dir(tub)
                done.append(log_repair(tub, "finish_manifest", "finished a manifest update a "
                                       "crash interrupted (manifest.json.tmp was whole)"))
                continue
        done.append(log_repair(tub, "remove_temp", f"removed {tmp.name}, half-written when a "
                               "crash came", data))
        tmp.unlink()
    return done
