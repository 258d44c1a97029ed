"""TensorRT engine and `car build`, against fake tensorrt/cuda-python modules (fake_tensorrt),
plus one real build-and-run on a machine with TensorRT, cuda-python and a GPU."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploy.engine import EngineError, load_engine
from deploy.manifest import Manifest, StateTensor, load_manifest, manifest_path, save_manifest
from deploy.preprocess import Preprocess
from tests import fake_tensorrt as fake
from tests.fake_tensorrt import DataType, Tensor

PRE = Preprocess(source_width=32, source_height=24, crop_top=8, width=24, height=16)
LINEAR = Manifest("linear", PRE)
THREE_D = Manifest("3d", PRE, sequence_length=3)
RNN = Manifest("rnn", PRE, state=(StateTensor("h_in", "h_out", (1, 8)),))


def camera_frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)


def mean_of(frame: np.ndarray) -> float:
    return float(PRE(frame).astype(np.float64).mean())


def write_onnx(path: Path, *, qdq: bool = False, dynamic_batch: bool = False,
               manifest: Manifest = LINEAR) -> Path:
    """A small conv net: image (1, 3, 16, 24) → controls (1, 2), with its manifest."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b"),
            numpy_helper.from_array(rng.normal(0, 0.5, (2, 4)).astype(np.float32), "fc_w"),
            numpy_helper.from_array(np.zeros(2, np.float32), "fc_b")]
    nodes, first = [], "image"
    if qdq:
        init += [numpy_helper.from_array(np.array(0.02, np.float32), "scale"),
                 numpy_helper.from_array(np.array(0, np.int8), "zero")]
        nodes += [helper.make_node("QuantizeLinear", ["image", "scale", "zero"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"])]
        first = "dq"
    nodes += [helper.make_node("Conv", [first, "w", "b"], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c"], ["r"]),
              helper.make_node("GlobalAveragePool", ["r"], ["p"]),
              helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["g"], transB=1),
              helper.make_node("Tanh", ["g"], ["controls"])]
    batch = "batch" if dynamic_batch else 1
    graph = helper.make_graph(
        nodes, "pilot",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 16, 24])],
        [helper.make_tensor_value_info("controls", TensorProto.FLOAT, [batch, 2])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    save_manifest(manifest, path)
    return path


def fake_engine(path: Path, trt: fake.FakeTensorRT, manifest: Manifest, *,
                dtype: DataType = DataType.FLOAT, precision: str = "fp32",
                engine: dict | None = None) -> Path:
    """A fake engine file for ``manifest`` and its manifest with an engine section."""
    inputs = [Tensor(manifest.input_name, manifest.input_shape, dtype),
              *(Tensor(s.input, s.shape) for s in manifest.state)]
    outputs = [Tensor(manifest.output_name, (1, 2), dtype),
               *(Tensor(s.output, s.shape) for s in manifest.state)]
    path.write_bytes(fake.serialize(inputs, outputs))
    section = trt.engine_section(precision) if engine is None else engine
    save_manifest(dataclasses.replace(manifest, engine=section), path)
    return path


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch) -> fake.FakeTensorRT:
    return fake.install(monkeypatch)


# ----------------------------------------------------------------------------- the engine
def test_engine_loads_and_predicts_the_known_function(trt, tmp_path: Path) -> None:
    from deploy.tensorrt_engine import TensorRTEngine

    engine = load_engine(fake_engine(tmp_path / "pilot.trt", trt, LINEAR, precision="fp16"))
    assert isinstance(engine, TensorRTEngine)
    assert (engine.name, engine.provider, engine.precision) == ("tensorrt", "cuda:0 Orin", "fp16")
    assert "on tensorrt [cuda:0 Orin, fp16]" in engine.describe()
    for seed in range(3):
        m = mean_of(camera_frame(seed))
        assert engine.predict(camera_frame(seed)) == pytest.approx((m, -m), abs=1e-5)


def test_device_buffers_are_allocated_once_and_freed_on_close(trt, tmp_path: Path) -> None:
    from deploy.tensorrt_engine import TensorRTEngine

    engine = TensorRTEngine(fake_engine(tmp_path / "pilot.trt", trt, RNN))
    cudart = trt.cudart
    allocated = (cudart.calls["cudaMalloc"], cudart.calls["cudaMallocHost"])
    assert allocated == (4, 4)  # image, h_in, controls, h_out
    runs = trt.executions
    for seed in range(50):
        engine.predict(camera_frame(seed))
    assert (cudart.calls["cudaMalloc"], cudart.calls["cudaMallocHost"]) == allocated
    assert cudart.calls["cudaStreamCreate"] == 1 and trt.executions == runs + 50
    engine.close()
    engine.close()  # idempotent: nothing freed twice
    assert cudart.device == {} and cudart.host == {} and cudart.streams == set()
    with pytest.raises(EngineError, match="closed"):
        engine.predict(camera_frame(0))


def test_3d_engine_sees_a_ring_of_the_last_frames(trt, tmp_path: Path) -> None:
    engine = load_engine(fake_engine(tmp_path / "pilot.trt", trt, THREE_D))
    f = [camera_frame(seed) for seed in range(5)]
    m = [mean_of(x) for x in f]
    assert engine.predict(f[0]) == pytest.approx((m[0], m[0]), abs=1e-5)  # ring filled
    assert engine.predict(f[1]) == pytest.approx((m[1], m[0]), abs=1e-5)
    engine.predict(f[2])
    assert engine.predict(f[3]) == pytest.approx((m[3], m[1]), abs=1e-5)  # f0 left the ring
    engine.reset()
    assert engine.predict(f[4]) == pytest.approx((m[4], m[4]), abs=1e-5)


def test_rnn_engine_carries_its_state(trt, tmp_path: Path) -> None:
    engine = load_engine(fake_engine(tmp_path / "pilot.trt", trt, RNN))
    frame = camera_frame(7)
    m = mean_of(frame)
    steps = [engine.predict(frame)[0] for _ in range(3)]
    assert steps == pytest.approx([m, m + 1, m + 2], abs=1e-5)  # h_out = h_in + 1 fed back
    engine.reset()
    assert engine.predict(frame)[0] == pytest.approx(m, abs=1e-5)


@pytest.mark.parametrize("shape, message", [((1, 3), "3 column(s) where its manifest names 2"),
                                            ((2, 2), "a batch of 2 rows")])
def test_an_engine_whose_output_does_not_fit_its_manifest_is_refused(trt, tmp_path: Path,
                                                                     shape, message) -> None:
    path = tmp_path / "pilot.trt"
    path.write_bytes(fake.serialize([Tensor("image", LINEAR.input_shape)],
                                    [Tensor("controls", shape)]))
    save_manifest(dataclasses.replace(LINEAR, engine=trt.engine_section()), path)
    with pytest.raises(EngineError, match=re.escape(message)) as caught:
        load_engine(path)
    assert "\n" not in str(caught.value) and "car build" in str(caught.value)
    assert trt.cudart.device == {} and trt.cudart.host == {}  # freed on the way out


def test_fp16_io_engine_casts_in_and_out(trt, tmp_path: Path) -> None:
    engine = load_engine(fake_engine(tmp_path / "pilot.trt", trt, LINEAR, dtype=DataType.HALF))
    m = mean_of(camera_frame(1))
    steering, throttle = engine.predict(camera_frame(1))
    assert isinstance(steering, float)
    assert (steering, throttle) == pytest.approx((m, -m), abs=2e-3)


def test_dynamic_batch_engine_gets_its_input_shape_set(trt, tmp_path: Path) -> None:
    path = tmp_path / "pilot.trt"
    path.write_bytes(fake.serialize([Tensor("image", (-1, 3, 16, 24))],
                                    [Tensor("controls", (-1, 2))]))
    save_manifest(dataclasses.replace(LINEAR, engine=trt.engine_section()), path)
    m = mean_of(camera_frame(2))
    assert load_engine(path).predict(camera_frame(2)) == pytest.approx((m, -m), abs=1e-5)


@pytest.mark.parametrize("change, built_for", [
    ({"tensorrt_version": "8.6.2"}, "TensorRT 8.6.2 on Orin (sm_87)"),
    ({"gpu_name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"},
     "TensorRT 10.3.0 on NVIDIA GeForce RTX 4090 (sm_89)"),
])
def test_an_engine_from_another_version_or_gpu_says_rebuild(trt, tmp_path: Path, change,
                                                            built_for) -> None:
    path = fake_engine(tmp_path / "pilot.trt", trt, LINEAR,
                       engine=trt.engine_section() | change)
    with pytest.raises(EngineError) as caught:
        load_engine(path)
    message = str(caught.value)
    assert f"built for {built_for}" in message
    assert "this machine has TensorRT 10.3.0 on Orin (sm_87)" in message
    assert message.endswith("rebuild it here with `car build pilot.onnx`")
    assert "\n" not in message and trt.cudart.calls["cudaMalloc"] == 0


def test_an_engine_tensorrt_cannot_deserialize_says_rebuild(trt, tmp_path: Path) -> None:
    path = fake_engine(tmp_path / "pilot.trt", trt, LINEAR)
    path.write_bytes(b"\x00garbage")
    with pytest.raises(EngineError, match=r"could not deserialize.*rebuild it here with "
                                          r"`car build pilot.onnx`"):
        load_engine(path)


def test_a_manifest_without_an_engine_section_is_not_from_car_build(trt, tmp_path) -> None:
    path = fake_engine(tmp_path / "pilot.trt", trt, LINEAR, engine={})
    with pytest.raises(EngineError, match="not built by `car build`"):
        load_engine(path)


def test_engine_and_manifest_that_disagree_are_refused_without_leaks(trt, tmp_path) -> None:
    path = fake_engine(tmp_path / "pilot.trt", trt, LINEAR)
    save_manifest(dataclasses.replace(THREE_D, engine=trt.engine_section()), path)
    with pytest.raises(EngineError, match="do not belong together"):
        load_engine(path)
    assert trt.cudart.device == {} and trt.cudart.host == {}


def test_a_cuda_failure_is_an_engine_error_and_frees_what_was_allocated(trt, tmp_path) -> None:
    path = fake_engine(tmp_path / "pilot.trt", trt, LINEAR)
    trt.cudart.fail["cudaMallocHost"] = fake.CudaError.cudaErrorMemoryAllocation
    with pytest.raises(EngineError, match="CUDA error in cudaMallocHost: fake error "
                                          "cudaErrorMemoryAllocation"):
        load_engine(path)
    assert trt.cudart.device == {} and trt.cudart.streams == set()


def test_missing_tensorrt_or_cuda_python_says_what_to_install(monkeypatch, tmp_path) -> None:
    trt = fake.install(monkeypatch)
    path = fake_engine(tmp_path / "pilot.trt", trt, LINEAR)
    fake.hide(monkeypatch, "tensorrt")
    with pytest.raises(EngineError, match=r"TensorRT is not installed.*JetPack.*pip install "
                                          r"tensorrt"):
        load_engine(path)
    fake.install(monkeypatch)
    fake.hide(monkeypatch, "cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart")
    with pytest.raises(EngineError, match="`pip install cuda-python`"):
        load_engine(path)


def test_older_cuda_python_import_path_works(monkeypatch, tmp_path) -> None:
    trt = fake.install(monkeypatch)
    fake.hide(monkeypatch, "cuda.bindings", "cuda.bindings.runtime")  # cuda-python < 12.6
    m = mean_of(camera_frame(0))
    path = fake_engine(tmp_path / "pilot.trt", trt, LINEAR)
    assert load_engine(path).predict(camera_frame(0)) == pytest.approx((m, -m), abs=1e-5)


# ----------------------------------------------------------------------------- building
def test_build_writes_the_engine_and_its_manifest(trt, tmp_path: Path) -> None:
    from deploy.build import build_engine

    onnx_path = write_onnx(tmp_path / "pilot.onnx")
    lines: list[str] = []
    built = build_engine(onnx_path, tmp_path / "pilot.trt", log=lines.append)
    (builder,) = trt.builders
    assert builder.network.flags == 0  # TensorRT 10: explicit batch is the only mode
    assert builder.config.flags == set() and builder.config.int8_calibrator is None
    assert builder.config.pools == {fake.MemoryPoolType.WORKSPACE: 1024 << 20}
    assert not list(tmp_path.glob(".*.tmp"))
    saved = json.loads(manifest_path(tmp_path / "pilot.trt").read_text())["engine"]
    assert saved == built.engine
    assert {k: saved[k] for k in ("tensorrt_version", "gpu_name", "compute_capability",
                                  "precision", "int8_method", "workspace_mb", "source")} == {
        "tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7",
        "precision": "fp32", "int8_method": None, "workspace_mb": 1024, "source": "pilot.onnx"}
    assert saved["built_at"].startswith("20") and saved["build_s"] >= 0
    assert load_manifest(onnx_path).model_type == "linear"  # the ONNX engine still reads it
    m = mean_of(camera_frame(3))
    assert load_engine(tmp_path / "pilot.trt").predict(camera_frame(3)) == pytest.approx(
        (m, -m), abs=1e-5)


def test_tensorrt_8_gets_the_explicit_batch_flag(monkeypatch, tmp_path: Path) -> None:
    from deploy.build import build_engine

    trt = fake.install(monkeypatch, version="8.6.1")
    build_engine(write_onnx(tmp_path / "pilot.onnx"), tmp_path / "pilot.trt", log=print)
    assert trt.builders[0].network.flags == 1 << int(fake.NetworkDefinitionCreationFlag
                                                     .EXPLICIT_BATCH)


def test_fp16_sets_the_flag_and_warns_without_fast_fp16(trt, tmp_path: Path) -> None:
    from deploy.build import build_engine

    trt.fast_fp16 = False
    lines: list[str] = []
    built = build_engine(write_onnx(tmp_path / "pilot.onnx"), tmp_path / "pilot.trt",
                         fp16=True, workspace_mb=256, log=lines.append)
    assert trt.builders[0].config.flags == {fake.BuilderFlag.FP16}
    assert trt.builders[0].config.pools[fake.MemoryPoolType.WORKSPACE] == 256 << 20
    assert built.engine["precision"] == "fp16"
    assert any("no fast FP16" in line for line in lines)


def test_every_parser_error_is_logged(trt, tmp_path: Path) -> None:
    from deploy.build import BuildError, build_engine

    trt.parser_errors = ["unsupported operator Foo", "bad shape for Bar"]
    lines: list[str] = []
    with pytest.raises(BuildError, match="cannot parse this model \\(2 error") as caught:
        build_engine(write_onnx(tmp_path / "pilot.onnx"), tmp_path / "pilot.trt",
                     log=lines.append)
    assert "\n" not in str(caught.value)
    assert [line for line in lines if line.startswith("ONNX parser error")] == [
        "ONNX parser error: FakeOp 'node_0': unsupported operator Foo",
        "ONNX parser error: FakeOp 'node_1': bad shape for Bar"]
    assert not (tmp_path / "pilot.trt").exists()


def test_a_failed_build_writes_nothing(trt, tmp_path: Path) -> None:
    from deploy.build import BuildError, build_engine

    trt.build_fails = True
    onnx_path = write_onnx(tmp_path / "pilot.onnx")
    with pytest.raises(BuildError, match="could not build the engine"):
        build_engine(onnx_path, tmp_path / "pilot.trt", log=print)
    assert not (tmp_path / "pilot.trt").exists()
    assert load_manifest(onnx_path).engine == {}


def test_int8_without_frames_or_qdq_fails(trt, tmp_path: Path) -> None:
    from deploy.build import BuildError, build_engine

    with pytest.raises(BuildError, match="INT8 needs calibration frames"):
        build_engine(write_onnx(tmp_path / "pilot.onnx"), tmp_path / "pilot.trt", int8=True)


@pytest.mark.parametrize("onnx_importable", [True, False])
def test_int8_with_qdq_nodes_needs_no_calibrator(trt, monkeypatch, tmp_path: Path,
                                                 onnx_importable: bool) -> None:
    from deploy.build import build_engine, has_qdq_nodes

    onnx_path = write_onnx(tmp_path / "pilot.onnx", qdq=True)
    assert has_qdq_nodes(onnx_path) is True
    assert has_qdq_nodes(write_onnx(tmp_path / "plain.onnx")) is False
    if not onnx_importable:  # then the parsed network's layers tell
        fake.hide(monkeypatch, "onnx")
        assert has_qdq_nodes(onnx_path) is None
    built = build_engine(onnx_path, tmp_path / "pilot.trt", int8=True, log=print)
    assert built.engine["int8_method"] == "explicit_qdq"
    assert trt.builders[0].config.int8_calibrator is None
    assert fake.BuilderFlag.INT8 in trt.builders[0].config.flags


def test_int8_calibrates_on_preprocessed_frames_and_caches(trt, tmp_path: Path) -> None:
    from deploy.build import build_engine

    frames = [camera_frame(seed) for seed in range(6)]
    onnx_path = write_onnx(tmp_path / "pilot.onnx")
    built = build_engine(onnx_path, tmp_path / "pilot.trt", int8=True, fp16=True,
                         calibration_frames=frames, log=print)
    assert built.engine["precision"] == "int8"
    assert built.engine["int8_method"] == "entropy_calibrator"
    config = trt.builders[0].config
    assert config.flags == {fake.BuilderFlag.INT8, fake.BuilderFlag.FP16}
    assert config.int8_calibrator.get_batch_size() == 1
    assert len(trt.calibration_batches) == 6
    for batch, frame in zip(trt.calibration_batches, frames):
        np.testing.assert_allclose(batch["image"], PRE(frame), atol=1e-6)
    assert (tmp_path / "pilot.calib").read_bytes() == b"fake calibration table"
    assert trt.cudart.device == {}  # calibration buffers freed
    lines: list[str] = []
    build_engine(onnx_path, tmp_path / "pilot.trt", int8=True, calibration_frames=frames,
                 log=lines.append)
    assert len(trt.calibration_batches) == 6 and any("reusing" in line for line in lines)


def test_3d_and_rnn_calibration_batches(trt, tmp_path: Path) -> None:
    from deploy.build import calibration_batches

    frames = [camera_frame(seed) for seed in range(7)]
    windows = list(calibration_batches(THREE_D, frames))
    assert len(windows) == 2  # non-overlapping windows of 3 consecutive frames
    np.testing.assert_allclose(windows[1]["image"][0, 2], PRE(frames[5])[0], atol=1e-6)
    assert windows[0]["image"].shape == (1, 3, 3, 16, 24)
    (first, *_) = list(calibration_batches(RNN, frames))
    assert set(first) == {"image", "h_in"} and not first["h_in"].any()


def test_the_calibrator_returns_none_when_exhausted_or_broken(trt, tmp_path: Path) -> None:
    from deploy.build import CalibrationFeed, calibration_batches, entropy_calibrator

    frames = [camera_frame(seed) for seed in range(2)]
    feed = CalibrationFeed(trt.cudart, calibration_batches(LINEAR, frames),
                           {"image": np.dtype(np.float32)}, print)
    calibrator = entropy_calibrator(trt, feed, tmp_path / "x.calib", tmp_path / "x.onnx", print)
    assert isinstance(calibrator, fake.IInt8EntropyCalibrator2) and calibrator.base_initialised
    assert calibrator.read_calibration_cache() is None
    for frame in frames:
        (ptr,) = calibrator.get_batch(["image"])
        np.testing.assert_allclose(trt.cudart.read(ptr, (1, 3, 16, 24), np.float32),
                                   PRE(frame), atol=1e-6)
    assert calibrator.get_batch(["image"]) is None and feed.count == 2
    feed.close()
    broken = CalibrationFeed(trt.cudart, iter([{"other": np.zeros(1)}]), {}, print)
    assert broken.next(["image"]) is None and isinstance(broken.error, KeyError)


def test_dynamic_batch_gets_a_batch_1_profile(trt, tmp_path: Path) -> None:
    from deploy.build import build_engine

    build_engine(write_onnx(tmp_path / "pilot.onnx", dynamic_batch=True), tmp_path / "p.trt",
                 int8=True, calibration_frames=[camera_frame(0)], log=print)
    config = trt.builders[0].config
    (profile,) = config.profiles
    assert profile.shapes == {"image": ((1, 3, 16, 24),) * 3}
    assert config.calibration_profile is profile


def test_build_without_tensorrt_says_how_to_get_it(monkeypatch, tmp_path: Path) -> None:
    from deploy.build import build_engine

    fake.hide(monkeypatch, "tensorrt")
    with pytest.raises(EngineError) as caught:
        build_engine(write_onnx(tmp_path / "pilot.onnx"), tmp_path / "pilot.trt")
    assert str(caught.value) == (
        "TensorRT is not installed on this machine; car build needs it (on a Jetson it comes "
        "with JetPack; on a desktop `pip install tensorrt`); meanwhile run the .onnx model, "
        "which uses ONNX Runtime")


# ----------------------------------------------------------------------------- car build
def car(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """`car ARGV` in this process."""
    from car import cli

    return cli.main(argv)


def test_car_build_without_tensorrt_is_one_clear_line(monkeypatch, tmp_path, capsys) -> None:
    fake.hide(monkeypatch, "tensorrt")
    onnx_path = write_onnx(tmp_path / "pilot.onnx")
    assert car(["build", str(onnx_path)], monkeypatch) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("car: error: TensorRT is not installed on this machine; car "
                              "build needs it")
    assert not (tmp_path / "pilot.trt").exists()


def test_car_build_builds_then_refuses_to_overwrite(trt, monkeypatch, tmp_path, capsys) -> None:
    onnx_path = write_onnx(tmp_path / "pilot.onnx")
    assert car(["build", str(onnx_path), "--fp16"], monkeypatch) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"built {tmp_path / 'pilot.trt'} (fp16, ") and "\n" not in out
    assert "TensorRT 10.3.0 on Orin (sm_87)" in out
    assert car(["build", str(onnx_path)], monkeypatch) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert car(["build", str(onnx_path), "--force", "--out", str(tmp_path / "b.engine")],
               monkeypatch) == 0


def test_car_build_int8_needs_frames_unless_qdq(trt, monkeypatch, tmp_path, capsys) -> None:
    assert car(["build", str(write_onnx(tmp_path / "pilot.onnx")), "--int8"], monkeypatch) == 1
    assert "add --calib-tub DIR" in capsys.readouterr().err
    assert car(["build", str(write_onnx(tmp_path / "q.onnx", qdq=True)), "--int8"],
               monkeypatch) == 0
    assert "(int8 via explicit qdq," in capsys.readouterr().out


def test_car_build_int8_calibrates_on_a_tub(trt, monkeypatch, tmp_path, capsys) -> None:
    from car.tub import TubWriter

    tub = tmp_path / "tub"
    with TubWriter(tub, ["cam/image_array", "user/angle"], ["image_array", "float"]) as w:
        for i in range(40):
            w.write({"cam/image_array": camera_frame(i), "user/angle": 0.0})
    next((tub / "images").iterdir()).write_bytes(b"not a jpeg")  # a broken image is skipped
    onnx_path = write_onnx(tmp_path / "pilot.onnx")
    code = car(["build", str(onnx_path), "--int8", "--calib-tub", str(tmp_path / "tu*"),
                "--calib-frames", "20"], monkeypatch)
    assert code == 0, capsys.readouterr().err
    assert 19 <= len(trt.calibration_batches) <= 20
    assert "(int8 via entropy calibrator," in capsys.readouterr().out


# ----------------------------------------------------------------------------- real GPU
def real_tensorrt() -> str | None:
    """Why a real TensorRT build cannot run here, or None when it can."""
    try:
        import tensorrt  # noqa: F401

        from deploy.tensorrt_engine import current_gpu, import_cudart

        current_gpu(import_cudart())
    except (ImportError, EngineError) as exc:
        return f"needs TensorRT, cuda-python and a GPU: {exc}"
    return None


NO_REAL_TENSORRT = real_tensorrt()


@pytest.mark.gpu
@pytest.mark.skipif(NO_REAL_TENSORRT is not None, reason=str(NO_REAL_TENSORRT))
def test_real_engine_matches_onnx_runtime(tmp_path: Path) -> None:
    from deploy.build import build_engine
    from deploy.onnx_engine import OnnxEngine
    from deploy.tensorrt_engine import TensorRTEngine

    onnx_path = write_onnx(tmp_path / "pilot.onnx")
    built = build_engine(onnx_path, tmp_path / "pilot.trt", log=print)
    assert built.engine["precision"] == "fp32"
    engine = TensorRTEngine(tmp_path / "pilot.trt")
    reference = OnnxEngine(onnx_path, provider="cpu")
    for seed in range(10):
        frame = camera_frame(seed)
        np.testing.assert_allclose(engine.predict(frame), reference.predict(frame), atol=1e-3)
    engine.close()
