"""Transfer learning the fastai way: ImageNet-style weights from a file or the torch hub
cache, ``Learner.fine_tune`` (frozen body, then discriminative learning rates), and a
one-line error whenever the weights cannot be had. The weights are files these tests make
themselves (torchvision's architecture with seeded random weights): nothing is downloaded."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torchvision

from car.cli import main
from deploy.manifest import load_manifest
from training.learner import make_learner
from training.models.resnet import ResNetPilot, hub_weights_path
from training.records import DataError
from training.train import TrainConfig, train


def weights_file(path: Path, arch: str = "resnet18", seed: int = 7) -> Path:
    torch.manual_seed(seed)
    torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), path)
    return path


def quick(tub: Path, out: Path, **kw) -> TrainConfig:
    settings = {"epochs": 1, "batch_size": 16, "limit": 64, "progress": False,
                "augmentations": (), "cache_dir": out.parent / "cache", **kw}
    return TrainConfig(tubs=[tub], model_type="resnet18", out=out, **settings)


def test_the_backbone_starts_from_the_file_and_the_head_is_new(tmp_path: Path) -> None:
    path = weights_file(tmp_path / "r18.pth")
    state = torch.load(path, weights_only=True)
    model = ResNetPilot("resnet18", pretrained=str(path))
    ours = model.backbone.state_dict()
    assert torch.equal(ours["conv1.weight"], state["conv1.weight"])
    assert torch.equal(ours["layer4.1.bn2.running_var"], state["layer4.1.bn2.running_var"])
    assert ours["fc.1.weight"].shape == (2, 512)  # two controls, not 1000 classes
    wrapped = tmp_path / "wrapped.pth"  # a {"state_dict": ...} file from another trainer
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    again = ResNetPilot("resnet18", pretrained=str(wrapped)).backbone.state_dict()
    assert torch.equal(again["conv1.weight"], state["conv1.weight"])


def test_fine_tune_freezes_the_body_then_spreads_the_learning_rates(
        real_tub_pristine: Path, tmp_path: Path) -> None:
    path = weights_file(tmp_path / "r18.pth")
    out = tmp_path / "model"
    result = train(quick(real_tub_pristine, out, pretrained=str(path), freeze_epochs=1,
                         lr=1e-3))
    assert [h["phase"] for h in result.history] == ["frozen", "all"]
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1"] and rows[0]["phase"] == "frozen"
    manifest = load_manifest(out / "pilot.onnx")
    assert manifest.training["pretrained"]["weights"] == str(path.resolve())
    assert manifest.training["pretrained"]["freeze_epochs"] == 1
    assert manifest.preprocess.mean == pytest.approx((0.485, 0.456, 0.406))  # ImageNet's


def test_freezing_leaves_only_the_head_and_batch_norm_to_learn(
        real_tub_pristine: Path, tmp_path: Path) -> None:
    model = ResNetPilot("resnet18")
    groups = model.param_groups()
    assert len(groups) == 3 and groups[-1] == list(model.backbone.fc.parameters())
    assert sum(len(g) for g in groups) == len(list(model.parameters()))
    loader = [(torch.zeros(2, 3, 80, 160), torch.zeros(2, 2))]
    learn = make_learner((loader, loader), model, "resnet18", tmp_path, 2, False)
    learn.create_opt()
    learn.freeze()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "backbone.fc.1.weight" in trainable
    assert "backbone.conv1.weight" not in trainable and "backbone.layer4.1.conv2.weight" \
        not in trainable
    assert "backbone.layer1.0.bn1.weight" in trainable  # fastai's train_bn
    learn.unfreeze()
    learn.opt.set_hypers(lr=slice(1e-5, 1e-3))
    lrs = [h["lr"] for h in learn.opt.hypers]
    assert lrs == pytest.approx([1e-5, 1e-4, 1e-3])  # slice(lr/100, lr) over three groups


def test_the_torch_hub_cache_is_used_without_a_download(
        real_tub_pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = hub_weights_path("resnet18")
    assert cached.is_relative_to(tmp_path)
    with pytest.raises(DataError, match=r"no ImageNet weights for resnet18 in the torch hub "
                                        r"cache .* pass --pretrained PATH"):
        train(quick(real_tub_pristine, tmp_path / "none", pretrained="hub"))
    assert not (tmp_path / "none").exists()  # refused before anything was written
    cached.parent.mkdir(parents=True)
    weights_file(cached)
    result = train(quick(real_tub_pristine, tmp_path / "hub", pretrained="hub"))
    assert result.manifest.training["pretrained"]["weights"] == "hub"


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("garbage", "not a readable torch weights file"),
    ("resnet34", "not resnet18 weights .*'layer1.2"),
    ("list", "holds no state dict of tensors"),
])
def test_weights_that_cannot_be_had_are_one_line(case: str, message: str,
                                                 real_tub_pristine: Path,
                                                 tmp_path: Path) -> None:
    path = tmp_path / f"{case}.pth"
    if case == "garbage":
        path.write_bytes(b"not a checkpoint\n" * 10)
    elif case == "resnet34":
        weights_file(path, "resnet34")
    elif case == "list":
        torch.save([1, 2, 3], path)
    with pytest.raises(DataError, match=message) as err:
        train(quick(real_tub_pristine, tmp_path / "out", pretrained=str(path)))
    assert "\n" not in str(err.value)


def test_the_cli_fine_tunes_and_refuses_other_families(
        real_tub_pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = weights_file(tmp_path / "r18.pth")
    base = ["train", "--tub", str(real_tub_pristine), "--epochs", "1", "--limit", "64",
            "--no-aug", "--quiet", "--set", f"paths.models_dir={tmp_path / 'db'}"]
    assert main([*base, "--type", "resnet18", "--out", str(tmp_path / "m"), "--pretrained",
                 str(path), "--freeze-epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "trained resnet18" in out
    assert out.index("data: ") < out.index("trained resnet18")  # said before training
    assert "training and" in out.split("data: ")[1].splitlines()[0]
    assert main([*base, "--type", "linear", "--out", str(tmp_path / "l"), "--pretrained",
                 str(path)]) == 1
    err = capsys.readouterr().err
    assert "--pretrained applies to resnet18 and resnet34" in err and err.count("\n") == 1
