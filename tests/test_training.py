"""Training end to end on the CPU: every family trains, exports (ONNX and the torch.export
program), and matches ONNX Runtime; `car export` re-exports a checkpoint without its tubs.
Command-line runs point paths.models_dir at a temporary folder, never the repository's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from car.cli import main
from car.tub import Tub
from deploy.manifest import load_manifest
from training.cache import load_frames
from training.checkpoint import load_checkpoint
from training.models import TEMPORAL, build_model
from training.records import DataError, load_records
from training.torch_data import FramesDataset
from training.train import TrainConfig, train

FAMILIES = ["linear", "categorical", "resnet18", "resnet34", "3d", "rnn"]


def quick(tubs: list[Path], model_type: str, out: Path, **kw) -> TrainConfig:
    temporal = model_type in TEMPORAL  # a one-frame family refuses a sequence length
    settings = {"epochs": 1, "batch_size": 16, "seq_len": 3 if temporal else None, "limit": 240,
                "progress": False,
                "augmentations": ("flip", "shift", "brightness"), "cache_dir": out.parent /
                "cache", **kw}
    return TrainConfig(tubs=tubs, model_type=model_type, out=out, **settings)


def models_dir(tmp_path: Path) -> list[str]:
    """`car train` adds to the models database: keep it out of the repository."""
    return ["--set", f"paths.models_dir={tmp_path / 'models'}"]


@pytest.mark.parametrize("model_type", FAMILIES)
def test_each_family_trains_on_the_real_and_a_sim_tub_and_exports(
        model_type: str, real_tub_pristine: Path, sim_tub_pristine: Path,
        tmp_path: Path) -> None:
    for name, tub in (("real", real_tub_pristine), ("sim", sim_tub_pristine)):
        out = tmp_path / name
        result = train(quick([tub], model_type, out))
        manifest = load_manifest(out / "pilot.onnx")
        assert manifest.model_type == model_type
        assert manifest.export["max_abs_diff"] <= 1e-4
        assert manifest.training["records"]["train"] > 0
        assert all((out / f).exists() for f in ("pilot.pt", "pilot.pt2", "history.csv",
                                                 "loss.png"))
        assert out / "pilot.pt2" in result.files
        assert manifest.export["pt2_max_abs_diff"] <= 1e-4
        frames = load_checkpoint(out / "pilot.pt")[1]["check_frames"]
        assert frames.dtype == np.uint8 and len(frames) == manifest.export["check_frames"]
        assert np.isfinite(result.metrics["valid_loss"])
        session = ort.InferenceSession(str(out / "pilot.onnx"),
                                       providers=["CPUExecutionProvider"])
        shapes = {i.name: i.shape for i in session.get_inputs()}
        assert shapes["image"] == list(manifest.input_shape)


def test_loss_goes_down_on_a_small_sim_set(sim_tub_pristine: Path, tmp_path: Path) -> None:
    result = train(quick([sim_tub_pristine], "linear", tmp_path / "m", epochs=6, limit=None,
                         augmentations=(), batch_size=32, lr=3e-3, patience=6))
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.6 * losses[0]
    assert result.metrics["valid_loss"] < result.history[0]["valid_loss"]


def test_stateful_rnn_stepped_in_onnx_runtime_matches_the_torch_sequence(
        sim_tub_pristine: Path, tmp_path: Path) -> None:
    out = tmp_path / "rnn"
    train(quick([sim_tub_pristine], "rnn", out, seq_len=4))
    manifest = load_manifest(out / "pilot.onnx")
    assert [s.input for s in manifest.state] == ["h_in"]
    model, _ = load_checkpoint(out / "pilot.pt")
    data = load_records([sim_tub_pristine])
    frames = np.asarray(load_frames(data, manifest.preprocess, tmp_path / "c",
                                    progress=False).frames[100:140])
    x = manifest.preprocess.normalise(frames)
    with torch.no_grad():
        expected = model(torch.from_numpy(x[None])).numpy()[0]
    session = ort.InferenceSession(str(out / "pilot.onnx"), providers=["CPUExecutionProvider"])
    h = np.zeros(manifest.state[0].shape, np.float32)
    for k in range(len(x)):
        got, h = session.run(None, {"image": x[k:k + 1], "h_in": h})
        assert np.abs(got[0] - expected[k]).max() < 1e-4


def test_training_and_drive_time_preprocessing_agree(sim_tub_pristine: Path,
                                                     tmp_path: Path) -> None:
    """The training sample is exactly the drive-time preprocessing of the recorded frame."""
    out = tmp_path / "m"
    train(quick([sim_tub_pristine], "linear", out))
    manifest = load_manifest(out / "pilot.onnx")
    data = load_records([sim_tub_pristine])
    cache = load_frames(data, manifest.preprocess, tmp_path / "c", progress=False)
    dataset = FramesDataset(cache, data, np.arange(10), 1, manifest.preprocess)
    tub = Tub(data.tubs[0].path)
    for i in (0, 7):
        x, y = dataset[i]
        frame = tub.load_image(tub.record(data.records[i].index))
        assert np.array_equal(x.numpy(), manifest.preprocess(frame)[0])
        assert y[0] == pytest.approx(data.records[i].steering)


def test_a_corrupt_jpeg_is_skipped_and_counted(sim_tub: Path, tmp_path: Path) -> None:
    data = load_records([sim_tub])
    (sim_tub / "images" / data.records[30].image).write_bytes(b"not a jpeg")
    out = tmp_path / "m"
    train(quick([sim_tub], "linear", out))
    left_out = load_manifest(out / "pilot.onnx").training["records"]["left_out"]
    assert left_out == {"with a missing or corrupt image": 1}


def test_bad_requests_get_clear_errors(sim_tub_pristine: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m"
    train(quick([sim_tub_pristine], "linear", out))
    with pytest.raises(DataError, match="already holds a model"):
        train(quick([sim_tub_pristine], "linear", out))
    with pytest.raises(DataError, match="--seq-len 5000 is longer than any stretch"):
        train(quick([sim_tub_pristine], "rnn", tmp_path / "r", seq_len=5000, limit=None))
    with pytest.raises(DataError, match="no usable records"):
        train(quick([sim_tub_pristine], "linear", tmp_path / "x", modes=("local",)))
    with pytest.raises(SystemExit):
        main(["train", "--tub", str(sim_tub_pristine), "--type", "transformer", "--out", "x",
              *models_dir(tmp_path)])
    assert "invalid choice: 'transformer'" in capsys.readouterr().err
    code = main(["train", "--tub", str(tmp_path / "nothing"), "--type", "linear",
                 "--out", str(tmp_path / "y"), *models_dir(tmp_path)])
    assert code == 1 and "not a tub" in capsys.readouterr().err


def test_car_train_and_car_export_from_the_command_line(sim_tub: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    out, models = tmp_path / "pilot", tmp_path / "models"
    code = main(["train", "--tub", str(sim_tub), "--type", "linear", "--out", str(out),
                 "--epochs", "1", "--limit", "200", "--quiet", "--no-aug", "--dynamic-batch",
                 "--find-lr", *models_dir(tmp_path)])
    text = capsys.readouterr().out
    assert code == 0 and "best validation" in text and "export check" in text
    assert (out / "lr_find.png").exists() and (out / "pilot_dynamic.onnx").exists()
    assert (out / "pilot.pt2").exists() and "pilot.pt2" in text
    database = [json.loads(line) for line in (models / "database.jsonl").read_text().splitlines()]
    entry = database[-1]
    assert entry["kind"] == "train" and entry["type"] == "linear"
    assert entry["sha256"] == load_manifest(out / "pilot.onnx").export["sha256"]
    assert entry["validation"]["steering_mae"] >= 0 and entry["records"]["train"] > 0
    # The checkpoint carries its check frames: the tubs may be gone.
    shutil.rmtree(sim_tub)
    code = main(["export", str(out / "pilot.pt"), "--out", str(tmp_path / "again.onnx")])
    assert code == 0 and "again.pt2" in capsys.readouterr().out
    again = load_manifest(tmp_path / "again.onnx")
    assert again.export["max_abs_diff"] <= 1e-4 and again.export["pt2_max_abs_diff"] <= 1e-4
    assert again.export["check_frames"] == load_manifest(out / "pilot.onnx").export[
        "check_frames"]
    assert (tmp_path / "again.pt2").is_file()


def test_a_checkpoint_without_check_frames_reads_them_from_its_tubs(
        sim_tub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A version 1 checkpoint (before frames were saved) falls back to its training tubs
    by the same rule, and says so in one line when they are gone."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # its frame cache
    out = tmp_path / "m"
    train(quick([sim_tub], "3d", out))
    payload = torch.load(out / "pilot.pt", weights_only=True)
    del payload["check_frames"]
    payload["version"] = 1
    torch.save(payload, out / "pilot.pt")
    assert load_checkpoint(out / "pilot.pt")[1]["check_frames"] is None
    assert main(["export", str(out / "pilot.pt")]) == 0
    manifest = load_manifest(out / "pilot.onnx")
    assert manifest.export["check_frames"] == 32 + 3  # CHECK_FRAMES + the sequence length
    capsys.readouterr()
    shutil.rmtree(sim_tub)
    assert main(["export", str(out / "pilot.pt")]) == 1
    err = capsys.readouterr().err
    assert "cannot be found" in err and len(err.strip().splitlines()) == 1, err
    assert load_manifest(out / "pilot.onnx").export == manifest.export  # left as it was


def test_rebuilt_models_take_their_documented_shapes() -> None:
    for model_type in FAMILIES:
        model = build_model(model_type, (3, 80, 160)).eval()
        x = torch.zeros(2, 3, 3, 80, 160) if model_type in TEMPORAL else torch.zeros(
            2, 3, 80, 160)
        shape = tuple(model(x).shape)  # categorical: the logits of its 15 + 20 bins
        assert shape == {"rnn": (2, 3, 2), "categorical": (2, 35)}.get(model_type, (2, 2))


@pytest.mark.parametrize("model_type", ["linear", "3d", "rnn"])
def test_tub_plot_runs_the_model_through_onnx_runtime(model_type: str, sim_tub_pristine: Path,
                                                      tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    import cv2

    out = tmp_path / "m"
    train(quick([sim_tub_pristine], model_type, out))
    code = main(["tub", "plot", str(sim_tub_pristine), "--model", str(out / "pilot.onnx"),
                 "--out", str(tmp_path / "pred.png"), "--end", "150"])
    text = capsys.readouterr().out
    assert code == 0 and "150 records" in text and "steering MAE" in text
    assert cv2.imread(str(tmp_path / "pred.png")).shape[1] == 1200
    (out / "pilot.json").unlink()
    code = main(["tub", "plot", str(sim_tub_pristine), "--model", str(out / "pilot.onnx"),
                 "--out", str(tmp_path / "pred.png")])
    assert code == 1 and "manifest is missing" in capsys.readouterr().err


def test_more_bad_input_gets_one_line_errors(sim_tub_pristine: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m"
    train(quick([sim_tub_pristine], "linear", out))
    cases = [
        (["train", "--tub", str(sim_tub_pristine), "--type", "linear", "--out",
          str(tmp_path / "c"), "--crop-top", "200", *models_dir(tmp_path)], "--crop-top 200"),
        (["export", str(out / "pilot.onnx")], "not a readable checkpoint"),
        (["train", "--tub", str(sim_tub_pristine), "--type", "rnn", "--out",
          str(tmp_path / "d"), "--dynamic-batch", *models_dir(tmp_path)],
         "does not apply to rnn"),
        (["tub", "plot", str(sim_tub_pristine), "--model", str(tmp_path / "none.onnx"),
          "--out", str(tmp_path / "p.png")], "no such model file"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "c").exists()  # a failed run leaves no empty folder
    # An .onnx beside a manifest that is not its own is refused at load.
    other = tmp_path / "other"
    train(quick([sim_tub_pristine], "3d", other))
    (out / "pilot.json").write_text((other / "pilot.json").read_text())
    assert main(["tub", "plot", str(sim_tub_pristine), "--model", str(out / "pilot.onnx"),
                 "--out", str(tmp_path / "p.png")]) == 1
    assert "belongs to another model file" in capsys.readouterr().err  # by its sha256


def test_tub_plot_skips_and_counts_a_corrupt_frame(sim_tub: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m"
    train(quick([sim_tub], "rnn", out))
    data = load_records([sim_tub])
    (sim_tub / "images" / data.records[20].image).write_bytes(b"broken")
    code = main(["tub", "plot", str(sim_tub), "--model", str(out / "pilot.onnx"), "--out",
                 str(tmp_path / "p.png"), "--end", "60"])
    assert code == 0 and "59 records, 1 skipped" in capsys.readouterr().out
