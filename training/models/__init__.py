"""The model families, one file each. Every model maps normalised frames to (steering,
throttle) in [-1, 1]:

- ``linear``, ``resnet18``, ``resnet34``: (B, 3, H, W) → (B, 2);
- ``categorical``: (B, 3, H, W) → bin logits (B, S + T) when training, decoded to (B, 2)
  when exported (see ``categorical.CategoricalExport``);
- ``3d``: the last T frames, (B, T, 3, H, W) → (B, 2);
- ``rnn``: (B, T, 3, H, W) → (B, T, 2) when training, and one frame per step with explicit
  hidden state when exported (see ``rnn.RnnStep``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from deploy.manifest import MODEL_TYPES
from training.records import DataError

TEMPORAL = ("3d", "rnn")


def build_model(model_type: str, input_shape: tuple[int, int, int], **config: Any) -> nn.Module:
    """A fresh model. ``input_shape`` is one frame's (3, H, W); ``config`` is the family's
    own settings (saved in the checkpoint so it can be rebuilt)."""
    if model_type == "linear":
        from training.models.linear import LinearPilot

        return LinearPilot(input_shape, **config)
    if model_type == "categorical":
        from training.models.categorical import CategoricalPilot

        return CategoricalPilot(input_shape, **config)
    if model_type in ("resnet18", "resnet34"):
        from training.models.resnet import ResNetPilot

        return ResNetPilot(model_type, **config)
    if model_type == "3d":
        from training.models.conv3d import Conv3dPilot

        return Conv3dPilot(input_shape, **config)
    if model_type == "rnn":
        from training.models.rnn import RnnPilot

        return RnnPilot(input_shape, **config)
    raise DataError(f"unknown model type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
