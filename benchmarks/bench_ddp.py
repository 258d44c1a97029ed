"""Data-parallel training throughput: 1 process against N, the same global batch.

    python benchmarks/bench_ddp.py [--family linear] [--batch 64] [--procs 1,2] [--steps 30]
        [--device cpu|cuda]

Each row trains the family's real model (its training input shape: 160x120 frames, the top
third cropped) for ``--steps`` optimiser steps on synthetic batches, after warm-up steps.
One process is the baseline (plain model, all cores); N processes run
DistributedDataParallel (gloo on the CPU, NCCL on CUDA with one GPU each) with the global
batch split N ways and the cores shared out. The gradient sync per step is measured two
ways in the same run: the median step with DDP's all-reduce minus the median step under
``no_sync()`` (which skips it; the two alternate step by step, and DDP overlaps the
all-reduce with the backward pass, so this is what the sync adds to a step), and one
all-reduce of a buffer the size of the gradients (what it would cost alone).
On a CPU box the processes share the cores, so the speed-up measures overlap and sync
cost rather than added compute; on a GPU machine each process has its own GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.models import build_model

INPUT = (3, 80, 160)
SEQ = {"3d": 5, "rnn": 8}


def make_model(family: str) -> nn.Module:
    if family == "3d":
        return build_model("3d", INPUT, frames=SEQ["3d"])
    return build_model(family, INPUT)


def batch_for(family: str, size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    if family in SEQ:
        x = torch.rand(size, SEQ[family], *INPUT, generator=gen)
        y = torch.rand(size, SEQ[family], 2, generator=gen) * 2 - 1
        if family == "3d":
            y = y[:, -1]
    else:
        x = torch.rand(size, *INPUT, generator=gen)
        y = torch.rand(size, 2, generator=gen) * 2 - 1
    return x.to(device), y.to(device)


def steps_s(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
            steps: int, device: torch.device, context: object = None) -> float:
    """Seconds per optimiser step (median of ``steps``)."""
    import contextlib

    times = []
    for _ in range(steps):
        start = time.perf_counter()
        with context() if context else contextlib.nullcontext():
            out = model(x)
            loss = nn.functional.mse_loss(out[..., :2].float(), y)
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker(rank: int, world: int, args: argparse.Namespace, rendezvous: str,
           results: dict[int, dict[str, float]]) -> None:
    cuda = args.device == "cuda"
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(rank)
    torch.manual_seed(0)
    model = make_model(args.family).to(device)
    x, y = batch_for(args.family, args.batch // world, device)
    distributed = world > 1
    if distributed:
        # a file rendezvous: no TCP port to pick, so none another process can take meanwhile
        dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{rendezvous}",
                                rank=rank, world_size=world)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[rank] if cuda else None)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    steps_s(model, opt, x, y, args.warmup, device)
    if distributed:  # alternate steps with and without the all-reduce: the same conditions
        timed = [(steps_s(model, opt, x, y, 1, device),
                  steps_s(model, opt, x, y, 1, device, model.no_sync))
                 for _ in range(args.steps)]
        row = {"step_s": statistics.median(t[0] for t in timed),
               "no_sync_s": statistics.median(t[1] for t in timed)}
    else:
        row = {"step_s": steps_s(model, opt, x, y, args.steps, device)}
    if distributed:
        grads = torch.zeros(sum(p.numel() for p in model.parameters()), device=device)
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            dist.all_reduce(grads)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        row["allreduce_s"] = statistics.median(times)
    if rank == 0:
        results[world] = row
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # no interpreter teardown: gloo's threads can abort it under load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="linear")
    parser.add_argument("--batch", type=int, default=64, help="global batch (default 64)")
    parser.add_argument("--procs", default="1,2", help="process counts (default 1,2)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    procs = [int(p) for p in args.procs.split(",")]
    if args.device == "cuda" and max(procs) > torch.cuda.device_count():
        print(f"{torch.cuda.device_count()} GPU(s): one process per GPU, so at most that many")
        procs = [p for p in procs if p <= torch.cuda.device_count()]
    params = sum(p.numel() for p in make_model(args.family).parameters())
    manager = mp.Manager()
    results = manager.dict()
    for world in procs:
        with tempfile.TemporaryDirectory() as tmp:
            mp.spawn(worker, args=(world, args, str(Path(tmp) / "rendezvous"), results),
                     nprocs=world, join=True)
    where = (torch.cuda.get_device_name(0) if args.device == "cuda"
             else f"{os.cpu_count()} CPU cores")
    print(f"{args.family}: {params / 1e6:.2f} M parameters ({params * 4 / 1e6:.1f} MB of "
          f"gradients to sync), global batch {args.batch}, {where}, torch {torch.__version__}")
    print("| processes | batch each | samples/s | step ms | vs 1 process | grad sync ms/step "
          "(step - no_sync) | all-reduce ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    base = results.get(1, {}).get("step_s")
    for world in procs:
        r = results[world]
        rate = args.batch / r["step_s"]
        ratio = f"{base / r['step_s']:.2f}x" if base else "-"
        sync = (f"{1e3 * (r['step_s'] - r['no_sync_s']):.2f}" if "no_sync_s" in r
                else "- (baseline)")
        reduce = f"{1e3 * r['allreduce_s']:.2f}" if "allreduce_s" in r else "-"
        print(f"| {world} | {args.batch // world} | {rate:.0f} | {1e3 * r['step_s']:.1f} | "
              f"{ratio} | {sync} | {reduce} |")


if __name__ == "__main__":
    main()
