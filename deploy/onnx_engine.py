"""Running an exported model with ONNX Runtime, on the best provider it has.

Provider order by default: TensorRT (with an engine cache beside the model, so only the
first load pays for the build), then CUDA, then CPU, keeping those this onnxruntime build
offers. ``provider`` forces one (``tensorrt``, ``cuda``, ``cpu`` or a full provider name).
``threads`` sets the intra-op thread count (None: ONNX Runtime's default); worker threads
never spin while waiting, so an idle pilot leaves the CPU to the camera and the loop.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deploy.base import EngineError, ManifestEngine

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
PREFERENCE = tuple(PROVIDERS.values())


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise EngineError("onnxruntime is not installed; `pip install onnxruntime` (or "
                          "onnxruntime-gpu on a CUDA machine) to run .onnx models") from None
    return onnxruntime


def available_providers() -> list[str]:
    """The providers this onnxruntime build offers, in our order of preference."""
    have = _onnxruntime().get_available_providers()
    return [p for p in PREFERENCE if p in have]


def resolve_providers(provider: str | None) -> list[str]:
    """The provider list to ask ONNX Runtime for: one named provider, or all available ones
    in order of preference (it falls back along the list when one cannot start)."""
    have = available_providers()
    if provider is None:
        return have
    name = PROVIDERS.get(provider.lower(), provider)
    if name not in have:
        raise EngineError(f"ONNX Runtime provider {provider!r} is not available here; this "
                          f"build offers {', '.join(k for k, v in PROVIDERS.items() if v in have)}"
                          " (install onnxruntime-gpu for cuda and tensorrt)")
    return [name]


class OnnxEngine(ManifestEngine):
    """``predict(frame)`` → (steering, throttle) for one (H, W, 3) uint8 RGB camera frame."""

    name = "onnxruntime"
    digest_key = ("export", "sha256")

    def __init__(self, path: str | os.PathLike, provider: str | None = None,
                 threads: int | None = None):
        self.session: Any = None
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise EngineError(f"threads = {threads!r}: ONNX Runtime takes a thread count of "
                              "1 or more (or none, for its default)")
        super().__init__(path)
        ort = _onnxruntime()
        wanted = resolve_providers(provider)
        providers: list[Any] = []
        for p in wanted:
            if p == "TensorrtExecutionProvider":
                cache = Path(self.path).parent / ".trt_cache"
                providers.append((p, {"trt_engine_cache_enable": True,
                                      "trt_engine_cache_path": str(cache)}))
            else:
                providers.append(p)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only; a provider fallback is reported below
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EngineError(f"{self.path}: ONNX Runtime cannot load the model (a corrupt or "
                              f"truncated file?): {str(exc).splitlines()[0]}; re-export it "
                              "with `car export`") from None
        self._check_unchanged()  # the session read the file whose digest was checked
        self.provider = self.session.get_providers()[0]
        if provider is not None and self.provider != wanted[0]:
            raise EngineError(f"{self.path}: ONNX Runtime could not start {provider} for this "
                              f"model and fell back to {self.provider}")
        self._ready()

    def _input_shapes(self) -> dict[str, Sequence[int | str | None]]:
        return {i.name: list(i.shape) for i in self.session.get_inputs()}

    def _output_shapes(self) -> dict[str, Sequence[int | str | None]]:
        return {o.name: list(o.shape) for o in self.session.get_outputs()}

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self._outputs, feeds)

    def close(self) -> None:
        """Drop the InferenceSession (ONNX Runtime frees its memory and threads)."""
        self.session = None
        super().close()
