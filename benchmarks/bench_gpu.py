"""Torch on the GPU, per model family: training throughput and batch-1 inference latency.

    python benchmarks/bench_gpu.py [--families linear rnn] [--batch 128] [--json OUT.json]
    python benchmarks/bench_gpu.py --device cpu --quick     # a few steps on the CPU (tests)

Each family's real model (``training.models.build_model``) on the input `car train` makes
of 160x120 camera frames (the top third cropped: 3x80x160), with the family's default
sequence (3d: windows of 5 frames, rnn: sequences of 20 with a burn-in of 10) and its own
loss (``training.objectives``). Synthetic data made once on the device, so the figures are
the model's and the optimizer's, not the data pipeline's.

Training, ``--batch`` samples a step (a sample is what `car train` counts: one frame, one
3d window, one rnn sequence), AdamW, timed after ``--warmup`` steps between
``torch.cuda.synchronize()`` calls:

- ``fp32``: the baseline, in the same run: float32, NCHW, PyTorch's default precision
  settings (cuDNN may use TF32 for convolutions on Ampere and later, matmuls do not);
- ``amp``: what `car train` does on a GPU (fastai's ``to_fp16``): autocast to float16 with
  a gradient scaler (``--amp-dtype bf16``: bfloat16, no scaler), plus channels_last memory
  format for the weights and, where the input is one (B, 3, H, W) image batch, the input.
  (3d and rnn inputs are 5-D; their frames are flattened into one image batch inside the
  model, where convolutions follow the channels_last weights.)

With more than one GPU, ``amp`` is measured again over all of them with
DistributedDataParallel over NCCL (one process per GPU, ``--batch`` per GPU, so the global
batch is N times larger); on one GPU the table says so. ``--world N`` forces N processes
(on the CPU over gloo, to try the code path).

Inference: batch 1, eval mode, ``torch.inference_mode``, float32, the module that is
exported (the categorical's decoding wrapper, the rnn's one-step module with its hidden
state), p50 and p99 over ``--runs`` calls, each followed by a synchronize; ``--compile``
adds ``torch.compile`` (compile time reported separately; a family it fails on says so).

Without CUDA and without ``--device cpu`` it prints "no GPU: skipped" and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FAMILIES = ("linear", "categorical", "resnet18", "3d", "rnn")
SEQ_LEN = {"3d": 5, "rnn": 20}  # car train's defaults (training.train.DEFAULT_SEQ_LEN)
SOURCE = (160, 120)  # camera width, height: car.toml's default
NO_GPU = "no GPU: skipped"


@dataclass
class FamilyResult:
    family: str
    input: str
    batch: int
    train_samples_s: dict[str, float] = field(default_factory=dict)  # mode → samples/s
    train_loss: dict[str, float] = field(default_factory=dict)  # mode → last loss
    ddp: dict[str, Any] | None = None  # {"gpus": N, "samples_s": ...} over all GPUs
    infer_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # eager/compiled
    compile_s: float | None = None
    errors: dict[str, str] = field(default_factory=dict)  # what failed, one line each


def input_shape() -> tuple[int, int, int]:
    """(3, H, W) as `car train` makes it for the default camera (top third cropped)."""
    from deploy.preprocess import Preprocess

    width, height = SOURCE
    crop = height // 3
    return Preprocess(source_width=width, source_height=height, crop_top=crop, width=width,
                      height=height - crop).input_shape


def model_config(family: str) -> dict[str, Any]:
    """The family's settings as `car train` passes them by default (no pretrained weights:
    nothing is downloaded)."""
    if family.startswith("resnet"):
        return {"pretrained": False}
    if family == "3d":
        return {"frames": SEQ_LEN["3d"]}
    return {}


def make_model(family: str, shape: tuple[int, int, int]) -> Any:
    from training.models import build_model

    model = build_model(family, shape, **model_config(family))
    if family == "rnn":
        model.burn_in = SEQ_LEN["rnn"] // 2  # as car train: half the sequence warms up
    return model


def make_batch(family: str, batch: int, shape: tuple[int, int, int], device: Any,
               seed: int = 0) -> tuple[Any, Any]:
    """Synthetic normalised inputs and targets in [-1, 1], shaped as the family trains."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed)
    seq = SEQ_LEN.get(family)
    x = torch.randn((batch, seq, *shape) if seq else (batch, *shape), generator=g)
    y = torch.rand((batch, seq, 2) if family == "rnn" else (batch, 2), generator=g) * 2 - 1
    return x.to(device), y.to(device)


def make_loss(family: str, model: Any) -> Any:
    """The family's training loss; the rnn's leaves out the burn-in steps (as
    training.learner.after_burn_in does)."""
    from training.objectives import objective

    loss = objective(family, model).loss
    if family == "rnn":
        burn = model.burn_in
        return lambda pred, target: loss(pred[:, burn:], target[:, burn:])
    return loss


def autocast_dtype(name: str) -> Any:
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16}[name]


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_throughput(family: str, mode: str, device: Any, batch: int, warmup: int,
                     steps: int, amp_dtype: str, ddp_rank: int | None = None
                     ) -> tuple[float, float]:
    """(samples/s, last loss) of ``steps`` training steps after ``warmup``, on one device
    (or as one DDP rank: the caller has set up the process group)."""
    import torch

    torch.manual_seed(0)
    shape = input_shape()
    model = make_model(family, shape).to(device).train()
    amp = mode == "amp"
    if amp:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = make_loss(family, model)
    if ddp_rank is not None:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=ids)
    x, y = make_batch(family, batch, shape, device, seed=ddp_rank or 0)
    if amp and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dtype = autocast_dtype(amp_dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and dtype == torch.float16
                                  and device.type == "cuda")

    def step() -> Any:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync(device)
    elapsed = time.perf_counter() - start
    return batch * steps / elapsed, float(loss.detach().float().cpu())


def inference_module(family: str, model: Any) -> tuple[Any, tuple[Any, ...]]:
    """The module that is exported for ``family`` and its batch-1 example inputs (on CPU)."""
    import torch

    shape = input_shape()
    if family == "categorical":
        from training.models.categorical import CategoricalExport

        return CategoricalExport(model), (torch.randn(1, *shape),)
    if family == "rnn":
        from training.models.rnn import RnnStep

        return RnnStep(model), (torch.randn(1, *shape), torch.zeros(model.state_shape()))
    if family == "3d":
        return model, (torch.randn(1, SEQ_LEN["3d"], *shape),)
    return model, (torch.randn(1, *shape),)


def time_calls(fn: Any, args: tuple[Any, ...], device: Any, warmup: int, runs: int
               ) -> dict[str, float]:
    """p50/p99/mean in ms of ``fn(*args)`` each followed by a synchronize."""
    import torch

    with torch.inference_mode():
        for _ in range(warmup):
            fn(*args)
        sync(device)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn(*args)
            sync(device)
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"p50": round(statistics.median(times), 4),
            "p99": round(times[min(len(times) - 1, int(0.99 * len(times)))], 4),
            "mean": round(statistics.fmean(times), 4)}


def inference_latency(result: FamilyResult, device: Any, warmup: int, runs: int,
                      compile_: bool) -> None:
    import torch

    torch.manual_seed(0)
    model = make_model(result.family, input_shape()).eval()
    module, args = inference_module(result.family, model)
    module = module.to(device).eval()
    args = tuple(a.to(device) for a in args)
    result.infer_ms["eager"] = time_calls(module, args, device, warmup, runs)
    if not compile_:
        return
    try:
        compiled = torch.compile(module)
        t0 = time.perf_counter()
        with torch.inference_mode():
            compiled(*args)
        sync(device)
        result.compile_s = round(time.perf_counter() - t0, 1)
        result.infer_ms["compiled"] = time_calls(compiled, args, device, warmup, runs)
    except Exception as exc:  # torch.compile is optional: say why and go on
        result.errors["compile"] = one_line(exc)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


# --------------------------------------------------------------------------- DDP
def _ddp_worker(rank: int, world: int, rendezvous: str, family: str, device_type: str,
                batch: int, warmup: int, steps: int, amp_dtype: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    cuda = device_type == "cuda"
    torch.backends.cudnn.benchmark = True  # as in the single-GPU runs
    if cuda:
        torch.cuda.set_device(rank)
    # a file rendezvous: no TCP port to pick, so none another process can take meanwhile
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{rendezvous}",
                            rank=rank, world_size=world)
    try:
        device = torch.device(f"cuda:{rank}" if cuda else "cpu")
        if not cuda:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        rate, _ = train_throughput(family, "amp", device, batch, warmup, steps, amp_dtype,
                                   ddp_rank=rank)
        rates = [None] * world
        dist.all_gather_object(rates, rate)
        if rank == 0:
            # every rank ran the same steps at once; the slowest sets the pace
            Path(out).write_text(json.dumps({"samples_s": world * min(rates)}))
        dist.barrier()  # no rank tears the group down while another still uses it
    finally:
        dist.destroy_process_group()
    _exit_now()


def _exit_now() -> None:
    """End a spawned worker without the interpreter's teardown: gloo's threads can abort
    it there ("terminate called without an active exception", seen under load), after the
    results are written."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def ddp_throughput(family: str, world: int, device_type: str, batch: int, warmup: int,
                   steps: int, amp_dtype: str) -> float:
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "ddp.json")
        mp.spawn(_ddp_worker, args=(world, str(Path(tmp) / "rendezvous"), family, device_type,
                                    batch, warmup, steps, amp_dtype, out),
                 nprocs=world, join=True)
        return float(json.loads(Path(out).read_text())["samples_s"])


# --------------------------------------------------------------------------- table
def format_table(results: list[FamilyResult], device_text: str, amp_dtype: str,
                 world: int) -> str:
    ddp_head = f"AMP x{world} DDP" if world > 1 else "multi-GPU"
    compiled = any("compiled" in r.infer_ms or "compile" in r.errors for r in results)
    head = (f"{'family':<12}{'input':<16}{'batch':>6}{'fp32 /s':>11}{'AMP /s':>11}"
            f"{'AMP x':>7}{ddp_head:>15}{'infer p50 ms':>14}{'p99':>8}"
            + (f"{'compiled p50':>14}" if compiled else ""))
    lines = [f"torch on {device_text}: training samples/s (fp32 baseline vs AMP {amp_dtype} "
             "+ channels_last, same run) and batch-1 inference (eager fp32)", head]
    for r in results:
        fp32, amp = r.train_samples_s.get("fp32"), r.train_samples_s.get("amp")
        ratio = f"{amp / fp32:.2f}" if fp32 and amp else "-"
        ddp = (f"{r.ddp['samples_s']:.0f}" if r.ddp and "samples_s" in r.ddp
               else "failed" if r.ddp else "-")
        eager = r.infer_ms.get("eager", {})
        line = (f"{r.family:<12}{r.input:<16}{r.batch:>6}{_num(fp32):>11}{_num(amp):>11}"
                f"{ratio:>7}{ddp:>15}{_num(eager.get('p50'), 3):>14}"
                f"{_num(eager.get('p99'), 3):>8}")
        if compiled:
            c = r.infer_ms.get("compiled", {})
            line += f"{_num(c.get('p50'), 3) if c else 'failed':>14}"
        lines.append(line)
        lines += [f"  {r.family} {what}: {why}" for what, why in r.errors.items()]
    if world <= 1:
        lines.append("1 GPU: multi-GPU not measured" if device_text.startswith("cuda")
                     else "one process: multi-GPU not measured")
    return "\n".join(lines)


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="auto: CUDA if torch sees a GPU, else say 'no GPU: skipped'")
    p.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    p.add_argument("--batch", type=int, help="samples per training step (default 128; "
                   "--quick: 4)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 5; --quick: 1)")
    p.add_argument("--steps", type=int, help="timed training steps (default 20; --quick: 2)")
    p.add_argument("--runs", type=int, help="timed inference calls (default 200; --quick: 5)")
    p.add_argument("--amp-dtype", choices=("fp16", "bf16"),
                   help="autocast dtype (default: fp16 on CUDA, as car train's fastai "
                        "to_fp16; bf16 on the CPU)")
    p.add_argument("--world", type=int, help="DDP processes for the multi-GPU figure "
                   "(default: every GPU when there are 2 or more; 1 skips it)")
    p.add_argument("--no-train", action="store_true", help="inference only")
    p.add_argument("--compile", action="store_true", help="also time torch.compile inference")
    p.add_argument("--quick", action="store_true", help="tiny counts, to try the script")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    quick = args.quick
    for name, normal, small in (("batch", 128, 4), ("warmup", 5, 1), ("steps", 20, 2),
                                ("runs", 200, 5)):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else normal)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    cuda = torch.cuda.is_available()
    if args.device == "auto":
        if not cuda:
            print(NO_GPU)
            if args.json:
                args.json.write_text(json.dumps({"skipped": NO_GPU}))
            return 0
        args.device = "cuda"
    if args.device == "cuda" and not cuda:
        print("bench_gpu: --device cuda but torch sees no CUDA GPU", file=sys.stderr)
        return 1
    device = torch.device(args.device)
    args.amp_dtype = args.amp_dtype or ("fp16" if args.device == "cuda" else "bf16")
    torch.backends.cudnn.benchmark = True
    gpus = torch.cuda.device_count() if cuda and args.device == "cuda" else 0
    world = args.world if args.world is not None else (gpus if gpus > 1 else 1)
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        device_text = f"cuda ({props.name}, torch {torch.__version__})"
        if args.amp_dtype == "bf16" and not torch.cuda.is_bf16_supported():
            print("bench_gpu: this GPU has no bfloat16; using fp16", file=sys.stderr)
            args.amp_dtype = "fp16"
    else:
        device_text = f"cpu ({torch.get_num_threads()} threads, torch {torch.__version__})"
    shape = input_shape()
    results = []
    for family in args.families:
        seq = SEQ_LEN.get(family)
        r = FamilyResult(family, ("x".join(map(str, shape)) + (f" x{seq}" if seq else "")),
                         args.batch)
        results.append(r)
        if not args.no_train:
            for mode in ("fp32", "amp"):
                try:
                    rate, loss = train_throughput(family, mode, device, args.batch,
                                                  args.warmup, args.steps, args.amp_dtype)
                    r.train_samples_s[mode] = round(rate, 1)
                    r.train_loss[mode] = round(loss, 5)
                except Exception as exc:  # one family's failure must not hide the others
                    r.errors[f"train {mode}"] = one_line(exc)
                finally:
                    if cuda:
                        torch.cuda.empty_cache()
            if world > 1:
                try:
                    rate = ddp_throughput(family, world, device.type, args.batch,
                                          args.warmup, args.steps, args.amp_dtype)
                    r.ddp = {"gpus": world, "samples_s": round(rate, 1)}
                except Exception as exc:
                    r.ddp = {"gpus": world}
                    r.errors["ddp"] = one_line(exc)
        try:
            inference_latency(r, device, max(3, args.warmup), args.runs, args.compile)
        except Exception as exc:
            r.errors["inference"] = one_line(exc)
        print(f"bench_gpu: {family} done", file=sys.stderr, flush=True)
    print(format_table(results, device_text, args.amp_dtype, world))
    if args.json:
        args.json.write_text(json.dumps({
            "device": device_text, "amp_dtype": args.amp_dtype, "world": world,
            "gpus": gpus, "batch": args.batch, "steps": args.steps,
            "results": [asdict(r) for r in results]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
