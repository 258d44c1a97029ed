"""PyTorch datasets over the frame cache: one sample per frame, or per window of T frames.

Normalisation is ``deploy.preprocess.Preprocess.normalise`` itself, the drive-time function,
so training and driving cannot drift apart. Augmentation draws come from a per-worker
generator seeded from torch's seed, so a run is reproducible for a given ``--seed``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    SequentialSampler,
)

from deploy.preprocess import Preprocess
from training.augment import Augmenter
from training.cache import FrameCache
from training.records import RecordSet


class FramesDataset(Dataset):
    """Samples ending at ``ends`` (positions in the record set).

    ``seq_len`` 1 gives (3, h, w) inputs and (2,) targets. Longer gives (T, 3, h, w) inputs
    with the last frame's target (``all_steps=False``, the 3d model) or every frame's,
    (T, 2) (``all_steps=True``, the rnn).
    """

    def __init__(self, cache: FrameCache, data: RecordSet, ends: np.ndarray, seq_len: int,
                 preprocess: Preprocess, augmenter: Augmenter | None = None,
                 all_steps: bool = False, seed_offset: int = 0):
        self.frames = cache.frames
        self.labels = np.array([[r.steering, r.throttle] for r in data.records], np.float32)
        self.ends = np.asarray(ends, np.int64)
        self.seq_len = seq_len
        self.preprocess = preprocess
        self.augmenter = augmenter
        self.all_steps = all_steps
        self.seed_offset = seed_offset  # a training process's rank: its own augmentations
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One sample, or a whole batch for a list of indexes (the loaders ask for batches:
        gathering, augmenting and normalising a batch at once is several times faster)."""
        single = isinstance(i, (int, np.integer))
        ends = self.ends[[i] if single else i]
        offsets = np.arange(1 - self.seq_len, 1)
        positions = ends[:, None] + offsets[None, :]  # (B, T)
        frames = np.asarray(self.frames[positions])  # (B, T, h, w, 3) uint8
        labels = self.labels[positions]  # (B, T, 2)
        if self.augmenter is not None:
            if self._rng is None:  # in each worker: seeded from torch's per-worker seed
                self._rng = np.random.default_rng(
                    (torch.initial_seed() + self.seed_offset) % 2**63)
            draws = self.augmenter.draw(self._rng, len(ends))
            frames, labels[..., 0] = self.augmenter.apply_batch(frames, labels[..., 0], draws)
        x = self.preprocess.normalise(frames)  # (B, T, 3, h, w) float32
        y = labels if self.all_steps else labels[:, -1]
        if self.seq_len == 1:
            x = x[:, 0]
        if single:
            x, y = x[0], y[0]
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(
            np.ascontiguousarray(y))


def make_loader(dataset: FramesDataset, batch_size: int, shuffle: bool, workers: int,
                cuda: bool, seed: int, samples: int | None = None) -> DataLoader:
    """Whole batches from ``dataset``; ``workers`` processes (0: the main one) that live
    across epochs, each with one OpenCV thread as torch gives each one torch thread. With
    ``samples``, a shuffled epoch is that many samples drawn afresh from the whole dataset
    (so every training process runs the same number of steps)."""
    generator = torch.Generator().manual_seed(seed)
    order = (RandomSampler(dataset, generator=generator, num_samples=samples) if shuffle
             else SequentialSampler(dataset))
    batches = BatchSampler(order, batch_size, drop_last=shuffle and len(order) > batch_size)
    return DataLoader(dataset, sampler=batches, batch_size=None, num_workers=workers,
                      pin_memory=cuda, generator=generator, persistent_workers=workers > 0,
                      worker_init_fn=_one_opencv_thread if workers > 0 else None)


def _one_opencv_thread(worker_id: int) -> None:
    """Loader workers already run in parallel; OpenCV's own threads would oversubscribe."""
    cv2.setNumThreads(1)
