"""Data-parallel training on torch.distributed: `car train --nproc N`, or torchrun across
machines, on the same entry point (``python -m car.entry train ...``).

- **Launch.** ``--nproc N`` starts N copies of the same `car train` command through
  ``torch.distributed.run``'s launcher (a local rendezvous on a free port). On several
  machines, plain ``torchrun --nnodes ... --rdzv-endpoint ... -m car.entry train ...``
  starts them instead (docs/training.md). A worker knows it is one from torchrun's
  environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``).
- **Process group.** NCCL on CUDA (one GPU per local rank), gloo on the CPU.
- **Data.** ``--batch-size`` is the global batch, split evenly across the ranks. The
  training samples (whole windows, so a sequence never spans two ranks) are cut into
  contiguous, disjoint shards that together cover the training set; each rank reads only the
  frame-cache shards its samples fall in. Every rank draws the same number of batches per
  epoch (the smallest shard's worth, a fresh random choice from its own shard each epoch),
  so none waits forever in the gradient sync. Validation is sharded too, and the loss and
  metrics are summed over the ranks, so early stopping and the best epoch agree everywhere.
- **Model.** fastai's ``DistributedTrainer`` (Accelerate's DistributedDataParallel, synced
  batch norm on CUDA), with each rank's own loaders in place of fastai's ``DistributedDL``.
  Only rank 0 writes the checkpoint, the export, the manifest and the history.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from training.records import DataError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    launched: bool = False  # started by torchrun (even a world of one)

    @classmethod
    def from_env(cls) -> World:
        if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
            return cls()
        size = int(os.environ["WORLD_SIZE"])
        return cls(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", 0)),
                   int(os.environ.get("LOCAL_WORLD_SIZE", size)), launched=True)

    @property
    def main(self) -> bool:
        return self.rank == 0


def start(world: World, cuda: bool) -> None:
    """Join the process group (NCCL with a GPU per local rank, else gloo)."""
    if not world.launched:
        return
    if cuda:
        if world.local_rank >= torch.cuda.device_count():
            raise DataError(f"local rank {world.local_rank} has no GPU of its own (this "
                            f"machine has {torch.cuda.device_count()}); start at most one "
                            "process per GPU")
        torch.cuda.set_device(world.local_rank)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():  # NCCL told its GPU: no guessing it from the rank
        dist.init_process_group(backend, device_id=torch.device("cuda", world.local_rank)
                                if cuda else None)


def backend_name() -> str:
    return str(dist.get_backend()) if dist.is_initialized() else ""


def stop(world: World) -> None:
    if world.launched and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.launched and dist.is_initialized():
        dist.barrier()


def shard(ends: np.ndarray, world: World, what: str) -> np.ndarray:
    """This rank's contiguous share of the samples ending at ``ends`` (shares differ in size
    by at most one, are disjoint, and cover them all)."""
    if len(ends) < world.size:
        raise DataError(f"{len(ends)} {what} samples cannot be shared by {world.size} "
                        "processes; record more data or use fewer --nproc")
    return np.array_split(ends, world.size)[world.rank]


def smallest_share(count: int, world: World) -> int:
    """The size of the smallest share of ``count`` samples: what every rank draws an epoch."""
    return count // world.size


def check_options(batch_size: int, find_lr: bool, world: World) -> None:
    """What several processes refuse, in one line, before anything starts (checked by the
    `--nproc` launcher and again by each worker, which plain torchrun starts directly)."""
    per_rank_batch(batch_size, world)
    if find_lr and world.launched:
        raise DataError("--find-lr runs in one process: find the learning rate without "
                        "--nproc, then pass it with --lr")


def per_rank_batch(batch_size: int, world: World) -> int:
    if batch_size % world.size:
        raise DataError(f"--batch-size {batch_size} (the global batch) does not split evenly "
                        f"across {world.size} processes; pass a multiple of {world.size}")
    return batch_size // world.size


def weights_digest(model: torch.nn.Module) -> str:
    """A short hash of the model's parameters and buffers, to show ranks start alike."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def gather(world: World, item: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's ``item``, in rank order (just ``item`` in one process)."""
    if not world.launched:
        return [item]
    items: list[Any] = [None] * world.size
    dist.all_gather_object(items, item)
    return items


def rank_facts(world: World, train: int, val: int, start_weights: str) -> dict[str, Any]:
    return {"rank": world.rank, "host": socket.gethostname(), "train_samples": train,
            "validation_samples": val, "initial_weights": start_weights}


@contextlib.contextmanager
def data_parallel(learn: Any, world: World, cuda: bool) -> Iterator[Any]:
    """``learn`` training in DistributedDataParallel across the world (nothing in one
    process), as fastai's ``Learner.distrib_ctx``, with the rank's own loaders."""
    if not world.launched:
        yield learn
        return
    from training.distributed_fastai import ShardedTrainer

    trainer = ShardedTrainer(sync_bn=cuda, cpu=not cuda)  # Accelerate: gloo on the CPU
    learn.add_cb(trainer)
    try:
        yield learn
    finally:
        learn.remove_cb(trainer)


def launch(argv: Sequence[str], nproc: int) -> int:
    """Run `car ARGV` (without ``--nproc``) in ``nproc`` worker processes on this machine;
    the exit code (1 after a failed worker, whose own message is above)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc,
                          run_id=str(uuid.uuid4()), rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5)
    threads = max(1, (os.cpu_count() or 1) // nproc)  # torchrun's default is 1 per process
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        elastic_launch(config, sys.executable)("-m", "car.entry", *argv)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode
        why = f"exit code {code}" if code >= 0 else f"signal {-code}"
        print(f"car: error: training process {rank} of {nproc} stopped ({why}); its message "
              "is above", file=sys.stderr)
        return 130 if code == 130 else 1
    return 0


def without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` with its ``--nproc N`` (or ``--nproc=N``) taken out."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out
