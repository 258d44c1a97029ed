"""Running an exported model with ONNX Runtime: preprocessing from its manifest, temporal
state kept between frames (a ring of the last T frames for ``3d``, the hidden state for
``rnn``), and a warm-up on load."""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

import numpy as np

from deploy.manifest import Manifest, ManifestError, load_manifest


class EngineError(RuntimeError):
    """A model that cannot be loaded or run here."""


class OnnxEngine:
    """``predict(frame)`` → (steering, throttle) for one (H, W, 3) uint8 RGB camera frame."""

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise EngineError(f"{self.path}: no such model file")
        try:
            self.manifest: Manifest = load_manifest(self.path)
        except ManifestError as exc:
            raise EngineError(str(exc)) from None
        try:
            self.session = ort.InferenceSession(str(self.path),
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EngineError(f"{self.path}: ONNX Runtime cannot load the model: "
                              f"{str(exc).splitlines()[0]}") from None
        self.provider = self.session.get_providers()[0]
        self._check_inputs()
        self._frames: deque[np.ndarray] = deque(maxlen=self.manifest.sequence_length)
        self._state: dict[str, np.ndarray] = {}
        self.reset()
        self._warm_up()

    def _check_inputs(self) -> None:
        """The model file must take what its manifest says it takes."""
        m = self.manifest
        expected = {m.input_name: list(m.input_shape),
                    **{st.input: list(st.shape) for st in m.state}}
        found = {i.name: list(i.shape) for i in self.session.get_inputs()}
        for name, shape in expected.items():
            got = found.get(name)
            if got is None or any(isinstance(g, int) and g != e for g, e in zip(got, shape)) \
                    or len(got) != len(shape):
                raise EngineError(f"{self.path}: the model's input {name!r} is {got}, but its "
                                  f"manifest says {shape}; the .onnx and .json do not belong "
                                  "together (re-export with `car export`)")

    def reset(self) -> None:
        """Forget temporal state (call on a mode change, a reset or a gap in the frames)."""
        self._frames.clear()
        self._state = {s.input: np.zeros(s.shape, np.float32) for s in self.manifest.state}

    def _warm_up(self) -> None:
        p = self.manifest.preprocess
        self.predict(np.zeros((p.source_height, p.source_width, 3), np.uint8))
        self.reset()

    def predict(self, frame: np.ndarray) -> tuple[float, float]:
        m = self.manifest
        x = m.preprocess(frame)  # (1, 3, h, w)
        if m.model_type == "3d":
            if not self._frames:  # start of a stretch: fill the ring with the first frame
                self._frames.extend([x[0]] * m.sequence_length)
            else:
                self._frames.append(x[0])
            x = np.stack(self._frames)[None]
        feeds = {m.input_name: x, **self._state}
        names = [m.output_name, *(s.output for s in m.state)]
        results = self.session.run(names, feeds)
        for s, value in zip(m.state, results[1:]):
            self._state[s.input] = value
        controls = results[0].reshape(-1)
        if not np.isfinite(controls[:2]).all():
            raise EngineError(f"{self.path.name} produced {controls[:2].tolist()}; the model "
                              "output is not finite")
        return float(controls[0]), float(controls[1])
