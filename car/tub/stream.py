"""Planning the catalog stream of a damaged tub so that line N holds index N again.

donkeycar reads the catalogs as one stream of lines and applies ``deleted_indexes`` by line
position, so every repair must leave line N holding ``_index`` N. The plan walks the stream
in catalog order, and between two readable records of indexes a < b puts exactly b - a - 1
lines: the unreadable lines that stood there become deleted tombstones of those indexes,
extra unreadable lines are dropped, and missing lines (a whole catalog gone, say) are made
up with tombstones. A repeated index (a crashed donkeycar session reused it and overwrote
its image) keeps its first slot and takes its newest content. The plan changes no file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from car.tub.format import INDEX, TOMBSTONE, catalog_number, record_line, tombstone
from car.tub.scan import TubScan, catalog_files


@dataclass
class _Entry:
    catalog: str
    index: int | None  # a readable record's index; None for an unreadable line or a gap
    raw: bytes  # the line as it is on disk (b"" stands for a missing catalog)
    where: str
    reason: str = ""  # why the line is unreadable
    tombstone: bool = False  # the record is a tombstone already
    out: list[bytes] = field(default_factory=list)  # the lines that take its place


@dataclass
class StreamPlan:
    """New content per catalog, the lines taken out, and the tombstones made."""

    content: dict[str, bytes]  # every catalog name, in order; b"" means: stop listing it
    changed: set[str]  # catalogs whose content differs from what is on disk
    removed: list[tuple[str, str, bytes]]  # (where, why, bytes) of every line taken out
    tombstones: list[int]  # indexes given a new tombstone line


def tombstone_line(index: int, reason: str) -> bytes:
    return record_line(tombstone(index, reason))


def _number(name: str) -> int:
    return catalog_number(name) or 0


def plan_stream(scan: TubScan) -> StreamPlan | None:
    """The plan for ``scan``'s catalogs, or None when records are out of order (no fix)."""
    names = [name for name, _ in catalog_files(scan.path, scan.manifest)[0]]
    names = sorted({*names, *scan.missing_catalogs}, key=_number)
    scans = {c.name: c for c in scan.catalogs}
    last = max((n for n in names if n in scans), key=_number, default=None)
    entries: list[_Entry] = []
    originals: dict[str, bytes] = {}
    for name in names:
        catalog = scans.get(name)
        if catalog is None:  # listed but gone: a place that can take tombstones
            entries.append(_Entry(name, None, b"", name, "catalog missing"))
            continue
        data = catalog.path.read_bytes()
        originals[name] = data[:catalog.good_length] if name == last else data
        for line in catalog.lines:
            raw = data[line.offset:line.offset + line.length]
            where = f"{name} line {line.number}"
            if line.record is None:
                entries.append(_Entry(name, None, raw, where, line.error or "unreadable"))
            else:
                entries.append(_Entry(name, line.record[INDEX], raw, where,
                                      tombstone=TOMBSTONE in line.record))
        if catalog.torn_tail and name != last:  # the last one's is the writer's to drop
            entries.append(_Entry(name, None, catalog.torn_tail,
                                  f"{name} line {len(catalog.lines) + 1}", "torn line"))
    removed: list[tuple[str, str, bytes]] = []
    made: list[int] = []
    _take_newest(entries, removed)
    if not _fill_gaps(entries, removed, made):
        return None
    content = dict.fromkeys(names, b"")
    for entry in entries:
        content[entry.catalog] += b"".join(entry.out)
    changed = {n for n in names if content[n] != originals.get(n, b"")}
    if last is not None and last in changed and scans[last].torn_tail:
        content[last] += scans[last].torn_tail  # kept for the writer to log and drop
    return StreamPlan(content, changed, removed, sorted(made))


def _take_newest(entries: list[_Entry], removed: list[tuple[str, str, bytes]]) -> None:
    """Each index keeps its first slot with its newest content (a tombstone never wins)."""
    first: dict[int, _Entry] = {}
    for entry in entries:
        if entry.index is None:
            continue
        line = entry.raw if entry.raw.endswith(b"\n") else entry.raw + b"\n"
        kept = first.get(entry.index)
        if kept is None:
            first[entry.index] = entry
            entry.out = [line]
        elif entry.tombstone and not kept.tombstone:
            removed.append((entry.where, f"a tombstone of index {entry.index}, which has a "
                            "record", entry.raw))
        else:
            removed.append((kept.where, f"index {entry.index} is written again at "
                            f"{entry.where}, whose copy takes this slot", kept.out[0]))
            kept.out = [line]
            kept.tombstone = entry.tombstone


def _fill_gaps(entries: list[_Entry], removed: list[tuple[str, str, bytes]],
               made: list[int]) -> bool:
    expected = 0
    segment: list[_Entry] = []
    previous: _Entry | None = None
    for entry in entries:
        if entry.index is None:
            segment.append(entry)
            continue
        if not entry.out:
            continue  # a later copy: its content moved to the first slot
        if entry.index < expected:
            return False
        _fill(segment, previous, entry, expected, entry.index - expected, removed, made)
        expected = entry.index + 1
        segment = []
        previous = entry
    _fill(segment, previous, None, expected, None, removed, made)
    return True


def _fill(segment: list[_Entry], previous: _Entry | None, following: _Entry | None,
          start: int, gap: int | None, removed: list[tuple[str, str, bytes]],
          made: list[int]) -> None:
    """Give the unreadable lines and missing catalogs between two records ``gap`` indexes.

    ``gap`` None means after the last record: each unreadable line keeps one index there.
    """
    unknown = [e for e in segment if e.raw]
    holes = [e for e in segment if not e.raw]
    kept = unknown if gap is None else unknown[:gap]
    for entry in unknown[len(kept):]:
        removed.append((entry.where, f"{entry.reason}; one line more than the indexes "
                        f"between {start - 1} and {start + (gap or 0)}", entry.raw))
    slots = {id(e): 1 for e in kept}
    lost = 0 if gap is None else gap - len(kept)
    if lost and holes:
        slots[id(holes[0])] = lost  # the lines of a missing catalog
    elif lost and kept:
        slots[id(kept[-1])] += lost
    elif lost and previous is not None:
        previous.out += [tombstone_line(start + i, "lost") for i in range(lost)]
        made += range(start, start + lost)
        start += lost
    elif lost and following is not None:
        following.out = [tombstone_line(start + i, "lost") for i in range(lost)] + following.out
        made += range(start, start + lost)
        start += lost
    index = start
    for entry in segment:
        count = slots.get(id(entry), 0)
        entry.out = [tombstone_line(index + i, entry.reason) for i in range(count)]
        made += range(index, index + count)
        index += count
        if entry.raw and count:
            removed.append((entry.where, f"{entry.reason}; replaced by a deleted tombstone of "
                            f"index {index - count}", entry.raw))
