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

from deploy.json_file import MAX_DEPTH, MAX_INT_DIGITS
from deploy.model_swap import folder_lock, sync_file, sync_folder
from deploy.preprocess import Preprocess, PreprocessError
from training.models import build_model
from training.records import DataError

FORMAT = "car-pilot-checkpoint"
VERSION = 2
MAX_INT_BITS = int(MAX_INT_DIGITS * 3.33)  # the integers a manifest may hold


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
    tmp = path.with_name(f".{path.name}.tmp")  # a stopped run's is removed by the next
    with folder_lock(path.parent):  # export or training (deploy.model_swap.clean)
        try:
            torch.save(payload, tmp)
            sync_file(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        sync_folder(path.parent)


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
    frames = payload.get("check_frames")
    meta = {k: v for k, v in payload.items() if k not in ("state_dict", "check_frames")}
    _check_plain(meta, path)
    version = meta.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise DataError(f"{path}: checkpoint version {version!r} is not one this software "
                        f"understands (1 to {VERSION}); update car")
    meta["check_frames"] = frames.numpy() if isinstance(frames, torch.Tensor) else None
    try:
        preprocess = Preprocess.from_dict(meta["preprocess"])
        config = {k: v for k, v in meta["model_config"].items() if k != "pretrained"}
        model = build_model(meta["model_type"], preprocess.input_shape, **config)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError,
            PreprocessError) as exc:
        first = (str(exc).splitlines() or [""])[0][:160]
        raise DataError(f"{path}: the checkpoint's model cannot be rebuilt "
                        f"({type(exc).__name__}: {first}); give a pilot.pt written by "
                        "`car train`") from None
    try:
        model.load_state_dict(payload["state_dict"])  # weights of another shape: RuntimeError
    except (KeyError, TypeError, RuntimeError) as exc:
        first = (str(exc).splitlines() or [""])[0][:120]
        raise DataError(f"{path}: its weights do not fit today's {meta['model_type']} network "
                        f"({type(exc).__name__}: {first}); {REBUILT.get(meta['model_type'], '')}"
                        "retrain it with `car train`") from None
    return model.eval(), meta


REBUILT = {"3d": "the 3d family became a residual (2+1)D network in this version; "}


def _check_plain(meta: Any, path: Path) -> None:
    """The metadata goes into manifests (JSON): DataError naming the key if it nests deeper
    than a manifest may, or holds an integer longer than a manifest may."""
    stack: list[tuple[Any, str, int]] = [(meta, "", 0)]
    while stack:
        value, key, depth = stack.pop()
        if isinstance(value, dict):
            names = [k if isinstance(k, str) else f"<{type(k).__name__}>" for k in value]
            items = [(f"{key}.{k}" if key else k, v) for k, v in zip(names, value.values())]
        elif isinstance(value, (list, tuple)):
            items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
        else:
            if (isinstance(value, int) and not isinstance(value, bool)
                    and value.bit_length() > MAX_INT_BITS):
                raise DataError(f"{path}: the checkpoint's {_clip(key)} holds an integer of about "
                                f"{int(value.bit_length() / 3.32)} digits (at most "
                                f"{MAX_INT_DIGITS}); give a pilot.pt written by `car train`")
            continue
        if items and depth >= MAX_DEPTH:
            raise DataError(f"{path}: the checkpoint's {_clip(key) or 'metadata'} nests more than "
                            f"{MAX_DEPTH} deep; give a pilot.pt written by `car train`")
        stack.extend((v, k, depth + 1) for k, v in items)


def _clip(key: str, limit: int = 80) -> str:
    return key if len(key) <= limit else key[:limit] + "..."
