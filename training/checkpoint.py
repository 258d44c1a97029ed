"""``pilot.pt``: a checkpoint that carries its own model config and its export-check frames,
so it can be rebuilt and re-exported (``car export pilot.pt``) without the command line
that trained it and without its training tubs, on any machine. No engine runs it: the
torch engine runs the ``pilot.pt2`` program that export writes beside ``pilot.onnx``.

Versions: 1 had no check frames (a re-export then reads them from the training tubs);
2 adds ``check_frames``, the (N, h, w, 3) uint8 geometry-preprocessed frames of
``training.export.check_positions``. Both are read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deploy.preprocess import Preprocess
from training.models import build_model
from training.records import DataError

FORMAT = "car-pilot-checkpoint"
VERSION = 2


def save_checkpoint(path: Path, model: nn.Module, model_type: str, model_config: dict,
                    preprocess: Preprocess, sequence_length: int, training: dict,
                    check_frames: np.ndarray | None = None) -> None:
    """Write the checkpoint atomically; ``check_frames`` as (N, h, w, 3) uint8."""
    payload: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "model_type": model_type,
        "model_config": model_config, "preprocess": preprocess.to_dict(),
        "sequence_length": sequence_length, "training": training,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if check_frames is not None:
        frames = np.ascontiguousarray(check_frames, np.uint8)
        if frames.ndim != 4 or frames.shape[1:] != (preprocess.height, preprocess.width, 3):
            raise DataError(f"check frames of shape {list(frames.shape)} do not fit the "
                            f"model's {preprocess.width}x{preprocess.height} input")
        payload["check_frames"] = torch.from_numpy(frames.copy())
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, the checkpoint's metadata without the weights); the metadata's
    ``check_frames`` is a uint8 array, or None for a version 1 checkpoint."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and OS errors for a bad file
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{path}: not a readable checkpoint ({first}); give a pilot.pt "
                        "written by `car train`") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"{path}: not a car checkpoint (train one with `car train`)")
    if payload.get("version", 0) > VERSION:
        raise DataError(f"{path}: checkpoint version {payload['version']} is newer than this "
                        "software; update car")
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    frames = meta.get("check_frames")
    meta["check_frames"] = frames.numpy() if isinstance(frames, torch.Tensor) else None
    preprocess = Preprocess.from_dict(meta["preprocess"])
    config = {k: v for k, v in meta["model_config"].items() if k != "pretrained"}
    model = build_model(meta["model_type"], preprocess.input_shape, **config)  # weights below
    model.load_state_dict(payload["state_dict"])
    return model.eval(), meta
