"""``resnet18`` / ``resnet34``: torchvision backbones with a two-output head.

ImageNet weights are used only when asked (``pretrained``): from a local weights file, or
from the torch hub cache (``$TORCH_HOME/hub/checkpoints``, where torchvision keeps what it
downloaded). Nothing is downloaded here: training must work offline, and a missing file is
a one-line error saying how to get it. Tests use a weights file they made themselves.

For ``Learner.fine_tune`` the network splits into three parameter groups (``param_groups``):
the stem with the first two stages, the last two stages, and the new head. Freezing leaves
the head to learn first; unfreezing spreads ``slice(lr/100, lr)`` across the three.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from training.records import DataError

HUB = "hub"  # ``pretrained`` value: the torch hub cache rather than a file
WEIGHTS = {"resnet18": torchvision.models.ResNet18_Weights.DEFAULT,
           "resnet34": torchvision.models.ResNet34_Weights.DEFAULT}
BUILDERS = {"resnet18": torchvision.models.resnet18, "resnet34": torchvision.models.resnet34}


class ResNetPilot(nn.Module):
    """``pretrained``: False (random weights), ``HUB`` or a weights file's path."""

    def __init__(self, arch: str = "resnet18", pretrained: bool | str = False,
                 dropout: float = 0.2):
        super().__init__()
        backbone = BUILDERS[arch](weights=None)
        if pretrained:
            source = HUB if pretrained is True else str(pretrained)
            load_backbone(backbone, imagenet_state(arch, source), arch, source)
        features = backbone.fc.in_features
        backbone.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, 2), nn.Tanh())
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def param_groups(self) -> list[list[nn.Parameter]]:
        """Body (stem, layer1, layer2), body (layer3, layer4), head: fastai's splitter."""
        b = self.backbone
        early = [b.conv1, b.bn1, b.layer1, b.layer2]
        late = [b.layer3, b.layer4]
        return [[p for m in early for p in m.parameters()],
                [p for m in late for p in m.parameters()], list(b.fc.parameters())]


def hub_weights_path(arch: str) -> Path:
    """Where torchvision keeps the ImageNet weights of ``arch`` in the torch hub cache."""
    name = os.path.basename(WEIGHTS[arch].url)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def imagenet_state(arch: str, source: str) -> dict[str, torch.Tensor]:
    """The ImageNet state dict of ``arch`` from a file or the hub cache, or a one-line
    DataError that says where it looked and what to do."""
    if source == HUB:
        path = hub_weights_path(arch)
        if not path.is_file():  # never downloaded here: training runs offline too
            raise DataError(
                f"--pretrained: no ImageNet weights for {arch} in the torch hub cache "
                f"({path}); fetch them once on a connected machine (python -c \"import "
                f"torchvision; torchvision.models.{arch}(weights='DEFAULT')\") and copy "
                f"{path.name} there, or pass --pretrained PATH to a weights file")
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"--pretrained {path}: no such file; give a {arch} weights file "
                            "(a torchvision state dict, .pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file gets the same one line
        raise DataError(f"--pretrained {path}: not a readable torch weights file "
                        f"({type(exc).__name__}); give a {arch} state dict (.pth)") from None
    for key in ("state_dict", "model"):  # common wrappers around a state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise DataError(f"--pretrained {path}: holds no state dict of tensors; give a {arch} "
                        "state dict (.pth)")
    return state


def load_backbone(backbone: nn.Module, state: dict[str, Any], arch: str, source: str) -> None:
    """Every backbone weight but the classifier (``fc``) from ``state``, refused in one line
    when the file is another network's."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    ours = {k: v for k, v in backbone.state_dict().items() if not k.startswith("fc.")}
    missing = [k for k in ours if k not in state]
    extra = [k for k in state if k not in ours and not k.startswith("fc.")]
    wrong = [k for k in ours if k in state and tuple(state[k].shape) != tuple(ours[k].shape)]
    where = "the torch hub cache" if source == HUB else source
    if missing or extra or wrong:
        if missing:
            problem = f"has no {missing[0]!r}"
        elif extra:
            problem = f"has {extra[0]!r}, which {arch} has not"
        else:
            problem = (f"gives {wrong[0]!r} the shape {tuple(state[wrong[0]].shape)}, not "
                       f"{tuple(ours[wrong[0]].shape)}")
        raise DataError(f"--pretrained {where}: not {arch} weights ({problem}; "
                        f"{len(missing)} missing, {len(extra)} extra and {len(wrong)} "
                        f"mismatched tensors); give the ImageNet weights of {arch}")
    backbone.load_state_dict({k: state[k] for k in ours}, strict=False)
