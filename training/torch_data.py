"""PyTorch datasets over the frame cache: one sample per frame, or per window of T frames.

Normalisation is ``deploy.preprocess.Preprocess.normalise`` itself, the drive-time function,
so training and driving cannot drift apart. Augmentation draws come from a per-worker
generator seeded from torch's seed, so a run is reproducible for a given ``--seed``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

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
                 all_steps: bool = False):
        self.frames = cache.frames
        self.labels = np.array([[r.steering, r.throttle] for r in data.records], np.float32)
        self.ends = np.asarray(ends, np.int64)
        self.seq_len = seq_len
        self.preprocess = preprocess
        self.augmenter = augmenter
        self.all_steps = all_steps
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        end = int(self.ends[i])
        span = slice(end - self.seq_len + 1, end + 1)
        frames = np.asarray(self.frames[span])  # (T, h, w, 3) uint8
        labels = self.labels[span].copy()  # (T, 2)
        if self.augmenter is not None:
            if self._rng is None:  # in each worker: seeded from torch's per-worker seed
                self._rng = np.random.default_rng(torch.initial_seed() % 2**63)
            frames, labels[:, 0] = self.augmenter.apply(frames, labels[:, 0],
                                                        self.augmenter.draw(self._rng))
        x = self.preprocess.normalise(frames)  # (T, 3, h, w) float32
        if self.seq_len == 1:
            return torch.from_numpy(x[0]), torch.from_numpy(labels[0])
        y = labels if self.all_steps else labels[-1]
        return torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(y))


def make_loader(dataset: FramesDataset, batch_size: int, shuffle: bool, workers: int,
                cuda: bool, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      pin_memory=cuda, drop_last=shuffle and len(dataset) > batch_size,
                      generator=generator, persistent_workers=False)
