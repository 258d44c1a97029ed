"""ONNX export with a manifest, checked against torch on real frames.

Every export runs ONNX Runtime (CPU) and torch on frames from the training tubs and records
the largest difference in the manifest; above 1e-4 the export fails. The rnn is exported
as one step with explicit hidden state, and checked by stepping ONNX Runtime frame by frame
against torch's output for the whole sequence.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from deploy.manifest import Manifest, StateTensor, file_sha256, save_manifest
from deploy.preprocess import Preprocess
from training.models.rnn import RnnPilot, RnnStep
from training.records import DataError

OPSET = 17
TOLERANCE = 1e-4


class ExportError(DataError):
    """An export whose ONNX model does not match torch."""


def export_model(model: nn.Module, model_type: str, preprocess: Preprocess, seq_len: int,
                 onnx_path: Path, check_frames: np.ndarray, training: dict[str, Any],
                 dynamic_batch: bool = False) -> Manifest:
    """Write ``onnx_path`` and its manifest; ``check_frames`` are (N, h, w, 3) uint8
    geometry-preprocessed consecutive frames from the training tubs.

    Files are written under temporary names and moved into place only after the check
    passes, so a failed export never leaves a new model beside an old manifest."""
    model = model.eval().cpu()
    state: tuple[StateTensor, ...] = ()
    c, h, w = preprocess.input_shape
    if model_type == "rnn":
        assert isinstance(model, RnnPilot)
        exported: nn.Module = RnnStep(model).eval()
        args: tuple[torch.Tensor, ...] = (torch.zeros(1, c, h, w),
                                          torch.zeros(model.state_shape()))
        inputs, outputs = ["image", "h_in"], ["controls", "h_out"]
        state = (StateTensor("h_in", "h_out", model.state_shape()),)
    elif model_type == "3d":
        exported, args = model, (torch.zeros(1, seq_len, c, h, w),)
        inputs, outputs = ["image"], ["controls"]
    else:
        exported, args = model, (torch.zeros(1, c, h, w),)
        inputs, outputs = ["image"], ["controls"]
    if dynamic_batch and model_type == "rnn":
        raise ExportError("--dynamic-batch does not apply to rnn models: they run one frame "
                          "per step with their hidden state")
    staged = _staged(onnx_path)
    _write_onnx(exported, args, inputs, outputs, staged, dynamic=False)
    diff = check_export(model, model_type, preprocess, seq_len, staged, check_frames)
    export = {"sha256": file_sha256(staged), "opset": OPSET, "max_abs_diff": diff,
              "check_frames": len(check_frames),
              "tolerance": TOLERANCE, "onnxruntime": ort.__version__,
              "torch": torch.__version__.split("+")[0], "dynamic_batch": False}
    if diff > TOLERANCE:
        staged.unlink(missing_ok=True)
        raise ExportError(f"{onnx_path}: ONNX Runtime differs from torch by {diff:.2e} "
                          f"(more than {TOLERANCE:g}) on frames from the training tubs; the "
                          "export is not trustworthy")
    common = {"model_type": model_type, "preprocess": preprocess,
              "sequence_length": seq_len if model_type == "3d" else 1, "state": state,
              "training": training}
    manifest = Manifest(**common, export=export)
    staged.replace(onnx_path)
    save_manifest(manifest, onnx_path)
    if dynamic_batch:
        dynamic_path = onnx_path.with_name(f"{onnx_path.stem}_dynamic.onnx")
        staged = _staged(dynamic_path)
        _write_onnx(exported, args, inputs, outputs, staged, dynamic=True)
        diff = check_export(model, model_type, preprocess, seq_len, staged, check_frames,
                            batch=4)
        if diff > TOLERANCE:
            staged.unlink(missing_ok=True)
            raise ExportError(f"{dynamic_path}: the dynamic-batch export differs from torch "
                              f"by {diff:.2e}")
        staged.replace(dynamic_path)
        save_manifest(Manifest(**common, export=export | {
            "sha256": file_sha256(dynamic_path), "max_abs_diff": diff,
            "dynamic_batch": True}), dynamic_path)
    return manifest


def _staged(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _write_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], inputs: list[str],
                outputs: list[str], path: Path, dynamic: bool) -> None:
    axes = {name: {0: "batch"} for name in (inputs[:1] + outputs[:1])} if dynamic else None
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buffer, input_names=inputs, output_names=outputs,
                          opset_version=OPSET, dynamo=False, dynamic_axes=axes,
                          do_constant_folding=True)
    path.write_bytes(buffer.getvalue())


def check_export(model: nn.Module, model_type: str, preprocess: Preprocess, seq_len: int,
                 onnx_path: Path, frames: np.ndarray, batch: int = 1) -> float:
    """Largest |ONNX Runtime − torch| over the check frames (``batch`` at a time)."""
    model = model.eval()  # the exporter restores the mode of a wrapper it was handed
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = preprocess.normalise(np.asarray(frames))  # (N, 3, h, w)
    worst = 0.0
    with torch.no_grad():
        if model_type == "rnn":
            assert isinstance(model, RnnPilot)
            expected = model(torch.from_numpy(x[None])).numpy()[0]  # (N, 2), one sequence
            h = np.zeros(model.state_shape(), np.float32)
            for k in range(len(x)):
                got, h = session.run(None, {"image": x[k:k + 1], "h_in": h})
                worst = max(worst, float(np.abs(got[0] - expected[k]).max()))
            return worst
        if model_type == "3d":
            windows = np.stack([x[k - seq_len + 1:k + 1] for k in range(seq_len - 1, len(x))])
        else:
            windows = x
        for k in range(0, len(windows), batch):
            chunk = np.ascontiguousarray(windows[k:k + batch])
            expected = model(torch.from_numpy(chunk)).numpy()
            (got,) = session.run(None, {"image": chunk})
            worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def export_untrained(model_type: str, folder: Path, seq_len: int = 5,
                     preprocess: Preprocess | None = None) -> Path:
    """A freshly initialised model of a family, as `car train` would leave it (``pilot.pt``,
    ``pilot.onnx``, ``pilot.json`` in ``folder``): for benchmarks and tests, where the
    weights do not matter. Returns the ONNX path."""
    from training.checkpoint import save_checkpoint
    from training.models import build_model

    pp = preprocess or Preprocess()
    seq = seq_len if model_type == "3d" else 1
    config = {"pretrained": False} if model_type.startswith("resnet") else {}
    model = build_model(model_type, pp.input_shape, **config)
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / "pilot.pt", model, model_type, config, pp, seq, {})
    _, h, w = pp.input_shape
    frames = np.random.default_rng(0).integers(0, 256, (max(6, seq + 1), h, w, 3), np.uint8)
    export_model(model, model_type, pp, seq, folder / "pilot.onnx", frames, {})
    return folder / "pilot.onnx"
