"""What this Python has for the GPU check, printed as one JSON line: Python, torch and CUDA
(GPUs, bfloat16, NCCL), TensorRT, ONNX Runtime and its providers, onnxruntime-gpu,
cuda-python and fastai. Each is imported in turn; a missing or broken one is reported, never
raised. Run by scripts/gpu_check.py with the Python being checked."""

from __future__ import annotations

import importlib.metadata as md
import json
import sys
from typing import Any


def dist(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:160]


def torch_info() -> dict[str, Any]:
    try:
        import torch
    except Exception as exc:  # not installed, or a broken install: say which
        return {"torch_error": error(exc)}
    cuda = torch.cuda.is_available()
    return {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda": cuda,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if cuda else [],
            "nccl": bool(cuda and torch.distributed.is_nccl_available()),
            "bf16": bool(cuda and torch.cuda.is_bf16_supported())}


def inference_stack() -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        import tensorrt

        out["tensorrt"] = str(tensorrt.__version__)
    except Exception as exc:
        out["tensorrt_error"] = error(exc)
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
        out["ort_providers"] = onnxruntime.get_available_providers()
    except Exception as exc:
        out["onnxruntime_error"] = error(exc)
    out["onnxruntime_gpu"] = dist("onnxruntime-gpu")
    out["cuda_python"] = None
    try:  # as deploy/tensorrt_engine.py imports it
        from cuda.bindings import runtime  # noqa: F401

        out["cuda_python"] = dist("cuda-bindings") or dist("cuda-python") or "?"
    except Exception:
        try:
            from cuda import cudart  # noqa: F401

            out["cuda_python"] = dist("cuda-python") or "?"
        except Exception:
            pass
    return out


def main() -> None:
    print(json.dumps({"python": sys.version.split()[0], **torch_info(), **inference_stack(),
                      "fastai": dist("fastai")}))


if __name__ == "__main__":
    main()
