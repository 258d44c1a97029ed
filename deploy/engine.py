"""The Engine protocol and ``load_engine(path)``: one model file plus its manifest in, a
pilot that maps camera frames to (steering, throttle) out.

What every engine shares lives in deploy.base (``ManifestEngine``, ``EngineError``); the
concrete engines import it, and this module imports them, lazily: the runtime libraries
(onnxruntime, tensorrt, torch) load only with the engine that needs them, so the car
installs none it does not use. ``EngineError`` and the suffixes are re-exported here, so
``from deploy.engine import Engine, EngineError, load_engine`` serves every caller.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from deploy.base import MODEL_SUFFIXES, TENSORRT_SUFFIXES, EngineError, ManifestEngine
from deploy.manifest import Manifest

__all__ = ["MODEL_SUFFIXES", "TENSORRT_SUFFIXES", "Engine", "EngineError", "ManifestEngine",
           "load_engine"]


@runtime_checkable
class Engine(Protocol):
    """A loaded model. ``infer`` may return NaN: judging outputs is the drive loop's job."""

    path: Path
    manifest: Manifest
    name: str  # the runtime: "onnxruntime", "tensorrt" or "torch"
    provider: str  # where it runs: an ONNX Runtime provider, "cuda:0", "cpu"
    precision: str  # "fp32", "fp16" or "int8"

    def preprocess(self, frame: np.ndarray) -> np.ndarray: ...

    def infer(self, x: np.ndarray) -> tuple[float, float]: ...

    def predict(self, frame: np.ndarray) -> tuple[float, float]: ...

    def reset(self) -> None: ...

    def describe(self) -> str: ...

    def close(self) -> None:
        """Release the runtime (session, GPU buffers, module); idempotent. The engine
        cannot run after."""


def load_engine(path: str | os.PathLike, provider: str | None = None,
                threads: int | None = None) -> Engine:
    """The engine for a model file, chosen by its extension; reads the manifest beside it.

    ``provider`` picks the ONNX Runtime provider (``tensorrt``, ``cuda``, ``cpu`` or a full
    provider name) or the torch device; TensorRT engines always run on their GPU.
    ``threads`` sets ONNX Runtime's intra-op thread count (None: its default); the other
    engines do not use it.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from deploy.onnx_engine import OnnxEngine

        return OnnxEngine(path, provider=provider, threads=threads)
    if suffix in TENSORRT_SUFFIXES:
        from deploy.tensorrt_engine import TensorRTEngine

        if provider not in (None, "tensorrt"):
            raise EngineError(f"{path}: a TensorRT engine runs on TensorRT only; "
                              f"--provider {provider} applies to .onnx models")
        return TensorRTEngine(path)
    if suffix == ".pt2":
        from deploy.torch_engine import TorchEngine

        return TorchEngine(path, device=provider)
    if suffix == ".pt":
        raise EngineError(f"{path}: this is the training checkpoint, which no engine runs; "
                          f"run the {path.with_suffix('.pt2').name} (torch) or "
                          f"{path.with_suffix('.onnx').name} beside it (`car export "
                          f"{path.name}` writes them)")
    raise EngineError(f"{path}: unknown model file type {suffix or '(none)'!r}; expected one "
                      f"of {', '.join(MODEL_SUFFIXES)}")
