"""Export with a manifest, checked against torch on real frames: ``pilot.onnx`` for ONNX
Runtime and TensorRT, and ``pilot.pt2`` (a ``torch.export`` ExportedProgram) for the torch
engine, both described by the one ``pilot.json``.

Every export runs ONNX Runtime (CPU), the exported program and torch on the check frames
and records the largest differences in the manifest; above 1e-4 the export fails. The rnn
is exported as one step with explicit hidden state (``RnnStep``), and checked by stepping
frame by frame against torch's output for the whole sequence; the 3d model as its
(1, T, 3, h, w) window; the categorical model through ``CategoricalExport``, which decodes its
bins to the controls (checked) and adds the bin probabilities, and the manifest declares
the bins. The check frames follow one rule (``check_positions``); training saves them in the
checkpoint, so `car export pilot.pt` needs no tubs.
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from deploy.manifest import Manifest, StateTensor, file_sha256
from deploy.model_swap import ModelSwap
from deploy.preprocess import Preprocess
from training.cache import load_frames
from training.checkpoint import load_checkpoint, save_checkpoint
from training.models import build_model
from training.models.categorical import OUTPUTS, CategoricalExport, CategoricalPilot
from training.models.rnn import RnnPilot, RnnStep
from training.records import DataError, load_records

OPSET = 17
TOLERANCE = 1e-4
CHECK_FRAMES = 32  # plus the sequence length, so a 3d model sees CHECK_FRAMES + 1 windows

Runner = Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]]


class ExportError(DataError):
    """An export whose ONNX model or exported program does not match torch."""


def check_positions(runs: Sequence[range], seq_len: int) -> np.ndarray:
    """The one rule for the export-check frames: the first ``CHECK_FRAMES + seq_len``
    consecutive record positions of the longest run (the rnn and 3d checks need a
    stretch). Training applies it to the validation runs; an old checkpoint without frames
    inside, to the runs of its training tubs."""
    run = max(runs, key=len)
    return np.arange(run.start, run.start + min(len(run), CHECK_FRAMES + seq_len))


def reexport(checkpoint: str | os.PathLike, onnx_path: Path | None = None,
             dynamic_batch: bool = False, cache_dir: Path | None = None) -> Manifest:
    """`car export`: the model of a ``pilot.pt`` checkpoint exported again (default: the
    ``.onnx`` and ``.pt2`` beside it), checked on the frames saved in the checkpoint, or,
    for a checkpoint from before they were saved, on frames of its training tubs."""
    model, meta = load_checkpoint(checkpoint)
    onnx_path = onnx_path or Path(checkpoint).with_suffix(".onnx")
    preprocess = Preprocess.from_dict(meta["preprocess"])
    frames = meta["check_frames"]
    if frames is None:
        tubs = [Path(t) for t in meta["training"].get("tubs", [])]
        frames = frames_from_tubs(tubs, preprocess, meta["sequence_length"], cache_dir)
    return export_model(model, meta["model_type"], preprocess, meta["sequence_length"],
                        onnx_path, frames, meta["training"], dynamic_batch)


def frames_from_tubs(tubs: Sequence[Path], preprocess: Preprocess, seq_len: int,
                     cache_dir: Path | None = None) -> np.ndarray:
    """Check frames for a checkpoint without its own: ``check_positions`` over the runs of
    its training tubs (every mode), which must still be where they were trained."""
    missing = [str(t) for t in tubs if not (Path(t) / "manifest.json").is_file()]
    if not tubs or missing:
        raise DataError(f"this checkpoint predates saved check frames, so the export check "
                        f"needs frames from its training tubs, and "
                        f"{', '.join(missing) or 'none are named'} cannot be found; copy the "
                        "tubs back, or retrain with this version")
    data = load_records(tubs, modes=None)
    cache = load_frames(data, preprocess, cache_dir, progress=False)
    if cache.bad_count:
        data.drop_unusable(cache.ok, cache.bad_reasons())
    return np.asarray(cache.frames[check_positions(data.runs, seq_len)])


def export_model(model: nn.Module, model_type: str, preprocess: Preprocess, seq_len: int,
                 onnx_path: Path, check_frames: np.ndarray, training: dict[str, Any],
                 dynamic_batch: bool = False) -> Manifest:
    """Write ``onnx_path``, the ``.pt2`` program beside it and their manifest;
    ``check_frames`` are (N, h, w, 3) uint8 geometry-preprocessed consecutive frames.

    The three files are staged and swapped in as one (deploy.model_swap) only after both
    checks pass: a failed or killed export leaves the old set, or the new one, never a mix."""
    model = model.eval().cpu()
    state: tuple[StateTensor, ...] = ()
    bins: dict[str, Any] = {}
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
    elif model_type == "categorical":
        assert isinstance(model, CategoricalPilot)
        bins = {"bins": model.bins, "probabilities": OUTPUTS[1:]}
        model = exported = CategoricalExport(model).eval()  # checked on its decoded controls
        args, inputs, outputs = (torch.zeros(1, c, h, w),), ["image"], list(OUTPUTS)
    else:
        exported, args = model, (torch.zeros(1, c, h, w),)
        inputs, outputs = ["image"], ["controls"]
    if dynamic_batch and model_type == "rnn":
        raise ExportError("--dynamic-batch does not apply to rnn models: they run one frame "
                          "per step with their hidden state")
    pt2_path = onnx_path.with_suffix(".pt2")
    with ModelSwap(onnx_path) as swap:
        staged, staged_pt2 = swap.stage(onnx_path), swap.stage(pt2_path)
        _write_onnx(exported, args, inputs, outputs, staged, dynamic=False)
        diff = check_export(model, model_type, preprocess, seq_len, staged, check_frames)
        if diff > TOLERANCE:
            raise ExportError(f"{onnx_path}: ONNX Runtime differs from torch by {diff:.2e} "
                              f"(more than {TOLERANCE:g}) on the check frames; the export "
                              "is not trustworthy")
        with warnings.catch_warnings():  # the GRU's flat weights; the check below holds
            warnings.filterwarnings("ignore", "The tensor attributes", UserWarning)
            program = torch.export.export(exported.eval(), args)
        pt2_diff = _max_diff(model, model_type, preprocess, seq_len, check_frames,
                             _program_runner(program))
        if pt2_diff > TOLERANCE:
            raise ExportError(f"{pt2_path}: the exported program differs from torch by "
                              f"{pt2_diff:.2e} (more than {TOLERANCE:g}) on the check frames")
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        staged_pt2.write_bytes(buffer.getvalue())
        export = {"sha256": file_sha256(staged), "opset": OPSET, "max_abs_diff": diff,
                  "check_frames": len(check_frames), "tolerance": TOLERANCE,
                  "onnxruntime": ort.__version__, "torch": torch.__version__.split("+")[0],
                  "dynamic_batch": False, "pt2_sha256": file_sha256(staged_pt2),
                  "pt2_max_abs_diff": pt2_diff}
        common = {"model_type": model_type, "preprocess": preprocess,
                  "sequence_length": seq_len if model_type == "3d" else 1, "state": state,
                  "training": training}
        manifest = Manifest(**common, **bins, export=export)
        swap.commit(manifest)
    if dynamic_batch:
        _export_dynamic(model, exported, args, (inputs, outputs), manifest, onnx_path,
                        check_frames)
    return manifest


def _export_dynamic(model: nn.Module, exported: nn.Module, args: tuple[torch.Tensor, ...],
                    names: tuple[list[str], list[str]], manifest: Manifest, onnx_path: Path,
                    check_frames: np.ndarray) -> None:
    """``<stem>_dynamic.onnx`` with a dynamic batch size, checked at batch 4."""
    dynamic_path = onnx_path.with_name(f"{onnx_path.stem}_dynamic.onnx")
    with ModelSwap(dynamic_path) as swap:
        staged = swap.stage(dynamic_path)
        _write_onnx(exported, args, *names, staged, dynamic=True)
        diff = check_export(model, manifest.model_type, manifest.preprocess,
                            manifest.sequence_length, staged, check_frames, batch=4)
        if diff > TOLERANCE:
            raise ExportError(f"{dynamic_path}: the dynamic-batch export differs from torch "
                              f"by {diff:.2e}")
        export = {k: v for k, v in manifest.export.items() if not k.startswith("pt2_")}
        swap.commit(dataclasses.replace(manifest, export=export | {
            "sha256": file_sha256(staged), "max_abs_diff": diff, "dynamic_batch": True}))


def _write_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], inputs: list[str],
                outputs: list[str], path: Path, dynamic: bool) -> None:
    # every output has the batch first (the rnn, with its state, has no dynamic export)
    axes = {name: {0: "batch"} for name in (inputs[:1] + outputs)} if dynamic else None
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
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return _max_diff(model, model_type, preprocess, seq_len, frames,
                     lambda feeds: session.run(None, feeds), batch)


def _program_runner(program: Any) -> Runner:
    module = program.module()

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = module(*(torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()))
        return [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]

    return run


def _max_diff(model: nn.Module, model_type: str, preprocess: Preprocess, seq_len: int,
              frames: np.ndarray, run: Runner, batch: int = 1) -> float:
    """Largest |run − torch| over the check frames; ``run`` takes the inputs by name
    ("image", then "h_in" for the rnn) and returns the outputs in order."""
    model = model.eval()  # the exporter restores the mode of a wrapper it was handed
    x = preprocess.normalise(np.asarray(frames))  # (N, 3, h, w)
    worst = 0.0
    with torch.no_grad():
        if model_type == "rnn":
            assert isinstance(model, RnnPilot)
            expected = model(torch.from_numpy(x[None])).numpy()[0]  # (N, 2), one sequence
            h = np.zeros(model.state_shape(), np.float32)
            for k in range(len(x)):
                got, h = run({"image": x[k:k + 1], "h_in": h})
                worst = max(worst, float(np.abs(got[0] - expected[k]).max()))
            return worst
        if model_type == "3d":
            windows = np.stack([x[k - seq_len + 1:k + 1] for k in range(seq_len - 1, len(x))])
        else:
            windows = x
        for k in range(0, len(windows), batch):
            chunk = np.ascontiguousarray(windows[k:k + batch])
            expected = model(torch.from_numpy(chunk))
            if isinstance(expected, tuple):  # the categorical: its decoded controls first
                expected = expected[0]
            got = run({"image": chunk})[0]
            worst = max(worst, float(np.abs(got - expected.numpy()).max()))
    return worst


def export_untrained(model_type: str, folder: Path, seq_len: int = 5,
                     preprocess: Preprocess | None = None) -> Path:
    """A freshly initialised model of a family, as `car train` would leave it (``pilot.pt``
    with its check frames, ``pilot.onnx``, ``pilot.pt2``, ``pilot.json`` in ``folder``): for
    benchmarks and tests, where the weights do not matter. Returns the ONNX path."""
    pp = preprocess or Preprocess()
    seq = seq_len if model_type == "3d" else 1
    config = {"pretrained": False} if model_type.startswith("resnet") else {}
    model = build_model(model_type, pp.input_shape, **config)
    folder.mkdir(parents=True, exist_ok=True)
    _, h, w = pp.input_shape
    frames = np.random.default_rng(0).integers(0, 256, (max(6, seq + 1), h, w, 3), np.uint8)
    save_checkpoint(folder / "pilot.pt", model, model_type, config, pp, seq, {},
                    check_frames=frames)
    export_model(model, model_type, pp, seq, folder / "pilot.onnx", frames, {})
    return folder / "pilot.onnx"
