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
from car.errors import CarError
from deploy.manifest import MODEL_TYPES


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train a model on tubs; writes pilot.pt, "
                                              "pilot.onnx, pilot.pt2 and pilot.json (needs "
                                              "the training extra)")
    train.add_argument("--tub", nargs="+", required=True, metavar="DIR",
                       help="tub folders or globs")
    train.add_argument("--type", required=True, choices=MODEL_TYPES, dest="model_type")
    train.add_argument("--out", required=True, metavar="DIR", help="folder for the model files")
    train.add_argument("--epochs", type=bounded(int, 1, 10_000), default=20,
                       help="most epochs to run (default 20; early stopping may end sooner)")
    train.add_argument("--batch-size", type=bounded(int, 1, 65_536), default=32)
    rate = train.add_mutually_exclusive_group()
    rate.add_argument("--lr", type=bounded(float, 1e-7, 10.0), help="peak learning rate "
                      "of the one-cycle schedule (default 2e-3)")
    rate.add_argument("--find-lr", action="store_true",
                      help="run fastai's lr_find, save lr_find.png, and use its suggestion")
    train.add_argument("--seq-len", type=bounded(int, 2, 1000), default=5,
                       help="frames per sample for 3d and rnn (default 5)")
    aug = train.add_mutually_exclusive_group()
    aug.add_argument("--no-aug", action="store_true", help="no augmentation")
    aug.add_argument("--aug", metavar="LIST",
                     help="comma-separated augmentations (default: all of brightness, contrast, "
                          "colour, blur, noise, shadow, flip, shift)")
    train.add_argument("--val-fraction", type=bounded(float, 0.01, 0.9), default=0.2)
    train.add_argument("--seed", type=bounded(int, 0, 2**31 - 1), default=0)
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
    train.add_argument("--pretrained", action="store_true",
                       help="start resnets from ImageNet weights (cached or downloaded)")
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
    export.add_argument("checkpoint", metavar="PILOT.pt")
    export.add_argument("--out", metavar="PILOT.onnx",
                        help="ONNX file to write (default: beside the checkpoint); the .pt2 "
                             "and .json go beside it")
    export.add_argument("--dynamic-batch", action="store_true")
    export.set_defaults(handler=export_command)


def training_module() -> ModuleType:
    """``training.train``, or a one-line error where the training extra is not installed."""
    try:
        import training.train as module
    except ImportError as exc:
        raise CarError(f"training needs the training extra ({exc.name} is missing): "
                       "pip install 'car-autopilot[training]'") from None
    return module


def train_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    module = training_module()
    from training.augment import parse_augmentations
    from training.records import expand_tub_paths

    cfg = module.TrainConfig(
        tubs=expand_tub_paths(args.tub), model_type=args.model_type, out=Path(args.out),
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, find_lr=args.find_lr,
        seq_len=args.seq_len, augmentations=parse_augmentations(args.aug, args.no_aug),
        val_fraction=args.val_fraction, seed=args.seed, patience=args.patience,
        workers=args.workers, pretrained=args.pretrained, force=args.force,
        modes=None if args.all_modes else tuple(args.modes or ("user",)),
        crop_top=args.crop_top, limit=args.limit, dynamic_batch=args.dynamic_batch,
        progress=not args.quiet, init_from=Path(args.init) if args.init else None)
    result = module.train(cfg)
    print(f"data: {result.data_summary}")
    m = result.metrics
    records = result.manifest.training["records"]
    start = f", starting from {args.init}" if args.init else ""
    print(f"trained {args.model_type}{start} on {records['train']} samples, validated on "
          f"{records['validation']} ({result.split.method}) on {result.device} in "
          f"{result.duration_s:.0f} s, lr {result.lr:.2g}")
    print(f"best validation: loss {m.get('valid_loss', float('nan')):.4f}, steering MAE "
          f"{m.get('steering_mae', float('nan')):.3f}, throttle MAE "
          f"{m.get('throttle_mae', float('nan')):.3f}")
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
