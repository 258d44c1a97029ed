"""What each model family is trained to minimise, and the metrics shown while it trains.

Every family's targets are the recorded (steering, throttle) in [-1, 1], shaped (B, 2), or
(B, T, 2) for the rnn. ``objective(model_type, model)`` gives the loss fastai optimises and the
metrics it reports per epoch (and that the checkpoint and manifest keep as ``validation``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Objective:
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metrics: tuple[Metric, ...]


def steering_mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred[..., 0] - target[..., 0]).abs().mean()


def throttle_mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred[..., 1] - target[..., 1]).abs().mean()


def objective(model_type: str, model: nn.Module) -> Objective:
    """The loss and metrics of a family (``model`` is the network being trained, for
    settings such as its bins): mean squared error on the two controls, with the steering
    and throttle mean absolute errors shown."""
    return Objective(nn.MSELoss(), (steering_mae, throttle_mae))
