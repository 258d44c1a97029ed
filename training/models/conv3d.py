"""``3d``: a residual (2+1)D CNN over the last T frames, so motion (speed, turning) is
visible to it: R(2+1)D's factorisation of each 3D convolution into a spatial convolution on
every frame and a temporal one across frames, with ResNet shortcuts.

Built for ONNX Runtime on the car's CPU. Every convolution is a ``Conv2d``: the spatial ones
run on the B·T frames at once, the temporal ones on each step's k newest frames stacked on
the channels (a (k, 1, 1) ``Conv3d`` written as a 1×1 ``Conv2d``). ORT's CPU ``Conv3d``, even
with a (1, 3, 3) kernel, runs about 2× slower than the same network of ``Conv2d`` (see
BENCHMARKS.md, "Inference").

The temporal convolutions are unpadded: each one shortens the window (5 → 3 → 1 by
default), so no work goes into steps the output never uses, and the one step left has seen
every frame of the window, none of them zero padding.
"""

from __future__ import annotations

import torch
from torch import nn

WIDTHS = (24, 32, 64, 64)  # stem, then the three residual stages


def per_frame(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer`` (a 2D module) on every frame: (B, T, C, H, W) → (B, T, C', H', W')."""
    y = layer(x.flatten(0, 1))
    return y.unflatten(0, (-1, x.shape[1]))


def windows(x: torch.Tensor, k: int) -> torch.Tensor:
    """Each step's k newest frames, oldest first, stacked on the channels:
    (B, T, C, H, W) → (B, T - k + 1, k·C, H, W); step i of the result ends at frame i + k - 1."""
    n = x.shape[1] - k + 1
    return torch.cat([x[:, i:i + n] for i in range(k)], dim=2)


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """Conv2d (no bias; the BatchNorm folds into it at export), BatchNorm, optional ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                               nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class ResBlock2Plus1D(nn.Module):
    """A residual (2+1)D block: 3×3 spatial conv (stride ``stride``) on every frame, temporal
    conv over ``kt`` frames (unpadded: T shrinks by kt - 1; none when kt = 1), 3×3 spatial
    conv, plus the shortcut from each output step's newest input frame (a 1×1 projection
    when the width or stride changes)."""

    def __init__(self, cin: int, cout: int, stride: int, kt: int):
        super().__init__()
        self.kt = kt
        self.spatial = conv_bn(cin, cout, 3, stride)
        self.temporal = conv_bn(kt * cout, cout, 1) if kt > 1 else nn.Identity()
        self.spatial2 = conv_bn(cout, cout, 3, relu=False)
        self.shortcut = (conv_bn(cin, cout, 1, stride, relu=False)
                         if cin != cout or stride != 1 else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, cin, H, W) → (B, T - kt + 1, cout, H / stride, W / stride)."""
        y = per_frame(self.spatial, x)
        if self.kt > 1:
            y = per_frame(self.temporal, windows(y, self.kt))
        y = per_frame(self.spatial2, y)
        return torch.relu(y + per_frame(self.shortcut, x[:, self.kt - 1:]))


def temporal_kernels(frames: int) -> tuple[int, int]:
    """The two temporal kernels that shrink ``frames`` steps to one: (3, 3) for 5 frames."""
    second = (frames + 1) // 2
    return frames + 1 - second, second


class Conv3dPilot(nn.Module):
    """Stem (5×5, stride 2) on every frame, two residual (2+1)D stages that fuse the
    ``frames`` newest frames into one step, and a 2D residual stage; each stage halves the
    resolution (80×160 → 5×10). The head flattens that last feature map rather than pooling
    it, so it still knows *where* the line is in the frame (a global average pool throws that
    away, and steering depends on it).

    A window longer than ``frames`` uses its last ``frames``; a shorter one is padded with
    copies of its oldest frame (the stem is per frame, so the copies are made after it)."""

    def __init__(self, input_shape: tuple[int, int, int] = (3, 80, 160), frames: int = 5,
                 dropout: float = 0.1):
        super().__init__()
        if frames < 1:
            raise ValueError(f"frames = {frames}: a 3d model needs at least one frame")
        self.frames = frames
        c0, c1, c2, c3 = WIDTHS
        k1, k2 = temporal_kernels(frames)
        self.stem = conv_bn(input_shape[0], c0, 5, 2)
        self.stages = nn.Sequential(ResBlock2Plus1D(c0, c1, 2, k1), ResBlock2Plus1D(c1, c2, 2, k2),
                                    ResBlock2Plus1D(c2, c3, 2, 1))
        with torch.no_grad():  # the flattened size of the last feature map for this input
            flat = self.stages(torch.zeros(1, frames, c0, *self._stem_size(input_shape))).numel()
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(flat, 64),
                                  nn.ReLU(inplace=True), nn.Linear(64, 2), nn.Tanh())

    @staticmethod
    def _stem_size(input_shape: tuple[int, int, int]) -> tuple[int, int]:
        return (input_shape[1] + 1) // 2, (input_shape[2] + 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) normalised frames → (B, 2) in [-1, 1], for the window's last frame."""
        x = per_frame(self.stem, x[:, -self.frames:])
        missing = self.frames - x.shape[1]
        if missing > 0:
            x = torch.cat([x[:, :1]] * missing + [x], dim=1)
        return self.head(self.stages(x)[:, -1])
