"""ONNX → TensorRT engine (`car build`), on the machine that will run it.

The engine is written beside its manifest: a copy of the ONNX model's manifest plus an
``engine`` section (TensorRT version, GPU, precision, INT8 method) that the engine loader
checks, because an engine runs only with the TensorRT version and GPU model it was built on.

INT8 comes one of two ways: an ONNX model with QuantizeLinear/DequantizeLinear nodes carries
its own scales (explicit quantization); otherwise TensorRT's entropy calibrator measures
them on real camera frames, preprocessed as the manifest says, and caches the result.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deploy.base import TENSORRT_SUFFIXES, EngineError
from deploy.manifest import (
    Manifest,
    ManifestError,
    file_sha256,
    load_manifest,
    manifest_path,
)
from deploy.model_swap import ModelSwap, recover
from deploy.tensorrt_engine import (
    Gpu,
    cuda_call,
    current_gpu,
    import_cudart,
    import_tensorrt,
    numpy_dtype,
)

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
Log = Callable[[str], Any]


class BuildError(EngineError):
    """An engine that cannot be built as asked. The message says what to do."""


def toolchain() -> tuple[Any, Any, Gpu]:
    """(tensorrt, cudart, the current GPU), or a BuildError saying what is missing."""
    trt = import_tensorrt("car build needs it")
    cudart = import_cudart()
    return trt, cudart, current_gpu(cudart)


def has_qdq_nodes(onnx_path: str | os.PathLike) -> bool | None:
    """Whether the ONNX model has Q/DQ nodes (explicit INT8); None if `onnx` cannot tell."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:  # unreadable here: the TensorRT parser will say why
        return None
    graphs = [model.graph, *(f for f in model.functions)]
    return any(node.op_type in QDQ_OPS for g in graphs for node in g.node)


def network_has_qdq(trt: Any, network: Any) -> bool:
    """Whether the parsed TensorRT network has quantize or dequantize layers."""
    kinds = (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
    return any(network.get_layer(i).type in kinds for i in range(network.num_layers))


def calibration_batches(manifest: Manifest,
                        frames: Sequence[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """Model inputs for INT8 calibration, one batch-1 feed per step: a preprocessed frame,
    for ``3d`` models each T consecutive frames (non-overlapping), and zero recurrent state
    for ``rnn`` models."""
    m = manifest
    state = {s.input: np.zeros(s.shape, np.float32) for s in m.state}
    if m.model_type == "3d":
        t = m.sequence_length
        for start in range(0, len(frames) - t + 1, t):
            window = [m.preprocess(f)[0] for f in frames[start:start + t]]
            yield {m.input_name: np.stack(window)[None], **state}
    else:
        for frame in frames:
            yield {m.input_name: m.preprocess(frame), **state}


class CalibrationFeed:
    """What the entropy calibrator hands TensorRT: each batch copied into device buffers
    made once, their pointers in the order TensorRT names the inputs, None when done.
    An error here is kept (a Python exception must not cross into TensorRT) and raised
    after the build."""

    def __init__(self, cudart: Any, batches: Iterator[dict[str, np.ndarray]],
                 dtypes: dict[str, np.dtype], log: Log):
        self.cudart, self.batches, self.dtypes, self.log = cudart, batches, dtypes, log
        self.device: dict[str, tuple[int, int]] = {}  # name → (pointer, bytes)
        self.count = 0
        self.error: Exception | None = None

    def next(self, names: Sequence[str]) -> list[int] | None:
        if self.error is not None:
            return None
        try:
            batch = next(self.batches, None)
            if batch is None:
                return None
            pointers = [self._upload(name, batch[name]) for name in names]
        except Exception as exc:
            self.error = exc
            return None
        self.count += 1
        return pointers

    def _upload(self, name: str, value: np.ndarray) -> int:
        cudart = self.cudart
        host = np.ascontiguousarray(value, dtype=self.dtypes.get(name, np.float32))
        if name not in self.device:
            ptr = cuda_call(cudart, cudart.cudaMalloc(host.nbytes), "cudaMalloc")
            self.device[name] = (int(ptr), host.nbytes)
        ptr, nbytes = self.device[name]
        if host.nbytes != nbytes:
            raise BuildError(f"calibration input {name!r} changed size ({host.nbytes} bytes, "
                             f"was {nbytes})")
        cuda_call(cudart, cudart.cudaMemcpy(ptr, host.ctypes.data, nbytes,
                                            cudart.cudaMemcpyKind.cudaMemcpyHostToDevice),
                  "cudaMemcpy (calibration batch)")
        return ptr

    def close(self) -> None:
        for ptr, _ in self.device.values():
            self.cudart.cudaFree(ptr)
        self.device = {}


def entropy_calibrator(trt: Any, feed: CalibrationFeed, cache_path: Path, onnx_path: Path,
                       log: Log) -> Any:
    """A ``trt.IInt8EntropyCalibrator2`` over ``feed``, with a cache file that is reused
    while it is newer than the ONNX model (delete it to recalibrate)."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.feed = feed

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: Sequence[str], *_: Any) -> list[int] | None:
            return feed.next(names)

        def read_calibration_cache(self, *_: Any) -> bytes | None:
            try:
                if cache_path.stat().st_mtime >= onnx_path.stat().st_mtime:
                    log(f"reusing the INT8 calibration cache {cache_path} (delete it to "
                        "calibrate again)")
                    return cache_path.read_bytes()
            except OSError:
                pass
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            tmp = cache_path.with_name(f".{cache_path.name}.tmp")
            tmp.write_bytes(bytes(cache))
            os.replace(tmp, cache_path)

    return EntropyCalibrator()


def _parser_error(error: Any) -> str:
    """One parser error as a line: the node it concerns, then TensorRT's description."""
    def get(name: str) -> Any:
        try:
            return getattr(error, name)()
        except Exception:  # older TensorRT lacks node_name/node_operator
            return None

    desc = get("desc") or str(error)
    name, op, node = get("node_name"), get("node_operator"), get("node")
    if name:
        return f"{op or 'node'} {name!r}: {desc}"
    if isinstance(node, int) and node >= 0:
        return f"node {node}: {desc}"
    return str(desc)


def _builder_flag(trt: Any, name: str, instead: str) -> Any:
    """``trt.BuilderFlag.<name>``; TensorRT 11 dropped the FP16 and INT8 flags."""
    flag = getattr(trt.BuilderFlag, name, None)
    if flag is None:
        raise BuildError(f"TensorRT {trt.__version__} has no {name} builder flag (its networks "
                         f"are strongly typed); {instead}, or build with TensorRT 8.5 to 10")
    return flag


def _network_flags(trt: Any) -> int:
    """Explicit batch: a flag before TensorRT 10, the only mode (flag deprecated) since."""
    if int(str(trt.__version__).split(".")[0]) >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _fixed_shapes(builder: Any, network: Any, manifest: Manifest) -> Any:
    """An optimization profile pinning dynamic dimensions to batch 1, or None if none."""
    m = manifest
    wanted = {m.input_name: m.input_shape, **{s.input: s.shape for s in m.state}}
    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = [int(d) for d in tensor.shape]
        if -1 in shape:
            fixed = tuple(wanted.get(tensor.name) or [1 if d == -1 else d for d in shape])
            profile = profile or builder.create_optimization_profile()
            profile.set_shape(tensor.name, fixed, fixed, fixed)
    return profile


def build_engine(onnx_path: str | os.PathLike, out_path: str | os.PathLike, *,
                 fp16: bool = False, int8: bool = False,
                 calibration_frames: Sequence[np.ndarray] | None = None,
                 workspace_mb: int = 1024, log: Log = print) -> Manifest:
    """Build ``out_path`` from ``onnx_path`` here; writes the engine and its manifest and
    returns the manifest. ``calibration_frames``: (H, W, 3) uint8 RGB camera frames, in
    recording order, for INT8 without Q/DQ nodes."""
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if not onnx_path.is_file():
        raise BuildError(f"{onnx_path}: no such ONNX model")
    if out_path.suffix.lower() not in TENSORRT_SUFFIXES:
        raise BuildError(f"{out_path}: an engine file must end in "
                         f"{', '.join(TENSORRT_SUFFIXES)} so `car drive` knows it")
    recover(onnx_path)  # an export stopped after its commit point: finish it first
    try:
        manifest = load_manifest(onnx_path)
    except ManifestError as exc:
        raise BuildError(str(exc)) from None
    trt, cudart, gpu = toolchain()
    version = str(trt.__version__)
    qdq = has_qdq_nodes(onnx_path)
    n_frames = 0 if calibration_frames is None else len(calibration_frames)
    if int8 and qdq is False and not n_frames:
        raise BuildError(f"{onnx_path}: INT8 needs calibration frames (--calib-tub DIR) "
                         "because the model has no Q/DQ nodes")

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    log(f"parsing {onnx_path} with TensorRT {version}")
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        for line in errors:
            log(f"ONNX parser error: {line}")
        raise BuildError(f"{onnx_path}: TensorRT {version} cannot parse this model "
                         f"({len(errors)} error(s){', listed above' if errors else ''}"
                         f"{'; first: ' + errors[0] if errors else ''}); re-export it with "
                         "`car export`, or use the .onnx model with ONNX Runtime")
    if qdq is None:
        qdq = network_has_qdq(trt, network)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    profile = _fixed_shapes(builder, network, manifest)
    if profile is not None:
        config.add_optimization_profile(profile)
    if fp16:
        if not getattr(builder, "platform_has_fast_fp16", True):
            log(f"warning: {gpu.name} has no fast FP16; the engine may be no faster than FP32")
        config.set_flag(_builder_flag(trt, "FP16", "export the model in FP16 instead"))
    method, feed = None, None
    if int8:
        if not getattr(builder, "platform_has_fast_int8", True):
            log(f"warning: {gpu.name} has no fast INT8; the engine may be no faster")
        if hasattr(trt.BuilderFlag, "INT8") or not qdq:  # strongly typed TensorRT needs none
            config.set_flag(_builder_flag(trt, "INT8", "use a model with Q/DQ nodes"))
        if qdq:
            method = "explicit_qdq"
            log("INT8 from the model's Q/DQ nodes (explicit quantization, no calibration)")
        elif not n_frames or calibration_frames is None:
            raise BuildError(f"{onnx_path}: INT8 needs calibration frames (--calib-tub DIR) "
                             "because the model has no Q/DQ nodes")
        else:
            method = "entropy_calibrator"
            inputs = [network.get_input(i) for i in range(network.num_inputs)]
            dtypes = {t.name: numpy_dtype(trt, t.dtype) for t in inputs}
            _check_frames(manifest, calibration_frames)
            feed = CalibrationFeed(cudart, calibration_batches(manifest, calibration_frames),
                                   dtypes, log)
            cache = out_path.with_suffix(".calib")
            config.int8_calibrator = entropy_calibrator(trt, feed, cache, onnx_path, log)
            if profile is not None:
                config.set_calibration_profile(profile)
            log(f"INT8 calibration on {n_frames} frames (cache: {cache})")
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"

    log(f"building the {precision} engine for {gpu.name} ({gpu.sm}); this can take minutes")
    start = time.monotonic()
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if feed is not None:
            feed.close()
    build_s = time.monotonic() - start
    if feed is not None and feed.error is not None:
        raise BuildError(f"INT8 calibration failed after {feed.count} batches: "
                         f"{feed.error}") from None
    if serialized is None:
        raise BuildError(f"{onnx_path}: TensorRT {version} could not build the engine (its "
                         "log above says why); try without --int8/--fp16, or a larger "
                         "--workspace-mb")
    with ModelSwap(out_path, log) as swap:  # the engine and its manifest, swapped as one
        _check_source_unchanged(onnx_path, out_path, manifest)
        staged = swap.stage(out_path)
        staged.write_bytes(serialized)
        built = dataclasses.replace(manifest, engine={
            "tensorrt_version": version, "gpu_name": gpu.name,
            "compute_capability": gpu.compute_capability, "precision": precision,
            "int8_method": method, "workspace_mb": int(workspace_mb),
            "source": onnx_path.name, "built_at": datetime.datetime.now(
                datetime.timezone.utc).isoformat(timespec="seconds"),
            "build_s": round(build_s, 1), "sha256": file_sha256(staged)})
        swap.commit(built)
    return built


def _check_source_unchanged(onnx_path: Path, out_path: Path, manifest: Manifest) -> None:
    """An engine beside its ONNX model shares its manifest: if the model was exported again
    during the build, writing the old manifest back would unpair the new model."""
    if manifest_path(out_path) != manifest_path(onnx_path):
        return  # the engine gets a manifest of its own, a copy of the one it was built from
    try:
        now = load_manifest(onnx_path)
    except ManifestError:
        now = None
    if now is None or dataclasses.replace(now, engine={}) != dataclasses.replace(
            manifest, engine={}):
        raise BuildError(f"{onnx_path} was exported again while the engine was built from "
                         "the previous one; run `car build` again")


def _check_frames(manifest: Manifest, frames: Sequence[np.ndarray]) -> None:
    """Calibration frames must be the camera frames the model takes (checked before the
    build: an error inside TensorRT's calibration callback would be hard to read)."""
    p = manifest.preprocess
    want = (p.source_height, p.source_width, 3)
    for i, frame in enumerate(frames):
        if frame.shape != want or frame.dtype != np.uint8:
            raise BuildError(f"calibration frame {i} is {frame.dtype} {frame.shape}; the model "
                             f"takes {p.source_width}x{p.source_height} RGB uint8 camera "
                             "frames: calibrate on tubs recorded with this camera setting")
    if manifest.model_type == "3d" and len(frames) < manifest.sequence_length:
        raise BuildError(f"a 3d model calibrates on windows of {manifest.sequence_length} "
                         f"frames; only {len(frames)} were given")
