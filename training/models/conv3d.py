"""``3d``: a 3D CNN over the last T frames, so motion (speed, turning) is visible to it."""

from __future__ import annotations

import torch
from torch import nn


class Conv3dPilot(nn.Module):
    def __init__(self, dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for out, kernel in ((16, (3, 5, 5)), (32, (3, 5, 5)), (64, (3, 3, 3)), (64, (3, 3, 3))):
            pad = tuple(k // 2 for k in kernel)
            layers += [nn.Conv3d(channels, out, kernel, stride=(1, 2, 2), padding=pad),
                       nn.BatchNorm3d(out), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(channels, 64), nn.ReLU(inplace=True),
                                  nn.Linear(64, 2), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) → (B, 2), for the last frame of the window."""
        return self.head(self.features(x.permute(0, 2, 1, 3, 4)))
