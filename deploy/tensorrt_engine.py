"""Running a serialized TensorRT engine (``pilot.trt``, written by `car build`).

TensorRT (>= 8.5, name-based tensor API) and cuda-python are imported when an engine loads.
An engine only runs with the TensorRT version and on the GPU model it was built with, so
the load first compares the manifest's ``engine`` section with this machine and says how
to rebuild. Device buffers, page-locked host buffers and one CUDA stream are made once at
load; each step copies in, runs ``execute_async_v3`` and copies out on that stream.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deploy.base import EngineError, ManifestEngine

INSTALL_TENSORRT = ("on a Jetson it comes with JetPack; on a desktop `pip install tensorrt`")
INSTALL_CUDA_PYTHON = ("`pip install cuda-python` (the release matching your CUDA major "
                       "version; on a Jetson, the one for JetPack's CUDA)")


def import_tensorrt(purpose: str = "a .trt engine needs it") -> Any:
    """The ``tensorrt`` module, or an EngineError saying how to get it."""
    try:
        import tensorrt
    except ImportError:
        raise EngineError(f"TensorRT is not installed on this machine; {purpose} "
                          f"({INSTALL_TENSORRT}); meanwhile run the .onnx model, which uses "
                          "ONNX Runtime") from None
    return tensorrt


def import_cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before
    cuda-python 12.6), or an EngineError saying how to get it."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise EngineError(f"cuda-python is not installed; TensorRT engines need it to "
                              f"move data to the GPU: {INSTALL_CUDA_PYTHON}") from None
    return runtime


def cuda_call(cudart: Any, result: Any, what: str) -> Any:
    """Check a cuda-python ``(err, *values)`` result; the value (or values), or EngineError."""
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        try:
            text = cudart.cudaGetErrorString(err)[1]
            text = text.decode() if isinstance(text, bytes) else str(text)
        except Exception:  # the error string is a courtesy; the code is enough
            text = str(err)
        raise EngineError(f"CUDA error in {what}: {text} ({getattr(err, 'name', err)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


@dataclass(frozen=True)
class Gpu:
    """The GPU this process runs on."""

    index: int
    name: str
    compute_capability: str  # "8.7"

    @property
    def sm(self) -> str:
        return "sm_" + self.compute_capability.replace(".", "")


def current_gpu(cudart: Any) -> Gpu:
    """The current CUDA device, or an EngineError when there is none usable."""
    try:
        index = int(cuda_call(cudart, cudart.cudaGetDevice(), "cudaGetDevice"))
        props = cuda_call(cudart, cudart.cudaGetDeviceProperties(index),
                          "cudaGetDeviceProperties")
    except EngineError as exc:
        raise EngineError(f"no usable CUDA GPU here ({exc}); TensorRT needs an NVIDIA GPU "
                          "and its driver") from None
    name = props.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode(errors="replace")
    return Gpu(index, str(name).strip(), f"{int(props.major)}.{int(props.minor)}")


def numpy_dtype(trt: Any, dtype: Any) -> np.dtype:
    """The numpy dtype of a TensorRT DataType (EngineError for one numpy lacks, like bf16)."""
    names = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
             "INT64": np.int64, "BOOL": np.bool_, "UINT8": np.uint8}
    for name, np_type in names.items():
        if hasattr(trt.DataType, name) and dtype == getattr(trt.DataType, name):
            return np.dtype(np_type)
    raise EngineError(f"a TensorRT tensor of type {dtype} has no numpy equivalent; export "
                      "the model with float32 inputs and outputs")


def check_built_here(path: os.PathLike, engine: dict[str, Any], trt_version: str,
                     gpu: Gpu) -> None:
    """EngineError unless the engine was built with this TensorRT on this GPU model."""
    built = (str(engine.get("tensorrt_version")), str(engine.get("gpu_name")),
             str(engine.get("compute_capability")))
    if built == (trt_version, gpu.name, gpu.compute_capability):
        return
    raise EngineError(rebuild_message(path, engine, f"this machine has TensorRT {trt_version} "
                                                    f"on {gpu.name} ({gpu.sm})"))


def rebuild_message(path: os.PathLike, engine: dict[str, Any], problem: str) -> str:
    cc = str(engine.get("compute_capability", "?")).replace(".", "")
    source = engine.get("source") or "MODEL.onnx"
    return (f"{path}: this engine was built for TensorRT {engine.get('tensorrt_version', '?')} "
            f"on {engine.get('gpu_name', '?')} (sm_{cc}); {problem}; a TensorRT engine runs "
            f"only where it was built: rebuild it here with `car build {source}`")


class TensorRTEngine(ManifestEngine):
    """``predict(frame)`` → (steering, throttle) on a TensorRT engine built by `car build`."""

    name = "tensorrt"
    digest_key = ("engine", "sha256")
    load_bytes = True
    remedy = ("the engine and its .json do not belong together (rebuild it with `car build` "
              "from the .onnx)")

    def __init__(self, path: str | os.PathLike):
        self._device: dict[str, int] = {}
        self._host_ptrs: list[int] = []
        self._stream: Any = None
        self._context: Any = None
        self._trt_engine: Any = None
        self._cudart: Any = None
        self._runtime: Any = None
        self._host: dict[str, np.ndarray] = {}
        super().__init__(path)
        built = self.manifest.engine
        if not built:
            raise EngineError(f"{self.path}: its manifest has no `engine` section, so this "
                              "file was not built by `car build` (or the model was exported "
                              "again since); build the engine with "
                              f"`car build {self.path.with_suffix('.onnx').name}`")
        trt = import_tensorrt()
        self._cudart = cudart = import_cudart()
        gpu = current_gpu(cudart)
        check_built_here(self.path, built, str(trt.__version__), gpu)
        self.provider = f"cuda:{gpu.index} {gpu.name}"
        self.precision = str(built.get("precision", "fp32"))
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._trt_logger)
        reason = "TensorRT could not deserialize it here"
        data, self._model_bytes = self._model_bytes or b"", None  # the bytes hashed
        try:
            engine = self._runtime.deserialize_cuda_engine(data)
        except Exception as exc:  # some TensorRT versions raise instead of returning None
            engine = None
            reason += f" ({(str(exc).splitlines() or [type(exc).__name__])[0]})"
        if engine is None:
            raise EngineError(rebuild_message(
                self.path, built, f"{reason}: a corrupt or truncated file, or one from another "
                                  "TensorRT version or GPU"))
        self._trt_engine = engine
        try:
            self._setup(trt, engine)
            self._ready()
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- loading
    def _setup(self, trt: Any, engine: Any) -> None:
        """Sort the I/O tensors, fix dynamic shapes, allocate buffers, bind addresses."""
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._engine_shapes = {n: [int(d) for d in engine.get_tensor_shape(n)]
                               for n in self._inputs}
        self._output_engine_shapes = {n: [int(d) for d in engine.get_tensor_shape(n)]
                                      for n in names if n not in self._inputs}
        missing = [o for o in self._outputs if o not in names or o in self._inputs]
        if missing:
            raise EngineError(f"{self.path}: the engine has no output {missing[0]!r} that its "
                              "manifest names; the engine and its .json do not belong together "
                              "(rebuild with `car build`)")
        self._check_inputs()  # before allocating: a mismatch is the clearer error
        self._context = context = engine.create_execution_context()
        if context is None:
            raise EngineError(f"{self.path}: TensorRT could not create an execution context "
                              "(out of GPU memory?)")
        m = self.manifest
        wanted = {m.input_name: m.input_shape, **{s.input: s.shape for s in m.state}}
        for name in self._inputs:
            if -1 in self._engine_shapes[name] and not context.set_input_shape(
                    name, tuple(wanted[name])):
                raise EngineError(f"{self.path}: the engine does not accept input {name!r} of "
                                  f"shape {list(wanted[name])} (its optimization profile)")
        cudart = self._cudart
        self._stream = cuda_call(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        for name in names:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            dtype = numpy_dtype(trt, engine.get_tensor_dtype(name))
            nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
            self._device[name] = int(cuda_call(cudart, cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self._host[name] = self._pinned(shape, dtype, nbytes)
            if not context.set_tensor_address(name, self._device[name]):
                raise EngineError(f"{self.path}: TensorRT refused the buffer of tensor {name!r}")

    def _pinned(self, shape: tuple[int, ...], dtype: np.dtype, nbytes: int) -> np.ndarray:
        """A page-locked host array (fast, truly asynchronous copies) viewed as numpy."""
        cudart = self._cudart
        ptr = int(cuda_call(cudart, cudart.cudaMallocHost(nbytes), "cudaMallocHost"))
        self._host_ptrs.append(ptr)
        raw = (ctypes.c_byte * nbytes).from_address(ptr)
        count = int(np.prod(shape))
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    # ---------------------------------------------------------------- ManifestEngine
    def _input_shapes(self) -> dict[str, Sequence[int | str | None]]:
        return {n: list(s) for n, s in self._engine_shapes.items()}

    def _output_shapes(self) -> dict[str, Sequence[int | str | None]]:
        return {n: list(s) for n, s in self._output_engine_shapes.items()}

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._context is None:
            raise EngineError(f"{self.path}: the engine was closed")
        cudart, stream = self._cudart, self._stream
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self._inputs:
            host = self._host[name]
            value = np.asarray(feeds[name])
            if value.size != host.size:
                raise EngineError(f"{self.path}: input {name!r} has shape {list(value.shape)}, "
                                  f"the engine takes {list(host.shape)}")
            np.copyto(host, value.reshape(host.shape), casting="unsafe")  # e.g. fp16 inputs
            cuda_call(cudart, cudart.cudaMemcpyAsync(self._device[name], host.ctypes.data,
                                                     host.nbytes, h2d, stream),
                      "cudaMemcpyAsync (to the GPU)")
        if not self._context.execute_async_v3(int(stream)):
            raise EngineError(f"{self.path}: TensorRT failed to run the engine "
                              "(execute_async_v3; its log above says why)")
        for name in self._outputs:
            host = self._host[name]
            cuda_call(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, self._device[name],
                                                     host.nbytes, d2h, stream),
                      "cudaMemcpyAsync (from the GPU)")
        cuda_call(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return [self._host[name].astype(np.float32) for name in self._outputs]  # copies

    # ---------------------------------------------------------------- cleanup
    def close(self) -> None:
        """Free the GPU and page-locked memory and the stream, drop the execution context
        and the deserialized engine; the engine is unusable after. Safe to call twice."""
        cudart = self._cudart
        self._context = None  # the context goes before the buffers it points at
        self._trt_engine = None
        self._runtime = None
        self._host = {}  # views of the page-locked memory freed below
        if cudart is not None:
            for ptr in self._device.values():
                cudart.cudaFree(ptr)
            for ptr in self._host_ptrs:
                cudart.cudaFreeHost(ptr)
            if self._stream is not None:
                cudart.cudaStreamDestroy(self._stream)
        self._device, self._host_ptrs, self._stream = {}, [], None
        super().close()

    def __del__(self) -> None:
        # At interpreter shutdown cuda-python may already be gone; nothing left to free.
        with contextlib.suppress(Exception):
            self.close()
