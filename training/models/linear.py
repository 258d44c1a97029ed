"""``linear``: the donkeycar/PilotNet-class CNN. Five convolutions, then dense layers."""

from __future__ import annotations

import torch
from torch import nn


def conv_stack(dropout: float) -> nn.Sequential:
    """PilotNet's five convolutions (24, 32, 64, 64, 64 filters), as donkeycar uses them,
    with batch normalisation: without it training sat on a plateau (predicting the mean
    steering) for up to a dozen epochs before it started to learn."""
    layers: list[nn.Module] = []
    channels = 3
    for out, kernel, stride in ((24, 5, 2), (32, 5, 2), (64, 5, 2), (64, 3, 1), (64, 3, 1)):
        layers += [nn.Conv2d(channels, out, kernel, stride, bias=False), nn.BatchNorm2d(out),
                   nn.ReLU(inplace=True), nn.Dropout2d(dropout)]
        channels = out
    return nn.Sequential(*layers)


def dense_layers(flat: int, outputs: int, dropout: float) -> list[nn.Module]:
    """PilotNet's dense layers (100, 50, then ``outputs``) after flattening the features."""
    return [nn.Flatten(), nn.Linear(flat, 100), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(100, 50), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(50, outputs)]


class LinearPilot(nn.Module):
    def __init__(self, input_shape: tuple[int, int, int], dropout: float = 0.1):
        super().__init__()
        self.features = conv_stack(dropout)
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *input_shape)).numel()
        self.head = nn.Sequential(*dense_layers(flat, 2, dropout), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
