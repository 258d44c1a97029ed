"""The categorical family: binning, decoding, the loss and its smoothing, the export that
decodes (and the manifest that declares the bins), engines, a tiny training, and `car tub
plot` with the bin probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from car.cli import main
from deploy.engine import load_engine
from deploy.manifest import Manifest, ManifestError, load_manifest
from tests import fake_tensorrt as fake
from tests.test_training import quick
from training.checkpoint import load_checkpoint
from training.models import build_model
from training.models.categorical import (
    CategoricalExport,
    bin_centres,
    expected_value,
    soft_targets,
    to_bins,
)
from training.objectives import objective
from training.records import DataError
from training.train import train

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def untrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.export import export_untrained

    return export_untrained("categorical", tmp_path_factory.mktemp("categorical"))


@pytest.mark.parametrize("n, middle", [(15, 7), (20, 10)])
def test_the_ends_and_the_middle_land_in_the_right_bins(n: int, middle: int) -> None:
    values = torch.tensor([-1.0, 1.0, 0.0, -1.5, 2.0, -1 + 1 / (n - 1) - 1e-4])
    assert to_bins(values, n).tolist() == [0, n - 1, middle, 0, n - 1, 0]
    centres = bin_centres(n)
    assert (centres[0], centres[-1]) == (-1.0, 1.0) and len(centres) == n
    assert torch.equal(to_bins(centres, n), torch.arange(n))  # a centre is its own bin


def test_decoding_a_sure_bin_gives_its_centre() -> None:
    centres = bin_centres(15)
    for k in (0, 3, 7, 14):
        logits = torch.full((15,), -50.0)
        logits[k] = 50.0
        assert expected_value(logits, centres).item() == pytest.approx(centres[k].item(),
                                                                       abs=1e-6)
    halves = torch.full((15,), -50.0)
    halves[[7, 8]] = 50.0  # torn between two bins: the expectation lies between them
    assert expected_value(halves, centres).item() == pytest.approx(1 / 14, abs=1e-6)


@pytest.mark.parametrize("sigma", [0.0, 0.5, 1.0, 2.0])
def test_smoothed_targets_are_distributions_peaked_on_the_label(sigma: float) -> None:
    values = torch.tensor([-1.0, -0.33, 0.0, 0.52, 1.0])
    targets = soft_targets(values, 15, sigma)
    assert targets.shape == (5, 15)
    torch.testing.assert_close(targets.sum(-1), torch.ones(5))
    assert torch.equal(targets.argmax(-1), to_bins(values, 15))
    if sigma == 0:
        assert torch.equal(targets, torch.nn.functional.one_hot(to_bins(values, 15), 15).float())
    else:  # neighbouring bins share the mass, nearest first
        left, middle, right = targets[2, 6:9].tolist()
        assert 0 < left == pytest.approx(right) and left < middle


def test_the_loss_is_lower_for_the_right_bins_and_metrics_are_named_per_head() -> None:
    model = build_model("categorical", (3, 80, 160))
    goal = objective("categorical", model)
    target = torch.tensor([[0.0, 0.6], [-0.4, 0.6]])
    s, t = bin_centres(15), bin_centres(20)

    def sure(values: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        return -100 * (centres[None] - values[:, None]) ** 2

    right = torch.cat([sure(target[:, 0], s), sure(target[:, 1], t)], -1)
    wrong = torch.cat([sure(-target[:, 0] + 0.5, s), sure(-target[:, 1], t)], -1)
    assert goal.loss(right, target) < goal.loss(wrong, target)
    names = [m.__name__ for m in goal.metrics]
    assert names == ["steering_error", "throttle_error", "steering_mae", "throttle_mae"]
    got = {m.__name__: float(m(right, target)) for m in goal.metrics}
    assert got["steering_error"] == got["throttle_error"] == 0.0
    assert got["steering_mae"] < 0.02 and got["throttle_mae"] < 0.02
    assert float(goal.metrics[0](wrong, target)) == 1.0


def test_bins_are_configurable_and_bad_ones_are_refused() -> None:
    model = build_model("categorical", (3, 80, 160), steering_bins=7, throttle_bins=5)
    assert model(torch.zeros(2, 3, 80, 160)).shape == (2, 12)
    assert model.bins == (7, 5)
    for bad in (1, 0, True, 2.5):
        with pytest.raises(DataError, match="bins"):
            build_model("categorical", (3, 80, 160), steering_bins=bad)


def test_the_export_decodes_and_its_manifest_declares_the_bins(untrained: Path) -> None:
    manifest = load_manifest(untrained)
    assert manifest.model_type == "categorical" and manifest.bins == (15, 20)
    assert manifest.probabilities == ("steering_probs", "throttle_probs")
    columns = json.loads(untrained.with_suffix(".json").read_text())["output"]["columns"]
    assert [(c["name"], c["bins"], c["probabilities"]) for c in columns] == [
        ("steering", 15, "steering_probs"), ("throttle", 20, "throttle_probs")]
    assert manifest.export["max_abs_diff"] <= 1e-4 and manifest.export["pt2_max_abs_diff"] <= 1e-4
    model, _ = load_checkpoint(untrained.with_suffix(".pt"))  # rebuilt with its bins
    x = np.random.default_rng(3).normal(0, 1, (4, 1, 3, 80, 160)).astype(np.float32)
    session = ort.InferenceSession(str(untrained), providers=["CPUExecutionProvider"])
    for frame in x:
        controls, p_steering, p_throttle = session.run(None, {"image": frame})
        with torch.no_grad():
            decoded = model.decode(model(torch.from_numpy(frame))).numpy()
            wrapped = CategoricalExport(model)(torch.from_numpy(frame))[0].numpy()
        np.testing.assert_allclose(controls, decoded, atol=1e-4)
        np.testing.assert_allclose(controls, wrapped, atol=1e-4)
        assert p_steering.shape == (1, 15) and p_throttle.shape == (1, 20)
        np.testing.assert_allclose(p_steering.sum(), 1.0, atol=1e-5)
        np.testing.assert_allclose(controls[0, 0], p_steering[0] @ bin_centres(15).numpy(),
                                   atol=1e-5)


def test_every_engine_runs_only_the_decoded_controls(untrained: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy.build import build_engine

    frame = np.random.default_rng(1).integers(0, 256, (120, 160, 3), np.uint8)
    onnx = load_engine(untrained, "cpu").predict(frame)
    assert load_engine(untrained.with_suffix(".pt2"), "cpu").predict(frame) == pytest.approx(
        onnx, abs=1e-4)
    trt = fake.install(monkeypatch)
    onnx_copy = tmp_path / "pilot.onnx"
    onnx_copy.write_bytes(untrained.read_bytes())
    onnx_copy.with_suffix(".json").write_text(untrained.with_suffix(".json").read_text())
    built = build_engine(onnx_copy, tmp_path / "pilot.trt", log=lambda line: None)
    assert built.bins == (15, 20) and built.engine["tensorrt_version"] == trt.__version__
    engine = load_engine(tmp_path / "pilot.trt")
    steering, throttle = engine.predict(frame)  # the fake: (mean, -mean) into "controls"
    assert steering == pytest.approx(-throttle, abs=1e-5)


def test_a_manifest_without_bins_still_loads_and_bad_bins_are_one_line() -> None:
    old = load_manifest(FIXTURES / "pilot_linear.onnx")
    assert old.bins == () and old.probabilities == ()
    data = json.loads((FIXTURES / "pilot_linear.json").read_text())
    data["model_type"] = "categorical"
    with pytest.raises(ManifestError, match="declares the bins"):
        Manifest.from_dict(data, "pilot.json")
    good = [{"name": "steering", "range": [-1, 1], "bins": 15, "probabilities": "sp"},
            {"name": "throttle", "range": [-1, 1], "bins": 20, "probabilities": "tp"}]
    data["output"]["columns"] = good
    assert Manifest.from_dict(data).bins == (15, 20)
    cases = [(1, "declares 1 bins"), ("15", "declares '15' bins"), (15.5, "15.5"),
             (True, "True"), (10**6, "from 2 to 1000"), ([15], "[15]"), (None, "None")]
    for bad, message in cases:
        data["output"]["columns"] = [dict(good[0], bins=bad), good[1]]
        with pytest.raises(ManifestError) as info:
            Manifest.from_dict(data, "pilot.json")
        text = str(info.value)
        assert message in text and text.startswith("pilot.json: ") and "\n" not in text
    data["output"]["columns"] = [{k: v for k, v in good[0].items() if k != "bins"}, good[1]]
    with pytest.raises(ManifestError, match="1 of the 2 output columns"):
        Manifest.from_dict(data)
    data["output"]["columns"] = [good[0], {k: v for k, v in good[1].items()
                                           if k != "probabilities"}]
    with pytest.raises(ManifestError, match="probabilities"):
        Manifest.from_dict(data)
    data["model_type"], data["output"]["columns"] = "linear", good
    with pytest.raises(ManifestError, match="no other model"):
        Manifest.from_dict(data)


def test_a_tiny_training_reports_error_rates_and_plots_the_probabilities(
        sim_tub_pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    out = tmp_path / "m"
    result = train(quick([sim_tub_pristine], "categorical", out, bins=(9, 5)))
    manifest = load_manifest(out / "pilot.onnx")
    assert manifest.bins == (9, 5) and manifest.export["max_abs_diff"] <= 1e-4
    validation = manifest.training["validation"]
    for key in ("steering_error", "throttle_error", "steering_mae", "throttle_mae"):
        assert key in validation and key in result.metrics
    assert 0 <= validation["steering_error"] <= 1
    # `car export pilot.pt` rebuilds it with its bins.
    assert main(["export", str(out / "pilot.pt"), "--out", str(tmp_path / "again.onnx")]) == 0
    assert load_manifest(tmp_path / "again.onnx").bins == (9, 5)
    # Retraining from it (`--init`, as `car sim dagger` does) keeps its bins.
    train(quick([sim_tub_pristine], "categorical", tmp_path / "again", init_from=out / "pilot.pt"))
    assert load_manifest(tmp_path / "again" / "pilot.onnx").bins == (9, 5)
    capsys.readouterr()
    code = main(["tub", "plot", str(sim_tub_pristine), "--model", str(out / "pilot.onnx"),
                 "--out", str(tmp_path / "p.png"), "--end", "80"])
    text = capsys.readouterr().out
    assert code == 0 and "with the bin probabilities" in text, text
    tall = cv2.imread(str(tmp_path / "p.png")).shape
    code = main(["tub", "plot", str(sim_tub_pristine), "--model", str(out / "pilot.pt2"),
                 "--out", str(tmp_path / "q.png"), "--end", "80"])
    assert code == 0 and "with the bin probabilities" in capsys.readouterr().out
    (out / "pilot.onnx").unlink()  # a .pt2 alone: the plot without the probabilities
    code = main(["tub", "plot", str(sim_tub_pristine), "--model", str(out / "pilot.pt2"),
                 "--out", str(tmp_path / "r.png"), "--end", "80"])
    assert code == 0 and "no bin probabilities" in capsys.readouterr().out
    assert cv2.imread(str(tmp_path / "r.png")).shape[0] < tall[0]
