"""Train/validation split by session, else by contiguous blocks: never per frame.

Neighbouring frames are near-identical, so a per-frame random split (donkeycar's) puts the
same moment in both sets and validation loss flatters the model. Here:

1. **By session**, when there are at least 3 sessions: whole sessions, taken in a seeded
   order (skipping any that would overshoot), go to validation until it holds about
   ``val_fraction`` of the records (between half and double that).
2. **Otherwise by blocks**: each run is cut into blocks of ``block_len`` records (10 s at
   20 Hz by default); a seeded choice of about ``val_fraction`` of the blocks goes to
   validation, and ``gap`` records at each edge between a validation block and a training
   stretch are dropped, so no training frame sits right next to a validation frame.

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
    total = len(data)
    block_len = max(20, min(block_len, total // 10))
    blocks = [range(s, min(s + block_len, run.stop))
              for run in data.runs for s in range(run.start, run.stop, block_len)]
    if len(blocks) < 2:
        raise DataError(f"only {total} usable records: too few to hold out a validation "
                        "block; record more")
    want = max(1, round(fraction * len(blocks)))
    rng = np.random.default_rng(seed)
    val_ids = set(rng.choice(len(blocks), size=min(want, len(blocks) - 1), replace=False)
                  .tolist())
    is_val = np.zeros(total, dtype=bool)
    in_run = np.zeros(total, dtype=bool)
    for k, block in enumerate(blocks):
        in_run[block.start:block.stop] = True
        if k in val_ids:
            is_val[block.start:block.stop] = True
    # Drop a gap where validation meets training inside a run.
    keep = in_run.copy()
    for run in data.runs:
        for i in range(run.start + 1, run.stop):
            if is_val[i] != is_val[i - 1]:
                keep[max(run.start, i - gap):min(run.stop, i + gap)] = False
    train = _stretches(keep & ~is_val, data.runs)
    val = _stretches(keep & is_val, data.runs)
    if not train or not val:
        raise DataError(f"only {total} usable records: too few for a training and a "
                        "validation set; record more")
    return Split(train, val, f"by blocks of {block_len} records: {len(val_ids)} of "
                             f"{len(blocks)} blocks for validation, {gap}-record gaps")


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
