"""The Engine protocol and ``load_engine(path)``: one model file plus its manifest in, a
pilot that maps camera frames to (steering, throttle) out.

Every engine shares what the manifest defines: the numpy/OpenCV preprocessing, the ring of
the last T frames for ``3d`` models, the hidden state for ``rnn`` models, the check that
the model file takes the inputs its manifest names, and a warm-up on load. An engine only
says how to run one step of the model (``_run``) on its runtime.

The runtime libraries (onnxruntime, tensorrt, torch) are imported lazily by the engine that
needs them, so the car installs none it does not use.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from deploy.manifest import Manifest, ManifestError, file_sha256, load_manifest, manifest_path

TENSORRT_SUFFIXES = (".trt", ".engine", ".plan")
MODEL_SUFFIXES = (".onnx", *TENSORRT_SUFFIXES, ".pt")
WARM_UP_RUNS = 3


class EngineError(RuntimeError):
    """A model that cannot be loaded or run here. The message says what to do."""


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


class ManifestEngine:
    """What every engine shares; subclasses implement ``_input_shapes`` and ``_run``."""

    name = "engine"
    provider = "cpu"
    precision = "fp32"
    digest_section: str | None = None  # manifest section whose "sha256" names the file

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise EngineError(f"{self.path}: no such model file")
        try:
            self.manifest: Manifest = load_manifest(self.path)
        except ManifestError as exc:
            raise EngineError(str(exc)) from None
        self._check_digest()
        self._frames: deque[np.ndarray] = deque(maxlen=self.manifest.sequence_length)
        self._state: dict[str, np.ndarray] = {}
        self._outputs = [self.manifest.output_name, *(s.output for s in self.manifest.state)]

    def _check_digest(self) -> None:
        """A manifest that records its model's sha256 must sit beside that very file."""
        if self.digest_section is None:
            return
        expected = getattr(self.manifest, self.digest_section).get("sha256")
        if expected and file_sha256(self.path) != expected:
            raise EngineError(f"{self.path}: its manifest {manifest_path(self.path).name} "
                              "belongs to another model file (the sha256 differs); copy a "
                              "model and its .json together")

    def _ready(self) -> None:
        """Call at the end of a subclass's ``__init__``: check the inputs and outputs, then
        warm up (a model that fails on a blank frame is refused here, not mid-drive)."""
        self._check_inputs()
        self._check_outputs()
        self.reset()
        p = self.manifest.preprocess
        blank = np.zeros((p.source_height, p.source_width, 3), np.uint8)
        try:
            for _ in range(WARM_UP_RUNS):  # first runs pay for allocations, kernel choice
                self.predict(blank)
        except EngineError:
            raise
        except Exception as exc:  # the runtime's own error types
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise EngineError(f"{self.path}: the model fails on a blank frame: "
                              f"{type(exc).__name__}: {first}") from None
        self.reset()

    # ---------------------------------------------------------------- runtime specific
    def _input_shapes(self) -> dict[str, Sequence[int | str | None]]:
        """Input name → shape as the model file declares it (symbolic dims as str/None)."""
        raise NotImplementedError

    def _output_shapes(self) -> dict[str, Sequence[int | str | None]]:
        """Output name → shape as the model file declares it."""
        raise NotImplementedError

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One step: inputs by name → the outputs named in ``self._outputs``, in order."""
        raise NotImplementedError

    def _check_outputs(self) -> None:
        """The model must give the outputs its manifest names, with two or more columns."""
        found = self._output_shapes()
        missing = [name for name in self._outputs if name not in found]
        if missing:
            raise EngineError(f"{self.path}: the model has no output {missing[0]!r} that its "
                              f"manifest names (it has {sorted(found)}); the model file and "
                              "its .json do not belong together (re-export with `car export`)")
        columns = list(found[self.manifest.output_name])[-1:]
        if columns and isinstance(columns[0], int) and columns[0] < 2:
            raise EngineError(f"{self.path}: its output {self.manifest.output_name!r} has "
                              f"{columns[0]} column(s); a pilot gives steering and throttle")

    # ---------------------------------------------------------------- shared
    def _check_inputs(self) -> None:
        """The model file must take what its manifest says it takes."""
        m = self.manifest
        expected = {m.input_name: list(m.input_shape),
                    **{st.input: list(st.shape) for st in m.state}}
        found = self._input_shapes()
        for name, shape in expected.items():
            got = found.get(name)
            if got is None or len(got) != len(shape) or any(
                    isinstance(g, int) and g not in (e, -1) for g, e in zip(got, shape)):
                raise EngineError(f"{self.path}: the model's input {name!r} is "
                                  f"{None if got is None else list(got)}, but its manifest "
                                  f"says {shape}; the model file and its .json do not belong "
                                  "together (re-export with `car export`)")
        extra = sorted(set(found) - set(expected))
        if extra:
            raise EngineError(f"{self.path}: the model takes inputs {extra} that its manifest "
                              "does not name; re-export with `car export`")

    def reset(self) -> None:
        """Forget temporal state (on a mode change, a reset or a gap in the frames)."""
        self._frames.clear()
        self._state = {s.input: np.zeros(s.shape, np.float32) for s in self.manifest.state}

    def preprocess(self, frame: np.ndarray) -> np.ndarray:
        """One (H, W, 3) uint8 RGB camera frame → the (1, 3, h, w) float32 model input."""
        return self.manifest.preprocess(frame)

    def infer(self, x: np.ndarray) -> tuple[float, float]:
        """Run one preprocessed frame; updates the temporal state. May return NaN."""
        m = self.manifest
        if m.model_type == "3d":
            if not self._frames:  # start of a stretch: fill the ring with the first frame
                self._frames.extend([x[0]] * m.sequence_length)
            else:
                self._frames.append(x[0])
            x = np.stack(self._frames)[None]
        results = self._run({m.input_name: x, **self._state})
        for s, value in zip(m.state, results[1:]):
            self._state[s.input] = np.asarray(value, np.float32).reshape(s.shape)
        controls = np.asarray(results[0], np.float32).reshape(-1)
        return float(controls[0]), float(controls[1])

    def predict(self, frame: np.ndarray) -> tuple[float, float]:
        return self.infer(self.preprocess(frame))

    def describe(self) -> str:
        """One line: file, model type, runtime, provider and precision."""
        return (f"{self.path.name} ({self.manifest.model_type}) on {self.name} "
                f"[{self.provider}, {self.precision}]")


def load_engine(path: str | os.PathLike, provider: str | None = None) -> Engine:
    """The engine for a model file, chosen by its extension; reads the manifest beside it.

    ``provider`` picks the ONNX Runtime provider (``tensorrt``, ``cuda``, ``cpu`` or a full
    provider name) or the torch device; TensorRT engines always run on their GPU.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from deploy.onnx_engine import OnnxEngine

        return OnnxEngine(path, provider=provider)
    if suffix in TENSORRT_SUFFIXES:
        from deploy.tensorrt_engine import TensorRTEngine

        if provider not in (None, "tensorrt"):
            raise EngineError(f"{path}: a TensorRT engine runs on TensorRT only; "
                              f"--provider {provider} applies to .onnx models")
        return TensorRTEngine(path)
    if suffix == ".pt":
        from deploy.torch_engine import TorchEngine

        return TorchEngine(path, device=provider)
    raise EngineError(f"{path}: unknown model file type {suffix or '(none)'!r}; expected one "
                      f"of {', '.join(MODEL_SUFFIXES)}")
