"""`car train` and `car export`: run the training pipeline (the `training` extra).

These handlers import ``training`` (and so torch) only when they run: the car's own install
has no torch, and there they say how to get it. `car train` adds each model it trains to
the models database (car.model_db, in ``paths.models_dir``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import ModuleType

from car import model_db
from car.commands import add_config_options, bounded, config_from_args
from car.config import Config
from car.errors import CarError
from deploy.manifest import MODEL_TYPES


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train a model on tubs; writes pilot.pt, "
                                              "pilot.onnx, pilot.pt2 and pilot.json (needs "
                                              "the training extra)")
    train.add_argument("--tub", nargs="+", required=True, metavar="DIR",
                       help="tub folders or globs")
    train.add_argument("--type", required=True, choices=MODEL_TYPES, dest="model_type",
                       metavar="FAMILY", help=FAMILY_HELP)
    train.add_argument("--out", required=True, metavar="DIR", help="folder for the model files")
    train.add_argument("--epochs", type=bounded(int, 1, 10_000), default=20,
                       help="most epochs to run (default 20; early stopping may end sooner)")
    train.add_argument("--batch-size", type=bounded(int, 1, 65_536), default=32,
                       help="samples per training step, across all --nproc processes "
                            "(default 32; halve it if the GPU runs out of memory)")
    train.add_argument("--nproc", type=bounded(int, 1, 1024), metavar="N",
                       help="train in N processes on this machine, data-parallel through "
                            "torch.distributed (one per GPU with NCCL, else gloo on the CPU); "
                            "across machines, start `torchrun ... -m car.entry train ...` "
                            "instead (docs/training.md)")
    rate = train.add_mutually_exclusive_group()
    rate.add_argument("--lr", type=bounded(float, 1e-7, 10.0), help="peak learning rate "
                      "of the one-cycle schedule (default 2e-3)")
    rate.add_argument("--find-lr", action="store_true",
                      help="run fastai's lr_find, save lr_find.png, and use its suggestion")
    train.add_argument("--seq-len", type=bounded(int, 2, 1000),
                       help="frames per sample: the 3d model's window (default 5), the rnn's "
                            "training sequence (default 20)")
    train.add_argument("--burn-in", type=bounded(int, 0, 999), metavar="STEPS",
                       help="rnn: leading steps of each training sequence that only warm up "
                            "the hidden state, left out of the loss (default: half of "
                            "--seq-len)")
    aug = train.add_mutually_exclusive_group()
    aug.add_argument("--no-aug", action="store_true", help="no augmentation")
    aug.add_argument("--aug", metavar="LIST",
                     help="comma-separated augmentations (default: all of brightness, contrast, "
                          "colour, blur, noise, shadow, flip, shift; shift's steering "
                          "correction, tuned on centre-line driving, held back learning on "
                          "racing-line data: leave it out there, see BENCHMARKS.md)")
    train.add_argument("--val-fraction", type=bounded(float, 0.01, 0.9), default=0.2,
                       help="share of the records held out for validation, whole sessions "
                            "where there are several (default 0.2)")
    train.add_argument("--seed", type=bounded(int, 0, 2**31 - 1), default=0,
                       help="seed for the weights, the split, the batches and the "
                            "augmentations: the same seed repeats a run (default 0)")
    train.add_argument("--patience", type=bounded(int, 1, 1000), default=5,
                       help="stop after this many epochs without a better validation loss")
    train.add_argument("--workers", type=bounded(int, 0, 64),
                       help="DataLoader workers (default: 0 on a CPU, up to 8 with CUDA)")
    train.add_argument("--mode", action="append", dest="modes", metavar="MODE",
                       help="keep records of this user/mode (repeatable; default: user)")
    train.add_argument("--all-modes", action="store_true", help="keep records of every mode")
    train.add_argument("--crop-top", type=bounded(int, 0, 4096),
                       help="rows to cut from the top of each frame (default: a third)")
    train.add_argument("--limit", type=bounded(int, 10, 10**9),
                       help="use only the first N usable records (quick experiments)")
    train.add_argument("--pretrained", nargs="?", const="hub", metavar="PATH",
                       help="resnets: start from ImageNet weights and fine-tune the fastai way "
                            "(body frozen for --freeze-epochs, then all at slice(lr/100, lr)); "
                            "PATH is a weights file, no PATH the torch hub cache")
    train.add_argument("--freeze-epochs", type=bounded(int, 1, 1000), default=1,
                       help="with --pretrained: epochs that train the head alone before "
                            "--epochs of the whole network (default 1)")
    train.add_argument("--bins", type=bins_pair, default=(15, 20), metavar="S,T",
                       help="categorical: steering and throttle bins (default 15,20)")
    train.add_argument("--init", metavar="PILOT.pt", help="start from the weights of a "
                       "previous pilot.pt (same --type, input and --seq-len)")
    train.add_argument("--dynamic-batch", action="store_true",
                       help="also write pilot_dynamic.onnx with a dynamic batch size")
    train.add_argument("--force", action="store_true", help="replace a model already in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_options(train)
    train.set_defaults(handler=train_command)

    export = commands.add_parser("export", help="re-export a pilot.pt checkpoint to ONNX and "
                                                ".pt2 with their manifest (needs the training "
                                                "extra; not the tubs)")
    export.add_argument("checkpoint", metavar="PILOT.pt", help="the checkpoint `car train` "
                        "wrote")
    export.add_argument("--out", metavar="PILOT.onnx",
                        help="ONNX file to write (default: beside the checkpoint); the .pt2 "
                             "and .json go beside it")
    export.add_argument("--dynamic-batch", action="store_true",
                        help="also write pilot_dynamic.onnx with a dynamic batch size")
    export.set_defaults(handler=export_command)


FAMILY_HELP = (
    "the model family: linear (PilotNet-style CNN, one frame, regression); categorical (the "
    "same CNN, steering and throttle as classes over --bins, trained with cross-entropy, "
    "driven by the expected value); resnet18, resnet34 (torchvision ResNets, ImageNet "
    "normalisation, --pretrained to fine-tune); 3d (residual (2+1)D CNN over the last "
    "--seq-len frames); rnn (per-frame CNN + GRU, one frame per step on the car with its "
    "hidden state, trained on --seq-len sequences after a burn-in)")


def bins_pair(text: str) -> tuple[int, int]:
    """``S,T``: steering and throttle bins, each 3 to 255."""
    try:
        steering, throttle = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not two whole numbers S,T, such as "
                                         "15,20") from None
    if not (3 <= steering <= 255 and 3 <= throttle <= 255):
        raise argparse.ArgumentTypeError(f"{text!r}: each count of bins must be 3 to 255")
    return steering, throttle


def training_module() -> ModuleType:
    """``training.train``, or a one-line error where the training extra is not installed."""
    try:
        import training.train as module
    except ImportError as exc:
        raise CarError(f"training needs the training extra ({exc.name} is missing): "
                       "pip install 'car-autopilot[training]'") from None
    return module


def frame_cache_dir(config: Config) -> Path | None:
    """``paths.frame_cache``, or None for the default under $XDG_CACHE_HOME."""
    return Path(config.paths.frame_cache).expanduser() if config.paths.frame_cache else None


def frame_cache_cap(config: Config) -> int | None:
    """``paths.frame_cache_max_gb`` in bytes; None for no cap."""
    return int(config.paths.frame_cache_max_gb * 1e9) or None


def train_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    module = training_module()
    if args.nproc is not None:
        from training.distributed import World, check_options, launch, without_nproc

        check_options(args.batch_size, args.find_lr, World(size=args.nproc, launched=True))
        return launch(without_nproc(args.argv), args.nproc)
    from training.augment import parse_augmentations
    from training.records import expand_tub_paths

    cfg = module.TrainConfig(
        tubs=expand_tub_paths(args.tub), model_type=args.model_type, out=Path(args.out),
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, find_lr=args.find_lr,
        seq_len=args.seq_len, burn_in=args.burn_in,
        augmentations=parse_augmentations(args.aug, args.no_aug),
        val_fraction=args.val_fraction, seed=args.seed, patience=args.patience,
        workers=args.workers, pretrained=args.pretrained, force=args.force,
        freeze_epochs=args.freeze_epochs, bins=args.bins,
        modes=None if args.all_modes else tuple(args.modes or ("user",)),
        crop_top=args.crop_top, limit=args.limit, dynamic_batch=args.dynamic_batch,
        progress=not args.quiet, init_from=Path(args.init) if args.init else None,
        on_data=lambda summary: print(f"data: {summary}", flush=True),
        cache_dir=frame_cache_dir(config), cache_max_bytes=frame_cache_cap(config))
    result = module.train(cfg)
    if not result.main:
        return 0  # rank 0 reports for every training process
    m = result.metrics
    records = result.manifest.training["records"]
    start = f", starting from {args.init}" if args.init else ""
    processes = result.manifest.training.get("world_size", 1)
    where = f"{processes} processes on {result.device}" if processes > 1 else result.device
    print(f"trained {args.model_type}{start} on {records['train']} samples, validated on "
          f"{records['validation']} ({result.split.method}) on {where} in "
          f"{result.duration_s:.0f} s, lr {result.lr:.2g}")
    print(f"best validation: loss {m.get('valid_loss', float('nan')):.4f}, steering MAE "
          f"{m.get('steering_mae', float('nan')):.3f}, throttle MAE "
          f"{m.get('throttle_mae', float('nan')):.3f}"
          + (f", steering error rate {m['steering_error']:.3f}" if "steering_error" in m else ""))
    print(f"export check: ONNX Runtime vs torch max |diff| "
          f"{result.manifest.export['max_abs_diff']:.1e}")
    print("wrote " + ", ".join(str(p) for p in result.files if p.exists()))
    try:
        model_db.record_training(config.paths.models_dir, cfg.out / "pilot.onnx",
                                 args.model_type, result.manifest.training, result.duration_s)
    except OSError as exc:  # the model is written; a database line is not worth failing for
        print(f"car: could not add the model to the models database in "
              f"{config.paths.models_dir}: {exc.strerror or exc}", file=sys.stderr)
    return 0


def export_command(args: argparse.Namespace) -> int:
    training_module()
    from training.export import reexport

    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    if out.suffix.lower() != ".onnx":
        raise CarError(f"--out {out}: name the .onnx file to write (the .pt2 and .json go "
                       "beside it)")
    manifest = reexport(args.checkpoint, out, args.dynamic_batch)
    print(f"wrote {out}, {out.with_suffix('.pt2')} and {out.with_suffix('.json')}: "
          f"{manifest.model_type}, checked on {manifest.export['check_frames']} frames: "
          f"ONNX Runtime vs torch max |diff| {manifest.export['max_abs_diff']:.1e}, "
          f".pt2 {manifest.export['pt2_max_abs_diff']:.1e}")
    return 0
