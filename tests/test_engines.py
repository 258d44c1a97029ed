"""Engines: load_engine by extension, the errors at load (outputs that do not match the
manifest included), providers and threads, close(), and every engine agreeing with ONNX
Runtime CPU on the same model, temporal state included."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from deploy.engine import EngineError, load_engine
from deploy.manifest import Manifest, file_sha256, save_manifest
from deploy.onnx_engine import OnnxEngine, available_providers, resolve_providers
from deploy.preprocess import Preprocess

FIXTURE = Path(__file__).parent / "fixtures" / "pilot_linear.onnx"
FAMILIES = ("linear", "categorical", "resnet18", "3d", "rnn")


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
    torch_engine = load_engine(exported[family].with_suffix(".pt2"), "cpu")
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


PP = Preprocess(source_width=32, source_height=24, crop_top=0, width=32, height=24)


def constant_model(path: Path, values, manifest: Manifest | None = None,
                   declared: list | None = None) -> Path:
    """An ONNX model whose output ``controls`` is ``values`` (any shape) whatever the image,
    declared as ``declared`` (default: the values' shape), beside its manifest."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    values = np.asarray(values, np.float32)

    def branch(name: str, value: np.ndarray):
        out = helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
        return helper.make_graph([helper.make_node("Identity", [f"{name}_v"], [name])], name,
                                 [], [out], [numpy_helper.from_array(value, f"{name}_v")])

    # Through an If whose branches differ in shape, so shape inference cannot pin the
    # output's shape and the declared symbolic dims stay symbolic.
    other = np.zeros(tuple(d + 1 for d in values.shape), np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["m"], keepdims=0),
         helper.make_node("Greater", ["m", "low"], ["always"]),
         helper.make_node("If", ["always"], ["values"], then_branch=branch("a", values),
                          else_branch=branch("b", other)),
         helper.make_node("Mul", ["m", "zero"], ["z"]),
         helper.make_node("Add", ["values", "z"], ["controls"])],
        "constant", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 24, 32])],
        [helper.make_tensor_value_info("controls", TensorProto.FLOAT,
                                       declared or list(values.shape))],
        initializer=[helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
                     helper.make_tensor("low", TensorProto.FLOAT, [], [-1e9])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    save_manifest(manifest or Manifest("linear", PP), path)
    return path


def one_line_error(path: Path, **kw) -> str:
    with pytest.raises(EngineError) as caught:
        load_engine(path, **kw)
    text = str(caught.value)
    assert "\n" not in text and str(path.with_suffix("")) in text, text  # model or .json
    return text


def test_a_nan_from_the_model_is_returned_for_the_loop_to_judge(tmp_path):
    """The engine does not hide a NaN; the drive loop's safety turns it into neutral."""
    path = constant_model(tmp_path / "nan.onnx", [[float("nan"), 0.5]])
    steering, throttle = load_engine(path).predict(np.zeros((24, 32, 3), np.uint8))
    assert np.isnan(steering) and throttle == 0.5


def test_steering_and_throttle_are_found_by_their_names_in_the_manifest(tmp_path):
    swapped = Manifest("linear", PP, output_names=("throttle", "steering"))
    path = constant_model(tmp_path / "m.onnx", [[0.25, -0.5]], swapped)
    assert load_engine(path).predict(np.zeros((24, 32, 3), np.uint8)) == (-0.5, 0.25)
    extra = Manifest("linear", PP, output_names=("steering", "brake", "throttle"),
                     output_ranges=((-1.0, 1.0), (0.0, 1.0), (-1.0, 1.0)))
    path = constant_model(tmp_path / "e.onnx", [[0.1, 0.9, 0.3]], extra)
    assert load_engine(path).predict(np.zeros((24, 32, 3), np.uint8)) == pytest.approx(
        (0.1, 0.3))


@pytest.mark.parametrize("values, declared, message", [
    ([[0.1, 0.2, 0.3]], None, "declares 'controls' with 3 column(s) where its manifest names 2"),
    ([[0.1, 0.2], [0.3, 0.4]], None, "declares 'controls' with a batch of 2 rows where batch 1"),
    ([[0.1, 0.2], [0.3, 0.4]], ["batch", 2], "gives 'controls' with a batch of 2 rows"),
    ([[0.1, 0.2, 0.3]], [1, "columns"], "gives 'controls' with 3 column(s)"),
    ([0.1, 0.2], None, "is [2], not (batch, columns)"),
])
def test_a_model_whose_outputs_do_not_match_its_manifest_is_refused_at_load(
        tmp_path, values, declared, message):
    """Declared shapes are checked first; symbolic ones by the warm-up's real array."""
    text = one_line_error(constant_model(tmp_path / "m.onnx", values, declared=declared))
    assert message in text and "re-export with `car export`" in text


def test_a_torch_program_whose_outputs_do_not_match_its_manifest_is_refused(tmp_path):
    import torch

    class ThreeColumns(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return image.mean(dim=(2, 3))  # (1, 3)

    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(ThreeColumns(), (torch.zeros(1, 3, 24, 32),)), path)
    save_manifest(Manifest("linear", PP, export={"pt2_sha256": file_sha256(path)}), path)
    assert "3 column(s) where its manifest names 2" in one_line_error(path)


@pytest.mark.parametrize("names, ranges, message", [
    (("angle", "throttle"), ((-1.0, 1.0), (-1.0, 1.0)), 'one "steering" and one "throttle"'),
    (("steering", "throttle"), ((-2.0, 2.0), (-1.0, 1.0)), "range [-2, 2]"),
    (("steering", "throttle"), ((-1.0, 1.0), (0.5, 0.0)), "range [0.5, 0]"),
])
def test_a_manifest_without_steering_and_throttle_in_range_is_refused(tmp_path, names, ranges,
                                                                      message):
    manifest = Manifest("linear", PP, output_names=names, output_ranges=ranges)
    text = one_line_error(constant_model(tmp_path / "m.onnx", [[0.1, 0.2]], manifest))
    assert message in text


def test_onnx_runtime_threads_are_set_when_asked():
    assert load_engine(FIXTURE, "cpu", threads=1).session.get_session_options(
        ).intra_op_num_threads == 1
    assert OnnxEngine(FIXTURE, threads=2).session.get_session_options(
        ).intra_op_num_threads == 2
    assert load_engine(FIXTURE).session.get_session_options().intra_op_num_threads == 0
    with pytest.raises(EngineError, match="thread count of 1 or more"):
        load_engine(FIXTURE, threads=0)


@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_close_releases_the_runtime_and_is_idempotent(suffix, exported):
    engine = load_engine(exported["rnn"].with_suffix(suffix), "cpu")
    frame = frames(1)[0]
    engine.predict(frame)
    engine.close()
    engine.close()
    held = engine.session if suffix == ".onnx" else engine._module
    assert held is None
    with pytest.raises(EngineError, match="the engine was closed"):
        engine.predict(frame)


def test_the_training_checkpoint_is_not_run_and_says_what_to_run(exported):
    text = one_line_error(exported["linear"].with_suffix(".pt"))
    assert "training checkpoint" in text and "pilot.pt2" in text and "pilot.onnx" in text


def test_a_torch_program_must_be_the_one_its_manifest_records(tmp_path, exported):
    for name in ("pilot.pt2", "pilot.json"):
        shutil.copy(exported["linear"].with_name(name), tmp_path / name)
    assert load_engine(tmp_path / "pilot.pt2").name == "torch"
    shutil.copy(exported["3d"].with_suffix(".pt2"), tmp_path / "pilot.pt2")
    assert "belongs to another model file" in one_line_error(tmp_path / "pilot.pt2")
    (tmp_path / "pilot.pt2").write_bytes(b"not a zip archive")
    manifest = json.loads((tmp_path / "pilot.json").read_text())
    manifest["export"]["pt2_sha256"] = file_sha256(tmp_path / "pilot.pt2")
    (tmp_path / "pilot.json").write_text(json.dumps(manifest))
    assert "not a torch.export program" in one_line_error(tmp_path / "pilot.pt2")
    del manifest["export"]["pt2_sha256"]  # a manifest that pairs with no .pt2 in particular
    (tmp_path / "pilot.json").write_text(json.dumps(manifest))
    assert "records no sha256 for it (export.pt2_sha256)" in one_line_error(
        tmp_path / "pilot.pt2")


def test_a_tampered_torch_program_is_refused_like_onnx_and_tensorrt(tmp_path, exported):
    """The .pt2's bytes are checked against the manifest's export.pt2_sha256, and the very
    bytes checked are the ones torch loads: one changed byte is refused at load."""
    for name in ("pilot.pt2", "pilot.json", "pilot.onnx"):
        shutil.copy(exported["linear"].with_name(name), tmp_path / name)
    data = bytearray((tmp_path / "pilot.pt2").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "pilot.pt2").write_bytes(bytes(data))
    torch_error = one_line_error(tmp_path / "pilot.pt2")
    onnx = bytearray((tmp_path / "pilot.onnx").read_bytes())
    onnx[len(onnx) // 2] ^= 0xFF
    (tmp_path / "pilot.onnx").write_bytes(bytes(onnx))
    onnx_error = one_line_error(tmp_path / "pilot.onnx")
    same = "its manifest pilot.json belongs to another model file (the sha256 differs)"
    assert same in torch_error and same in onnx_error


def test_deploy_never_imports_training():
    import ast

    for path in (Path(__file__).parent.parent / "deploy").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "training" for n in names), path


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
    gpu = load_engine(exported[family].with_suffix(".pt2"), "cuda")
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
