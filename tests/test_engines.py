"""Engines: load_engine by extension, the errors at load, providers, and every engine
agreeing with ONNX Runtime CPU on the same model, temporal state included."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from deploy.engine import EngineError, load_engine
from deploy.onnx_engine import OnnxEngine, available_providers, resolve_providers
from deploy.preprocess import Preprocess

FIXTURE = Path(__file__).parent / "fixtures" / "pilot_linear.onnx"
FAMILIES = ("linear", "resnet18", "3d", "rnn")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """An untrained model of each family: checkpoint, ONNX export and manifest."""
    from training.export import export_untrained

    root = tmp_path_factory.mktemp("families")
    return {family: export_untrained(family, root / family, seq_len=3) for family in FAMILIES}


def frames(n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (120, 160, 3), np.uint8) for _ in range(n)]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_torch_engine_matches_onnx_runtime_cpu_frame_by_frame(family, exported):
    onnx = load_engine(exported[family], "cpu")
    torch_engine = load_engine(exported[family].with_suffix(".pt"), "cpu")
    assert (onnx.name, torch_engine.name) == ("onnxruntime", "torch")
    for engine in (onnx, torch_engine):
        engine.reset()
    got = np.array([[*onnx.predict(f), *torch_engine.predict(f)] for f in frames(6)])
    np.testing.assert_allclose(got[:, :2], got[:, 2:], atol=1e-4)


@pytest.mark.parametrize("family", ["3d", "rnn"])
def test_temporal_state_carries_between_frames_and_resets(family, exported):
    engine = load_engine(exported[family])
    seq = frames(4, seed=2)
    first = [engine.predict(f) for f in seq]
    engine.reset()
    again = [engine.predict(f) for f in seq]
    np.testing.assert_allclose(first, again, atol=1e-6)  # reset gives a fresh start
    engine.reset()
    engine.predict(seq[0])
    after_other = engine.predict(seq[1])
    engine.reset()
    alone = engine.predict(seq[1])
    assert not np.allclose(after_other, alone, atol=1e-7)  # history matters


def test_engines_say_what_they_run_on():
    engine = load_engine(FIXTURE)
    assert isinstance(engine, OnnxEngine)
    assert engine.provider == "CPUExecutionProvider" and engine.precision == "fp32"
    assert engine.describe() == \
        "pilot_linear.onnx (linear) on onnxruntime [CPUExecutionProvider, fp32]"


def test_provider_choice():
    assert resolve_providers(None) == available_providers()
    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available_providers():
        with pytest.raises(EngineError, match="'cuda' is not available here"):
            resolve_providers("cuda")


def copy_model(tmp_path: Path, name: str = "pilot") -> Path:
    model = tmp_path / f"{name}.onnx"
    shutil.copy(FIXTURE, model)
    shutil.copy(FIXTURE.with_suffix(".json"), model.with_suffix(".json"))
    return model


def test_a_missing_manifest_is_refused_at_load(tmp_path):
    model = copy_model(tmp_path)
    model.with_suffix(".json").unlink()
    with pytest.raises(EngineError, match="manifest is missing"):
        load_engine(model)


def test_a_manifest_that_does_not_match_the_model_is_refused(tmp_path):
    model = copy_model(tmp_path)
    manifest = json.loads(model.with_suffix(".json").read_text())
    manifest["preprocess"]["height"] = 60
    model.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="do not belong together"):
        load_engine(model)


def test_a_manifest_naming_another_output_is_refused(tmp_path):
    model = copy_model(tmp_path)
    manifest = json.loads(model.with_suffix(".json").read_text())
    manifest["output"]["name"] = "angle_out"
    model.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="no output 'angle_out'"):
        load_engine(model)


def test_a_manifest_recording_another_files_digest_is_refused(tmp_path, exported):
    model = tmp_path / "pilot.onnx"
    shutil.copy(exported["linear"], model)
    manifest = json.loads(exported["linear"].with_suffix(".json").read_text())
    assert len(manifest["export"]["sha256"]) == 64  # exports record their file's digest
    load_engine(exported["linear"])  # and load beside it
    manifest["export"]["sha256"] = "0" * 64
    model.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="belongs to another model file"):
        load_engine(model)


def test_a_corrupt_or_truncated_model_is_refused(tmp_path):
    model = copy_model(tmp_path)
    model.write_bytes(model.read_bytes()[:5000])
    with pytest.raises(EngineError, match="cannot load the model"):
        load_engine(model)


def test_unknown_extensions_and_missing_files(tmp_path):
    with pytest.raises(EngineError, match=r"unknown model file type '\.h5'"):
        load_engine(tmp_path / "pilot.h5")
    with pytest.raises(EngineError, match="no such model file"):
        load_engine(tmp_path / "pilot.onnx")
    with pytest.raises(EngineError, match="runs on TensorRT only"):
        load_engine(tmp_path / "pilot.trt", provider="cpu")


def test_a_nan_from_the_model_is_returned_for_the_loop_to_judge(tmp_path):
    """The engine does not hide a NaN; the drive loop's safety turns it into neutral."""
    import onnx
    from onnx import TensorProto, helper

    from deploy.manifest import Manifest, save_manifest

    pp = Preprocess(source_width=32, source_height=24, crop_top=0, width=32, height=24)
    nan = helper.make_tensor("nan", TensorProto.FLOAT, [1, 2], [float("nan"), 0.5])
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["m"], keepdims=0),
         helper.make_node("Mul", ["m", "zero"], ["z"]),
         helper.make_node("Add", ["nan", "z"], ["controls"])],
        "nan_model", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 24, 32])],
        [helper.make_tensor_value_info("controls", TensorProto.FLOAT, [1, 2])],
        initializer=[nan, helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "nan.onnx"
    onnx.save(model, path)
    save_manifest(Manifest("linear", pp), path)
    steering, throttle = load_engine(path).predict(np.zeros((24, 32, 3), np.uint8))
    assert np.isnan(steering) and throttle == 0.5


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _torch_cuda(), reason="probe: torch sees no CUDA GPU")
@pytest.mark.parametrize("family", FAMILIES)
def test_torch_on_cuda_matches_onnx_runtime_cpu(family, exported):
    cpu = load_engine(exported[family], "cpu")
    gpu = load_engine(exported[family].with_suffix(".pt"), "cuda")
    assert gpu.provider.startswith("cuda")
    got = np.array([[*cpu.predict(f), *gpu.predict(f)] for f in frames(6)])
    np.testing.assert_allclose(got[:, :2], got[:, 2:], atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif("CUDAExecutionProvider" not in available_providers(),
                    reason="probe: this onnxruntime has no CUDA provider")
@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_runtime_cuda_matches_cpu(family, exported):
    cpu = load_engine(exported[family], "cpu")
    gpu = load_engine(exported[family], "cuda")
    assert gpu.provider == "CUDAExecutionProvider"
    got = np.array([[*cpu.predict(f), *gpu.predict(f)] for f in frames(6)])
    np.testing.assert_allclose(got[:, :2], got[:, 2:], atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_drives_the_simulator_through_the_loop(family, exported, capsys):
    from car.cli import main

    code = main(["drive", "--model", str(exported[family]), "--sim", "oval", "--duration",
                 "1", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["ticks"] >= 5
    assert summary["safety"]["bad_outputs"] == 0 and summary["safety"]["pilot_errors"] == 0
    assert f"({family})" in summary["engine"]
