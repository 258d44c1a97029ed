"""``resnet18`` / ``resnet34``: torchvision backbones with a two-output head.

ImageNet weights are used only when asked (``pretrained``) and only from the local torch
hub cache or a download; tests and offline machines build them with ``weights=None``.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from training.records import DataError


class ResNetPilot(nn.Module):
    def __init__(self, arch: str = "resnet18", pretrained: bool = False, dropout: float = 0.2):
        super().__init__()
        factory = {"resnet18": (torchvision.models.resnet18,
                                torchvision.models.ResNet18_Weights.DEFAULT),
                   "resnet34": (torchvision.models.resnet34,
                                torchvision.models.ResNet34_Weights.DEFAULT)}[arch]
        build, weights = factory
        try:
            backbone = build(weights=weights if pretrained else None)
        except (OSError, RuntimeError) as exc:  # no network and nothing cached
            raise DataError(f"could not load the ImageNet weights for {arch} ({exc}); train "
                            "without --pretrained, or put the weights file in the torch hub "
                            "cache (~/.cache/torch/hub/checkpoints)") from None
        features = backbone.fc.in_features
        backbone.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, 2), nn.Tanh())
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)
