"""fastai's DistributedTrainer with each rank's own sharded loaders (training.distributed)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

with warnings.catch_warnings():  # fastai's import uses the deprecated torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)
    from fastai.distributed import DistributedTrainer
    from fastai.torch_core import to_detach


def _local_detach(b: Any, cpu: bool = True, gather: bool = True) -> Any:
    """Batch results stay on their rank: the totals are summed once per epoch instead."""
    return to_detach(b, cpu, gather=False)


class ShardedTrainer(DistributedTrainer):
    """DistributedDataParallel through fastai and Accelerate, on loaders that are already
    this rank's shard; the epoch's training loss is averaged and the validation loss and
    metrics are summed over the ranks before the recorder logs them, so every rank sees the
    same numbers (and stops, and keeps its best epoch, together)."""

    def _wrap_dl(self, dl: Any) -> Any:
        if getattr(dl, "to_detach", None) is not _local_detach:
            dl.to_detach = _local_detach
        return dl

    def after_fit(self) -> None:
        """Unwrap the model (Accelerate leaves a world of one process unwrapped)."""
        if isinstance(self.learn.model, DistributedDataParallel):
            self.learn.model = self.learn.model.module
        self.learn.dls.loaders = self.old_dls

    def after_train(self) -> None:
        smooth = self.learn.recorder.smooth_loss
        total = self._all_sum([float(smooth.val)])
        smooth.val = torch.tensor(total[0] / dist.get_world_size())

    def after_validate(self) -> None:
        mets = [m for m in self.learn.recorder._valid_mets if hasattr(m, "total")]
        sums = self._all_sum([v for m in mets for v in (float(m.total), float(m.count))])
        for k, met in enumerate(mets):
            met.total, met.count = sums[2 * k], sums[2 * k + 1]

    def _all_sum(self, values: list[float]) -> list[float]:
        device = (torch.device("cuda", torch.cuda.current_device())
                  if dist.get_backend() == "nccl" else torch.device("cpu"))
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.cpu().tolist()
