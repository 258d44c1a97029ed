"""Train/validation split by session, else by contiguous blocks: never per frame.

Neighbouring frames are near-identical, so a per-frame random split (donkeycar's) puts the
same moment in both sets and validation loss flatters the model. Here:

1. **By session**, when there are at least 3 sessions: whole sessions, taken in a seeded
   order (skipping any that would overshoot), go to validation until it holds about
   ``val_fraction`` of the records (between half and double that).
2. **Otherwise by blocks**: each session's index timeline is cut into blocks of
   ``block_len`` indexes (10 s at 20 Hz by default); a seeded choice of about
   ``val_fraction`` of the blocks goes to validation, and training records within ``gap``
   indexes of a validation record of the same session are dropped, across deletions too,
   so no training frame sits right next to a validation frame.

Both sets come back as runs, so sequences are later cut inside one set only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.records import DataError, RecordSet


@dataclass(frozen=True)
class Split:
    train: list[range]  # runs of record positions
    val: list[range]
    method: str

    @property
    def train_count(self) -> int:
        return sum(len(r) for r in self.train)

    @property
    def val_count(self) -> int:
        return sum(len(r) for r in self.val)


def split_records(data: RecordSet, val_fraction: float = 0.2, seed: int = 0,
                  block_len: int = 200, gap: int = 10) -> Split:
    if not 0 < val_fraction < 1:
        raise DataError(f"the validation fraction must be in (0, 1), got {val_fraction}")
    by_session = _by_session(data, val_fraction, seed)
    if by_session is not None:
        return by_session
    return _by_blocks(data, val_fraction, seed, block_len, gap)


def _by_session(data: RecordSet, fraction: float, seed: int) -> Split | None:
    sizes: dict[str, int] = {}
    for run in data.runs:
        session = data.records[run.start].session
        sizes[session] = sizes.get(session, 0) + len(run)
    if len(sizes) < 3:
        return None
    total = sum(sizes.values())
    order = list(sizes)
    np.random.default_rng(seed).shuffle(order)
    chosen: set[str] = set()
    count = 0
    for session in order:  # skip sessions that would make validation too big
        if count >= fraction * total:
            break
        if count + sizes[session] <= 2 * fraction * total and len(chosen) < len(sizes) - 1:
            chosen.add(session)
            count += sizes[session]
    if not 0.5 * fraction * total <= count <= 2 * fraction * total:
        return None
    train = [r for r in data.runs if data.records[r.start].session not in chosen]
    val = [r for r in data.runs if data.records[r.start].session in chosen]
    return Split(train, val, f"by session: {len(chosen)} of {len(sizes)} sessions for "
                             "validation")


def _by_blocks(data: RecordSet, fraction: float, seed: int, block_len: int,
               gap: int) -> Split:
    """Blocks of ``block_len`` consecutive *indexes* of one session, so a deletion or a
    left-out record does not move a block edge; training records within ``gap`` indexes of
    a validation record of the same session are dropped, across any deletion."""
    usable = np.zeros(len(data), dtype=bool)
    for run in data.runs:
        usable[run.start:run.stop] = True
    positions = np.flatnonzero(usable)
    total = len(positions)
    block_len = max(20, min(block_len, total // 10))
    sessions = [data.records[i].session for i in positions]
    indexes = np.array([data.records[i].index for i in positions])
    keys = list(dict.fromkeys(zip(sessions, (indexes // block_len).tolist())))
    if len(keys) < 2:
        raise DataError(f"only {total} usable records: too few to hold out a validation "
                        "block; record more")
    want = max(1, round(fraction * len(keys)))
    rng = np.random.default_rng(seed)
    chosen = {keys[k] for k in rng.choice(len(keys), size=min(want, len(keys) - 1),
                                          replace=False).tolist()}
    is_val = np.zeros(len(data), dtype=bool)
    for pos, session, index in zip(positions, sessions, indexes):
        is_val[pos] = (session, int(index) // block_len) in chosen
    keep_train = usable & ~is_val
    for session in set(sessions):
        mine = np.array([p for p, s in zip(positions, sessions) if s == session])
        idx = np.array([data.records[p].index for p in mine])
        val_idx = np.sort(idx[is_val[mine]])
        if len(val_idx) == 0:
            continue
        at = np.clip(np.searchsorted(val_idx, idx), 1, len(val_idx)) - 1
        near = np.minimum(np.abs(idx - val_idx[at]),
                          np.abs(idx - val_idx[np.minimum(at + 1, len(val_idx) - 1)]))
        keep_train[mine[near <= gap]] = False
    train = _stretches(keep_train, data.runs)
    val = _stretches(is_val, data.runs)
    if not train or not val:
        raise DataError(f"only {total} usable records: too few for a training and a "
                        "validation set; record more")
    return Split(train, val, f"by blocks of {block_len} records: {len(chosen)} of "
                             f"{len(keys)} blocks for validation, {gap}-record gaps")


def _stretches(mask: np.ndarray, runs: list[range]) -> list[range]:
    out: list[range] = []
    for run in runs:
        start = None
        for i in range(run.start, run.stop):
            if mask[i] and start is None:
                start = i
            elif not mask[i] and start is not None:
                out.append(range(start, i))
                start = None
        if start is not None:
            out.append(range(start, run.stop))
    return out
