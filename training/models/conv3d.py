"""``3d``: a 3D CNN over the last T frames, so motion (speed, turning) is visible to it."""

from __future__ import annotations

import torch
from torch import nn


class Conv3dPilot(nn.Module):
    """Four strided 3D conv blocks, then the features of the window's last time step,
    flattened so the head still knows *where* things are in the frame (a global average
    pool would throw away the line's position, which is what steering depends on)."""

    def __init__(self, input_shape: tuple[int, int, int] = (3, 80, 160), dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        channels = input_shape[0]
        for out, kernel in ((16, (3, 5, 5)), (32, (3, 5, 5)), (64, (3, 3, 3)), (64, (3, 3, 3))):
            pad = tuple(k // 2 for k in kernel)
            layers += [nn.Conv3d(channels, out, kernel, stride=(1, 2, 2), padding=pad),
                       nn.BatchNorm3d(out), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        with torch.no_grad():  # the flattened size for this input shape (time is kept)
            flat = self.features(torch.zeros(1, input_shape[0], 1, *input_shape[1:])).numel()
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(flat, 64),
                                  nn.ReLU(inplace=True), nn.Linear(64, 2), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) → (B, 2), for the last frame of the window (whose features have
        seen the frames before it through the temporal kernels)."""
        features = self.features(x.permute(0, 2, 1, 3, 4))  # (B, C, T, h, w)
        return self.head(features[:, :, -1])
