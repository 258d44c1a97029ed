"""Running the training checkpoint (``pilot.pt``) with torch, for debugging: it should agree
with the exported ``pilot.onnx`` it sits beside. The one engine that imports torch, and the
one place deploy/ reaches into training/ (for the model classes), both lazily, so the car's
install needs neither."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from deploy.engine import EngineError, ManifestEngine


class TorchEngine(ManifestEngine):
    """A ``pilot.pt`` checkpoint written by `car train`, run one step at a time in torch,
    with the same inputs and outputs as its ONNX export."""

    name = "torch"

    def __init__(self, path: str | os.PathLike, device: str | None = None):
        super().__init__(path)
        try:
            import torch

            from training.checkpoint import load_checkpoint
            from training.models.rnn import RnnStep
            from training.records import DataError
        except ImportError:
            raise EngineError(f"{self.path}: running a .pt checkpoint needs torch and the "
                              "training extra (`pip install -e .[training]`); on the car, run "
                              "the .onnx or .trt model instead") from None
        self._torch = torch
        if device in (None, "cuda"):
            device = "cuda" if device == "cuda" or torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError("--provider cuda: torch sees no CUDA GPU here")
        if device not in ("cpu",) and not device.startswith("cuda"):
            raise EngineError(f"--provider {device!r}: a .pt model runs on 'cpu' or 'cuda'")
        try:
            model, meta = load_checkpoint(self.path)
        except DataError as exc:
            raise EngineError(str(exc)) from None
        if meta["model_type"] != self.manifest.model_type:
            raise EngineError(f"{self.path}: the checkpoint holds a {meta['model_type']} model "
                              f"but its manifest says {self.manifest.model_type}; re-export "
                              "with `car export`")
        self._module: Any = (RnnStep(model) if meta["model_type"] == "rnn" else model).eval()
        self._module.to(device)
        self._device = torch.device(device)
        self.provider = str(self._device)
        self._ready()

    def _input_shapes(self) -> dict[str, Sequence[int | str | None]]:
        """A checkpoint declares no input shapes; it takes what its manifest names."""
        m = self.manifest
        return {m.input_name: list(m.input_shape), **{s.input: list(s.shape) for s in m.state}}

    def _output_shapes(self) -> dict[str, Sequence[int | str | None]]:
        """Nor does it declare outputs: ``_run`` returns those the manifest names, in order."""
        return {name: [] for name in self._outputs}

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        m = self.manifest
        names = [m.input_name, *(s.input for s in m.state)]
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self._device)
                    for n in names]
            out = self._module(*args)
        outs = out if isinstance(out, tuple) else (out,)
        return [o.float().cpu().numpy() for o in outs]
