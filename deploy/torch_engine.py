"""Running the exported torch program (``pilot.pt2``, a ``torch.export`` ExportedProgram
written by `car train` / `car export` beside ``pilot.onnx``) with torch, for debugging: it
should agree with the ONNX model it sits beside. It runs the program export saved (the
rnn's one-step module with explicit hidden state, the 3d model's (1, T, 3, h, w) window)
and never rebuilds the model from the training checkpoint, so it needs torch but nothing
of training/. The one engine that imports torch, lazily, so the car's install needs none.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from deploy.base import EngineError, ManifestEngine

NOT_AN_EXPORT = ("not a torch.export program (a corrupt or truncated file?); re-export it "
                 "with `car export pilot.pt`")


class TorchEngine(ManifestEngine):
    """A ``pilot.pt2`` ExportedProgram, run one step at a time in torch, with the same
    inputs and outputs as the ONNX export beside it."""

    name = "torch"
    digest_key = ("export", "pt2_sha256")  # every export that writes a .pt2 records it
    digest_required = True
    load_bytes = True
    remedy = ("the .pt2 and its .json do not belong together (re-export with `car export "
              "pilot.pt`)")

    def __init__(self, path: str | os.PathLike, device: str | None = None):
        self._module: Any = None
        super().__init__(path)
        try:
            import torch
        except ImportError:
            raise EngineError(f"{self.path}: running a .pt2 program needs torch (`pip install "
                              "torch`, or the training extra); on the car, run the .onnx or "
                              ".trt model instead") from None
        self._torch = torch
        if device in (None, "cuda"):
            device = "cuda" if device == "cuda" or torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError("--provider cuda: torch sees no CUDA GPU here")
        if device not in ("cpu",) and not device.startswith("cuda"):
            raise EngineError(f"--provider {device!r}: a .pt2 model runs on 'cpu' or 'cuda'")
        program = self._load_program(torch)
        if device != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, device)
        self._declared = _declared_shapes(program)
        self._module = program.module()
        self._device = torch.device(device)
        self.provider = str(self._device)
        self._ready()

    def _load_program(self, torch: Any) -> Any:
        """The program from the bytes whose sha256 was checked against the manifest."""
        data, self._model_bytes = self._model_bytes or b"", None
        if not zipfile.is_zipfile(io.BytesIO(data)):
            raise EngineError(f"{self.path}: {NOT_AN_EXPORT}")
        try:
            return torch.export.load(io.BytesIO(data))
        except Exception as exc:  # torch raises archive, pickle and schema errors
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise EngineError(f"{self.path}: {NOT_AN_EXPORT} ({type(exc).__name__}: "
                              f"{first[:120]})") from None

    def _input_shapes(self) -> dict[str, Sequence[int | str | None]]:
        """The program's inputs, in order, under the names its manifest gives them."""
        m = self.manifest
        names = [m.input_name, *(s.input for s in m.state)]
        inputs = self._declared[0]
        return {(names[k] if k < len(names) else f"input {k + 1}"): shape
                for k, shape in enumerate(inputs)}

    def _output_shapes(self) -> dict[str, Sequence[int | str | None]]:
        """The program's outputs, in order, under the names its manifest gives them."""
        outputs = self._declared[1]
        return {(self._outputs[k] if k < len(self._outputs) else f"output {k + 1}"): shape
                for k, shape in enumerate(outputs)}

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        m = self.manifest
        names = [m.input_name, *(s.input for s in m.state)]
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self._device)
                    for n in names]
            out = self._module(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float().cpu().numpy() for o in outs]

    def close(self) -> None:
        """Drop the module (torch frees its weights, on the GPU too)."""
        self._module = None
        super().close()


def _declared_shapes(program: Any) -> tuple[list[list[int | str]], list[list[int | str]]]:
    """(input shapes, output shapes) of the program's user inputs and outputs, in order;
    a symbolic dimension as its name."""
    nodes = {n.name: n for n in program.graph.nodes}
    signature = program.graph_signature

    def shape(name: str) -> list[int | str]:
        value = nodes[name].meta.get("val") if name in nodes else None
        dims = getattr(value, "shape", None)
        if dims is None:
            return []
        return [int(d) if isinstance(d, int) else str(d) for d in dims]

    return ([shape(n) for n in signature.user_inputs],
            [shape(str(n)) for n in signature.user_outputs])
