"""`car train`: tubs → frame cache → session split → fastai Learner → pilot.pt, then the
export: pilot.onnx + pilot.pt2 + pilot.json.

Writes into ``out``: ``pilot.pt`` (the best checkpoint by validation loss, with its model
config and its export-check frames), ``pilot.onnx`` and ``pilot.pt2`` with their manifest
``pilot.json`` (both checked against torch), ``history.csv``, ``loss.png``, and
``lr_find.png`` with ``find_lr``. The models database is the caller's (`car train` adds a
line to it through car.model_db); training depends on car.tub and deploy only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deploy.manifest import Manifest, load_manifest
from deploy.model_swap import clean, folder_lock
from deploy.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, PreprocessError
from training import distributed as ddp
from training.augment import Augmenter
from training.cache import load_frames, read_frame
from training.checkpoint import load_checkpoint, save_checkpoint
from training.export import check_positions, export_model
from training.learner import BEST, find_lr, fit, make_learner, plot_loss
from training.models import TEMPORAL, build_model
from training.records import DataError, load_records, windows
from training.split import Split, split_records
from training.torch_data import FramesDataset, make_loader

MODEL_FILES = ("pilot.pt", "pilot.onnx", "pilot.pt2", "pilot.json")
DEFAULT_SEQ_LEN = {"3d": 5, "rnn": 20}
RNN_STRIDE = 2  # an rnn sequence starts every other frame: each frame is labelled ~5 times
log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    tubs: list[Path]
    model_type: str
    out: Path
    epochs: int = 20
    batch_size: int = 32
    lr: float | None = None  # None: 2e-3, or lr_find's suggestion with find_lr
    find_lr: bool = False
    seq_len: int | None = None  # frames per sample: 3d's window (5), rnn's sequence (20)
    burn_in: int | None = None  # rnn: leading steps of a sequence left out of the loss (half)
    augmentations: tuple[str, ...] = ()
    val_fraction: float = 0.2
    seed: int = 0
    patience: int = 5  # epochs without a better validation loss before stopping
    workers: int | None = None  # None: 0 on a CPU, up to 8 with CUDA
    pretrained: str | None = None  # resnets: ImageNet weights, "hub" (cache) or a file
    freeze_epochs: int = 1  # with pretrained: epochs (≥ 1) with the body frozen, then ``epochs``
    force: bool = False
    modes: tuple[str, ...] | None = ("user",)
    crop_top: int | None = None  # None: a third of the frame height
    limit: int | None = None  # use only the first N usable records
    dynamic_batch: bool = False
    cache_dir: Path | None = None  # None: $XDG_CACHE_HOME/car/frames
    cache_max_bytes: int | None = None  # the frame cache's LRU size cap; None: no cap
    progress: bool = True
    init_from: Path | None = None  # start from this pilot.pt's weights (same type and input)
    bins: tuple[int, int] = (15, 20)  # categorical: steering and throttle bins
    # batch_size is the global batch: under torchrun (`--nproc`), each process takes its share
    on_data: Callable[[str], None] | None = None  # told the data summary before training


@dataclass
class TrainResult:
    manifest: Manifest
    split: Split
    metrics: dict[str, float]
    history: list[dict[str, float]]
    lr: float
    duration_s: float
    device: str
    data_summary: str = ""
    files: list[Path] = field(default_factory=list)
    main: bool = True  # False in the training processes other than rank 0, which print nothing


def train(cfg: TrainConfig) -> TrainResult:
    world = ddp.World.from_env()
    if cfg.out.is_dir() and world.main:  # a model whose swap was committed counts as existing
        remove_leftovers(cfg.out)
    ddp.check_options(cfg.batch_size, cfg.find_lr, world)
    created = _check_out(cfg)
    try:
        ddp.start(world, torch.cuda.is_available())
        return _train(cfg, world)
    except BaseException:
        if created:  # leave no empty folder behind a failed run
            with contextlib.suppress(OSError):
                cfg.out.rmdir()
        raise
    finally:
        ddp.stop(world)


def _train(cfg: TrainConfig, world: ddp.World) -> TrainResult:
    start = time.monotonic()
    if cfg.dynamic_batch and cfg.model_type == "rnn":
        raise DataError("--dynamic-batch does not apply to rnn models: they run one frame per "
                        "step with their hidden state")
    temporal = cfg.model_type in TEMPORAL
    if not temporal and cfg.seq_len not in (None, 1):
        raise DataError(f"--seq-len applies to {' and '.join(TEMPORAL)} models; a "
                        f"{cfg.model_type} model sees one frame, so leave --seq-len out")
    seq_len = (cfg.seq_len or DEFAULT_SEQ_LEN[cfg.model_type]) if temporal else 1
    burn_in = _burn_in(cfg, seq_len)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    start_from = _start_from(cfg, seq_len) if cfg.init_from is not None else None
    if cfg.pretrained and not cfg.model_type.startswith("resnet"):
        raise DataError(f"--pretrained applies to resnet18 and resnet34 (ImageNet backbones); "
                        f"a {cfg.model_type} model trains from scratch, or from --init PILOT.pt")
    if cfg.pretrained:  # before any data is loaded: a missing weights file fails at once
        from training.models.resnet import imagenet_state

        imagenet_state(cfg.model_type, cfg.pretrained)

    data = load_records(cfg.tubs, modes=cfg.modes)
    if cfg.limit:
        data.records = data.records[:cfg.limit]
        data.runs = [range(r.start, min(r.stop, cfg.limit)) for r in data.runs
                     if r.start < cfg.limit]
    preprocess = _preprocess_for(data, cfg)
    progress = cfg.progress and world.main
    # a node's processes share the decoding, then read each other's shards
    cache = load_frames(data, preprocess, cfg.cache_dir, progress=progress,
                        max_bytes=cfg.cache_max_bytes if world.local_rank == 0 else None,
                        share=(world.local_rank, world.local_size),
                        wait=lambda: ddp.barrier(world))
    if cache.bad_count:
        data.drop_unusable(cache.ok, cache.bad_reasons())
    split = split_records(data, cfg.val_fraction, cfg.seed)
    longest = max(len(r) for r in data.runs)
    if seq_len > longest:
        raise DataError(f"--seq-len {seq_len} is longer than any stretch of contiguous records "
                        f"(the longest is {longest}); use a shorter sequence")
    stride = RNN_STRIDE if cfg.model_type == "rnn" else 1
    train_ends, val_ends = (windows(split.train, seq_len, stride),
                            windows(split.val, seq_len, stride))
    if len(train_ends) == 0 or len(val_ends) == 0:
        raise DataError(f"no {seq_len}-frame sequences fit in the "
                        f"{'training' if len(train_ends) == 0 else 'validation'} set "
                        f"({split.method}); record longer sessions or shorten --seq-len")

    if cfg.on_data is not None and world.main:  # what it trains on, before the minutes
        cfg.on_data(f"{data.summary()}; {len(train_ends)} training and {len(val_ends)} "
                    f"validation samples ({split.method})")
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    workers = cfg.workers if cfg.workers is not None else (
        min(8, (os.cpu_count() or 1) // world.local_size) if cuda else 0)
    augmenter = (Augmenter(cfg.augmentations, preprocess.width, preprocess.height)
                 if cfg.augmentations else None)
    all_steps = cfg.model_type == "rnn"
    mine = (ddp.shard(train_ends, world, "training"), ddp.shard(val_ends, world, "validation"))
    draws = ddp.smallest_share(len(train_ends), world) if world.launched else None
    train_set = FramesDataset(cache, data, mine[0], seq_len, preprocess, augmenter, all_steps,
                              seed_offset=world.rank)
    val_set = FramesDataset(cache, data, mine[1], seq_len, preprocess, None, all_steps)
    batch = min(ddp.per_rank_batch(cfg.batch_size, world), draws or len(train_set))
    loaders = (make_loader(train_set, batch, True, workers, cuda, cfg.seed + world.rank, draws),
               make_loader(val_set, batch, False, workers, cuda, cfg.seed))

    model_config = (_model_config(cfg) if start_from is None   # --init keeps its own
                    else dict(start_from[1].get("model_config", {})))
    if start_from is None:
        model = build_model(cfg.model_type, preprocess.input_shape, **model_config)
    else:
        model = _check_start_input(start_from, preprocess, cfg.init_from)
    if cfg.model_type == "rnn":
        model.burn_in = burn_in  # the warm-up steps run without gradients
    ranks = ddp.gather(world, ddp.rank_facts(world, len(train_set), len(val_set),
                                             ddp.weights_digest(model)))
    learn = make_learner(loaders, model, cfg.model_type, cfg.out, cfg.patience, cuda, burn_in)
    fine_tune = bool(cfg.pretrained)
    lr = cfg.lr or 2e-3
    try:
        if cfg.find_lr:
            lr = find_lr(learn, cfg.out, cfg.progress, frozen=fine_tune)
        with ddp.data_parallel(learn, world, cuda):
            history = fit(learn, cfg.epochs, lr, fine_tune, cfg.freeze_epochs, progress,
                          write_history=world.main)
    except torch.cuda.OutOfMemoryError:
        raise DataError(f"out of GPU memory at batch size {batch * world.size}; try "
                        f"--batch-size {max(world.size, batch * world.size // 2)}") from None
    model = learn.model.eval().cpu()
    best = min(history, key=lambda h: h["valid_loss"]) if history else {}
    metrics = {k: round(float(v), 6) for k, v in best.items()
               if k != "epoch" and isinstance(v, float)}

    training = {
        "tubs": [str(Path(p).resolve()) for p in cfg.tubs],
        "records": {"usable": sum(len(r) for r in data.runs),
                    "train": split.train_count, "validation": split.val_count,
                    "train_samples": len(train_ends), "validation_samples": len(val_ends),
                    "left_out": {k: v for k, v in data.skipped.items() if v}},
        "sequence_length": seq_len,  # frames per training sample (the rnn's window)
        "burn_in": burn_in,  # rnn: leading steps of each sequence not in the loss
        "sample_stride": stride,  # rnn: one sequence starts every this many frames
        "split": split.method,
        "augmentations": list(cfg.augmentations),
        "epochs_run": len(history), "best_epoch": int(best.get("epoch", 0)),
        "validation": metrics, "lr": lr, "batch_size": batch * world.size, "seed": cfg.seed,
        "device": device, "world_size": world.size,
        "init_from": str(Path(cfg.init_from).resolve()) if cfg.init_from else None,
        "pretrained": _pretrained_text(cfg),
    }
    if world.launched:  # who trained on what, and that every rank started from one model
        training["distributed"] = {"backend": ddp.backend_name(), "batch_per_process": batch,
                                   "samples_per_epoch_per_process": draws, "ranks": ranks}
    if world.main:  # one set of outputs, from rank 0
        check = np.asarray(cache.frames[check_positions(split.val, seq_len)])
        save_checkpoint(cfg.out / "pilot.pt", model, cfg.model_type, model_config, preprocess,
                        seq_len, training, check_frames=check)
        manifest = export_model(model, cfg.model_type, preprocess, seq_len,
                                cfg.out / "pilot.onnx", check, training, cfg.dynamic_batch)
        (cfg.out / BEST).unlink(missing_ok=True)
        plot_loss(history, cfg.out / "loss.png")
    ddp.barrier(world)  # the others wait for rank 0's files, then read its manifest
    if not world.main:
        manifest = load_manifest(cfg.out / "pilot.onnx")
    duration = time.monotonic() - start
    names = (*MODEL_FILES, "pilot_dynamic.onnx", "history.csv", "loss.png", "lr_find.png")
    files = [cfg.out / n for n in names if (cfg.out / n).exists()]
    return TrainResult(manifest, split, metrics, history, lr, duration, device,
                       data.summary(), files, world.main)


def _burn_in(cfg: TrainConfig, seq_len: int) -> int:
    """The rnn's burn-in: the state runs over it before the loss counts (half the sequence
    by default), so training sees the state the car has after driving a while, not the
    zero state of a sequence's first frame."""
    if cfg.model_type != "rnn":
        if cfg.burn_in:
            raise DataError("--burn-in applies to rnn models only")
        return 0
    burn_in = seq_len // 2 if cfg.burn_in is None else cfg.burn_in
    if burn_in >= seq_len:
        raise DataError(f"--burn-in {burn_in} leaves no step of a {seq_len}-frame sequence "
                        "to learn from; make it smaller than --seq-len")
    return burn_in


def _model_config(cfg: TrainConfig) -> dict[str, Any]:
    """The family's own settings, saved in the checkpoint so the model can be rebuilt."""
    if cfg.model_type.startswith("resnet"):
        return {"pretrained": cfg.pretrained}
    if cfg.model_type == "3d":
        return {"frames": cfg.seq_len or DEFAULT_SEQ_LEN["3d"]}
    if cfg.model_type == "categorical":
        return {"steering_bins": cfg.bins[0], "throttle_bins": cfg.bins[1]}
    return {}


def _pretrained_text(cfg: TrainConfig) -> dict[str, Any] | None:
    """Where the starting weights came from and how they were fine-tuned, for the manifest."""
    if not cfg.pretrained:
        return None
    source = (cfg.pretrained if cfg.pretrained == "hub"
              else str(Path(cfg.pretrained).resolve()))
    return {"weights": source, "recipe": "fastai fine_tune", "freeze_epochs":
            cfg.freeze_epochs, "lr_mult": 100}


def _check_out(cfg: TrainConfig) -> bool:
    """Refuse to overwrite a model without ``force``; True if the folder was created."""
    if cfg.out.exists() and not cfg.out.is_dir():
        raise DataError(f"{cfg.out} is a file; --out names a folder for the model files")
    existing = [n for n in MODEL_FILES if (cfg.out / n).exists()]
    if existing and not cfg.force:
        raise DataError(f"{cfg.out} already holds a model ({', '.join(existing)}); choose "
                        "another --out, or pass --force to replace it")
    created = not cfg.out.exists()
    cfg.out.mkdir(parents=True, exist_ok=True)
    return created


def _start_from(cfg: TrainConfig, seq_len: int) -> tuple[nn.Module, dict[str, Any]]:
    """The ``init_from`` checkpoint's model and metadata, refused in one line when it is
    another model type or sequence length (before any data is loaded)."""
    path = Path(cfg.init_from or "")
    if cfg.pretrained:
        raise DataError(f"--init {path} and --pretrained both choose the starting weights; "
                        "give one of them")
    model, meta = load_checkpoint(path)
    if meta["model_type"] != cfg.model_type:
        raise DataError(f"--init {path} is a {meta['model_type']} model but this training "
                        f"makes a {cfg.model_type} model; pass --type {meta['model_type']} "
                        "or start without --init")
    theirs = int(meta.get("sequence_length", 1))
    if theirs != seq_len and cfg.model_type == "3d":  # the rnn runs any length
        raise DataError(f"--init {path} was trained on {theirs}-frame sequences but this "
                        f"training uses {seq_len}; pass --seq-len {theirs} or start without "
                        "--init")
    return model, meta


def _check_start_input(start: tuple[nn.Module, dict[str, Any]], preprocess: Preprocess,
                       path: Path | None) -> nn.Module:
    """The starting model, if the tubs give it the very input it was trained on."""
    model, meta = start
    theirs = Preprocess.from_dict(meta["preprocess"])
    if theirs != preprocess:
        raise DataError(f"--init {path} takes {_input_text(theirs)} but these tubs give "
                        f"{_input_text(preprocess)}; train on frames like its own (and the "
                        "same --crop-top) or start without --init")
    return model.train()


def _input_text(p: Preprocess) -> str:
    shape = "x".join(str(n) for n in p.input_shape)
    return (f"{shape} inputs ({p.source_width}x{p.source_height} frames, {p.crop_top} rows "
            "cropped)")


def remove_leftovers(out: Path) -> None:
    """What a stopped training or export left in ``out``: a committed swap is finished,
    partial files and fastai's best-epoch weights are deleted, one info line each."""
    with folder_lock(out):
        for model in ("pilot.onnx", "pilot_dynamic.onnx"):
            clean(out / model, log.info)
        if (out / BEST).exists():
            (out / BEST).unlink(missing_ok=True)
            log.info("removed %s, the best epoch's weights of a training that was stopped",
                     out / BEST)


def _preprocess_for(data: Any, cfg: TrainConfig) -> Preprocess:
    """Crop the top third (mostly sky) and keep the rest at full resolution."""
    image = None
    for rec in data.records:  # the first readable frame sets the size
        image = read_frame(data.tubs[rec.tub].path / "images" / rec.image)
        if image is not None:
            break
    if image is None:
        raise DataError("no record has a readable image")
    height, width = image.shape[:2]
    crop = cfg.crop_top if cfg.crop_top is not None else height // 3
    imagenet = cfg.model_type.startswith("resnet")
    try:
        return Preprocess(source_width=width, source_height=height, crop_top=crop,
                          width=width, height=height - crop,
                          mean=IMAGENET_MEAN if imagenet else (0.5, 0.5, 0.5),
                          std=IMAGENET_STD if imagenet else (0.5, 0.5, 0.5))
    except PreprocessError as exc:
        raise DataError(f"--crop-top {crop} on {width}x{height} frames: {exc}") from None
