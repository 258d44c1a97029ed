"""The frame cache's shards read as one array: frames are addressed by their position in
the record set, whichever shard (one per recording session) holds them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ShardedFrames:
    """Read-only (N, h, w, 3) uint8 frames over per-session arrays, in record order.

    Indexing takes an int, a slice or an integer array, as a NumPy array does, and gives a
    NumPy array; a batch touches only the shards its positions fall in.
    """

    def __init__(self, shards: Sequence[np.ndarray], frame_shape: tuple[int, ...]):
        self.shards = list(shards)
        sizes = np.array([len(s) for s in self.shards], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)])  # shard k holds starts[k]:[k+1]
        self.shape = (int(self.starts[-1]), *frame_shape)
        self.dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self.take(np.array([index]))[0]
        if isinstance(index, slice):
            return self.take(np.arange(*index.indices(len(self))))
        return self.take(np.asarray(index, np.int64))

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The frames at ``positions`` (any shape of ints), as one array."""
        flat = positions.reshape(-1)
        if flat.size and (flat.min() < -len(self) or flat.max() >= len(self)):
            raise IndexError(f"frame position out of range for {len(self)} frames")
        flat = np.where(flat < 0, flat + len(self), flat)
        shard = np.searchsorted(self.starts, flat, side="right") - 1
        if flat.size and shard.min() == shard.max():  # the usual case: one session
            k = int(shard[0])
            return self.shards[k][flat - self.starts[k]].reshape(*positions.shape,
                                                                *self.shape[1:])
        out = np.empty((flat.size, *self.shape[1:]), np.uint8)
        for k in np.unique(shard):  # usually one: a window never leaves its session
            where = shard == k
            out[where] = self.shards[k][flat[where] - self.starts[k]]
        return out.reshape(*positions.shape, *self.shape[1:])

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        whole = self.take(np.arange(len(self)))
        return whole if dtype is None else whole.astype(dtype)
