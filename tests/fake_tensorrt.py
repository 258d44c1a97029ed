"""Fake ``tensorrt`` and cuda-python runtime modules: the API surface deploy/ uses, on numpy.

``install(monkeypatch)`` puts them in ``sys.modules``. The fake cudart keeps "device"
allocations in a dict keyed by small integer pointers (never host addresses, so host code
that dereferenced one would fail) and copies bytes to and from host memory by address.
The fake engine runs a known function of its inputs:

- image (1, 3, h, w): steering = mean(image) + Σ mean(state inputs), throttle = -mean(image);
- image (1, T, 3, h, w): steering = mean(newest frame), throttle = mean(oldest frame);
- each state output = its state input + 1.

A fake "serialized engine" is JSON naming its I/O tensors; anything else deserializes to None.
"""

from __future__ import annotations

import ctypes
import enum
import json
import sys
import types
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx  # imported now: a test may hide it from deploy.build later

MAGIC = "fake-tensorrt-engine"


class CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorNoDevice = 100


class MemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


@dataclass
class DeviceProp:
    name: bytes
    major: int
    minor: int


class FakeCudart(types.ModuleType):
    """cuda-python's runtime module: every call returns ``(err, *values)``."""

    cudaError_t = CudaError
    cudaMemcpyKind = MemcpyKind

    def __init__(self, gpu_name: str = "Orin", capability: tuple[int, int] = (8, 7)):
        super().__init__("cuda.bindings.runtime")
        self.props = DeviceProp(gpu_name.encode() + b"\0\0", *capability)
        self.device: dict[int, np.ndarray] = {}
        self.host: dict[int, np.ndarray] = {}
        self.streams: set[int] = set()
        self.calls: Counter[str] = Counter()
        self.fail: dict[str, CudaError] = {}  # function name → the error it returns
        self._next = 0x1000

    def _enter(self, name: str) -> CudaError:
        self.calls[name] += 1
        return self.fail.get(name, CudaError.cudaSuccess)

    def cudaGetErrorString(self, err: CudaError) -> tuple[CudaError, bytes]:
        return CudaError.cudaSuccess, f"fake error {err.name}".encode()

    def cudaGetDevice(self) -> tuple[CudaError, int]:
        return self._enter("cudaGetDevice"), 0

    def cudaGetDeviceProperties(self, device: int) -> tuple[CudaError, DeviceProp]:
        return self._enter("cudaGetDeviceProperties"), self.props

    def cudaMalloc(self, size: int) -> tuple[CudaError, int]:
        err = self._enter("cudaMalloc")
        if err:
            return err, 0
        ptr, self._next = self._next, self._next + ((size + 0xFFFF) & ~0xFFFF) + 0x10000
        self.device[ptr] = np.zeros(size, np.uint8)
        return err, ptr

    def cudaMallocHost(self, size: int) -> tuple[CudaError, int]:
        err = self._enter("cudaMallocHost")
        if err:
            return err, 0
        buffer = np.zeros(size, np.uint8)
        self.host[buffer.ctypes.data] = buffer
        return err, buffer.ctypes.data

    def _free(self, name: str, table: dict[int, np.ndarray], ptr: int) -> tuple[CudaError]:
        self._enter(name)
        freed = table.pop(ptr, None) is not None
        return (CudaError.cudaSuccess if freed else CudaError.cudaErrorInvalidValue,)

    def cudaFree(self, ptr: int) -> tuple[CudaError]:
        return self._free("cudaFree", self.device, ptr)

    def cudaFreeHost(self, ptr: int) -> tuple[CudaError]:
        return self._free("cudaFreeHost", self.host, ptr)

    def cudaStreamCreate(self) -> tuple[CudaError, int]:
        err = self._enter("cudaStreamCreate")
        stream = 0x5000 + len(self.streams) + self.calls["cudaStreamCreate"]
        self.streams.add(stream)
        return err, stream

    def cudaStreamSynchronize(self, stream: int) -> tuple[CudaError]:
        err = self._enter("cudaStreamSynchronize")
        return (err if stream in self.streams else CudaError.cudaErrorInvalidValue,)

    def cudaStreamDestroy(self, stream: int) -> tuple[CudaError]:
        self._enter("cudaStreamDestroy")
        self.streams.discard(stream)
        return (CudaError.cudaSuccess,)

    def cudaMemcpy(self, dst: int, src: int, count: int, kind: MemcpyKind) -> tuple[CudaError]:
        err = self._enter("cudaMemcpy")
        return (err or self._copy(dst, src, count, kind),)

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: MemcpyKind,
                        stream: int) -> tuple[CudaError]:
        err = self._enter("cudaMemcpyAsync")
        if stream not in self.streams:
            return (CudaError.cudaErrorInvalidValue,)
        return (err or self._copy(dst, src, count, kind),)

    def _copy(self, dst: int, src: int, count: int, kind: MemcpyKind) -> CudaError:
        if kind == MemcpyKind.cudaMemcpyHostToDevice:
            target = self.device.get(dst)
            if target is None or count > target.size:
                return CudaError.cudaErrorInvalidValue
            target[:count] = np.frombuffer(ctypes.string_at(src, count), np.uint8)
        elif kind == MemcpyKind.cudaMemcpyDeviceToHost:
            source = self.device.get(src)
            if source is None or count > source.size:
                return CudaError.cudaErrorInvalidValue
            ctypes.memmove(dst, source.ctypes.data, count)
        else:
            return CudaError.cudaErrorInvalidValue
        return CudaError.cudaSuccess

    def read(self, ptr: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A copy of device memory as an array (for the fake engine and for tests)."""
        count = int(np.prod(shape))
        return np.frombuffer(self.device[ptr], dtype, count).reshape(shape).copy()


# ------------------------------------------------------------------------------ tensorrt
DataType = enum.Enum("DataType", "FLOAT HALF INT8 INT32 INT64 BOOL UINT8 BF16")
TensorIOMode = enum.Enum("TensorIOMode", "NONE INPUT OUTPUT")
LayerType = enum.Enum("LayerType", "CONVOLUTION ELEMENTWISE REDUCE QUANTIZE DEQUANTIZE")
BuilderFlag = enum.Enum("BuilderFlag", "FP16 INT8 TF32")
MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
NP_TYPES = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
            DataType.INT32: np.int32, DataType.INT64: np.int64, DataType.BOOL: np.bool_,
            DataType.UINT8: np.uint8}


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class Logger:
    VERBOSE, INFO, WARNING, ERROR = range(4)

    def __init__(self, severity: int = 2):
        self.severity = severity


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: Any = DataType.FLOAT


def serialize(inputs: list[Tensor], outputs: list[Tensor]) -> bytes:
    """The fake engine file for these I/O tensors."""
    io = [[t.name, mode, list(t.shape), t.dtype.name]
          for mode, ts in (("INPUT", inputs), ("OUTPUT", outputs)) for t in ts]
    return json.dumps({"magic": MAGIC, "io": io}).encode()


class FakeEngine:
    """ICudaEngine's name-based tensor queries over the JSON spec."""

    def __init__(self, trt: FakeTensorRT, spec: dict[str, Any]):
        self.trt = trt
        self.io = [(n, TensorIOMode[m], tuple(s), DataType[d]) for n, m, s, d in spec["io"]]
        self.num_io_tensors = len(self.io)
        by_name = {t[0]: t for t in self.io}
        self.get_tensor_name = lambda index: self.io[index][0]
        self.get_tensor_mode = lambda name: by_name[name][1]
        self.get_tensor_shape = lambda name: by_name[name][2]
        self.get_tensor_dtype = lambda name: by_name[name][3]
        self.create_execution_context = lambda: FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine):
        self.engine = engine
        self.addresses: dict[str, int] = {}
        self.input_shapes: dict[str, tuple[int, ...]] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        declared = self.engine.get_tensor_shape(name)
        ok = len(shape) == len(declared) and all(d in (-1, s) for d, s in zip(declared, shape))
        if ok:
            self.input_shapes[name] = tuple(shape)
        return ok

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self.input_shapes:
            return self.input_shapes[name]
        shape = self.engine.get_tensor_shape(name)
        return tuple(1 if d == -1 else d for d in shape)  # outputs follow batch 1

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        cudart, trt = self.engine.trt.cudart, self.engine.trt
        assert isinstance(stream_handle, int) and stream_handle in cudart.streams
        trt.executions += 1
        io = self.engine.io
        if {n for n, *_ in io} != set(self.addresses):
            return False
        values = {n: cudart.read(self.addresses[n], self.get_tensor_shape(n), NP_TYPES[d])
                  for n, m, _, d in io if m is TensorIOMode.INPUT}
        image, *states = [v.astype(np.float64) for v in values.values()]
        if image.ndim == 5:
            controls = [image[0, -1].mean(), image[0, 0].mean()]
        else:
            controls = [image.mean() + sum(s.mean() for s in states), -image.mean()]
        outputs = [np.array([controls]), *(s + 1 for s in states)]
        for (name, _, _, dtype), value in zip([t for t in io if t[1] is TensorIOMode.OUTPUT],
                                              outputs):
            data = np.ascontiguousarray(value, NP_TYPES[dtype]).view(np.uint8).reshape(-1)
            cudart.device[self.addresses[name]][:data.size] = data
        return True


class FakeRuntime:
    def __init__(self, trt: FakeTensorRT, logger: Logger):
        self.trt = trt

    def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
        try:
            spec = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return None
        return FakeEngine(self.trt, spec) if spec.get("magic") == MAGIC else None


class FakeNetwork:
    def __init__(self, flags: int):
        self.flags = flags
        self.inputs: list[Tensor] = []
        self.outputs: list[Tensor] = []
        self.layers: list[Any] = []

    num_inputs = property(lambda self: len(self.inputs))
    num_layers = property(lambda self: len(self.layers))

    def get_input(self, index: int) -> Tensor:
        return self.inputs[index]

    def get_layer(self, index: int) -> Any:
        return self.layers[index]


def parser_error(index: int, text: str) -> Any:
    """An IParserError: desc(), node(), node_name(), node_operator()."""
    return types.SimpleNamespace(desc=lambda: text, node=lambda: index,
                                 node_name=lambda: f"node_{index}", node_operator=lambda: "FakeOp")


class OnnxParser:
    """Reads the real ONNX file's inputs, outputs and node types into the fake network."""

    def __init__(self, network: FakeNetwork, logger: Logger):
        self.network = network
        self.errors: list[Any] = []

    num_errors = property(lambda self: len(self.errors))

    def get_error(self, index: int) -> Any:
        return self.errors[index]

    def parse_from_file(self, path: str) -> bool:
        trt = sys.modules["tensorrt"]
        if trt.parser_errors:
            self.errors = [parser_error(i, e) for i, e in enumerate(trt.parser_errors)]
            return False
        graph = onnx.load(path).graph

        def tensors(values: Any) -> list[Tensor]:
            return [Tensor(v.name, tuple(d.dim_value if d.HasField("dim_value") else -1
                                         for d in v.type.tensor_type.shape.dim))
                    for v in values]

        initialisers = {i.name for i in graph.initializer}
        self.network.inputs = [t for t in tensors(graph.input) if t.name not in initialisers]
        self.network.outputs = tensors(graph.output)
        kinds = {"QuantizeLinear": LayerType.QUANTIZE, "DequantizeLinear": LayerType.DEQUANTIZE}
        self.network.layers = [types.SimpleNamespace(type=kinds.get(n.op_type,
                                                                    LayerType.ELEMENTWISE))
                               for n in graph.node]
        return True


class IInt8EntropyCalibrator2:
    def __init__(self) -> None:
        self.base_initialised = True


@dataclass
class Profile:
    shapes: dict[str, tuple[Any, Any, Any]] = field(default_factory=dict)

    def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
        self.shapes[name] = (tuple(low), tuple(opt), tuple(high))


class BuilderConfig:
    def __init__(self) -> None:
        self.flags: set[Any] = set()
        self.pools: dict[Any, int] = {}
        self.profiles: list[Profile] = []
        self.calibration_profile: Profile | None = None
        self.int8_calibrator: Any = None

    def set_flag(self, flag: Any) -> None:
        self.flags.add(flag)

    def set_memory_pool_limit(self, pool: Any, size: int) -> None:
        self.pools[pool] = size

    def add_optimization_profile(self, profile: Profile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_calibration_profile(self, profile: Profile) -> bool:
        self.calibration_profile = profile
        return True


class Builder:
    def __init__(self, logger: Logger):
        self.trt: FakeTensorRT = sys.modules["tensorrt"]
        self.platform_has_fast_fp16 = self.trt.fast_fp16
        self.platform_has_fast_int8 = True
        self.trt.builders.append(self)

    def create_network(self, flags: int = 0) -> FakeNetwork:
        self.network = FakeNetwork(flags)
        return self.network

    def create_builder_config(self) -> BuilderConfig:
        self.config = BuilderConfig()
        return self.config

    def create_optimization_profile(self) -> Profile:
        return Profile()

    def build_serialized_network(self, network: FakeNetwork, config: BuilderConfig) -> Any:
        calibrator = config.int8_calibrator
        if calibrator is not None and calibrator.read_calibration_cache() is None:
            names = [t.name for t in network.inputs]
            while (pointers := calibrator.get_batch(names)) is not None:
                shapes = {t.name: self.trt.calibration_shape(t, config) for t in network.inputs}
                self.trt.calibration_batches.append(
                    {n: self.trt.cudart.read(p, shapes[n], np.float32)
                     for n, p in zip(names, pointers)})
            calibrator.write_calibration_cache(b"fake calibration table")
        if self.trt.build_fails:
            return None
        return serialize(network.inputs, network.outputs)


class FakeTensorRT(types.ModuleType):
    """The ``tensorrt`` module, plus knobs and records for tests."""

    Logger = Logger
    DataType = DataType
    TensorIOMode = TensorIOMode
    LayerType = LayerType
    BuilderFlag = BuilderFlag
    MemoryPoolType = MemoryPoolType
    NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    OnnxParser = OnnxParser
    Builder = Builder
    IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    def __init__(self, cudart: FakeCudart, version: str = "10.3.0"):
        super().__init__("tensorrt")
        self.cudart = cudart
        self.__version__ = version
        self.parser_errors: list[str] = []
        self.build_fails = False
        self.fast_fp16 = True
        self.builders: list[Builder] = []
        self.calibration_batches: list[dict[str, np.ndarray]] = []
        self.executions = 0

    def Runtime(self, logger: Logger) -> FakeRuntime:
        return FakeRuntime(self, logger)

    @staticmethod
    def calibration_shape(tensor: Tensor, config: BuilderConfig) -> tuple[int, ...]:
        profile = config.calibration_profile
        if profile is not None and tensor.name in profile.shapes:
            return profile.shapes[tensor.name][1]
        return tensor.shape

    def engine_section(self, precision: str = "fp32", source: str = "pilot.onnx") -> dict:
        """What `car build` would record on this fake machine."""
        props = self.cudart.props
        return {"tensorrt_version": self.__version__,
                "gpu_name": props.name.rstrip(b"\0").decode(),
                "compute_capability": f"{props.major}.{props.minor}", "precision": precision,
                "int8_method": None, "workspace_mb": 1024, "source": source,
                "built_at": "2025-01-01T00:00:00+00:00", "build_s": 1.0}


def install(monkeypatch: Any, *, version: str = "10.3.0", gpu_name: str = "Orin",
            capability: tuple[int, int] = (8, 7)) -> FakeTensorRT:
    """Put fake ``tensorrt`` and ``cuda`` (both import paths) into ``sys.modules``."""
    cudart = FakeCudart(gpu_name, capability)
    trt = FakeTensorRT(cudart, version)
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart  # type: ignore[attr-defined]
    cuda = types.ModuleType("cuda")
    cuda.bindings, cuda.cudart = bindings, cudart  # type: ignore[attr-defined]
    for name, module in (("tensorrt", trt), ("cuda", cuda), ("cuda.bindings", bindings),
                         ("cuda.bindings.runtime", cudart), ("cuda.cudart", cudart)):
        monkeypatch.setitem(sys.modules, name, module)
    return trt


def hide(monkeypatch: Any, *names: str) -> None:
    """Make ``import NAME`` fail for each name (None in sys.modules raises ImportError)."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)

