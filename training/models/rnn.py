"""``rnn``: a per-frame CNN feeding a GRU.

Trained on sequences, (B, T, 3, H, W) → (B, T, 2). On the car it runs one frame per step
with static shapes: ``RnnStep`` takes the frame and the hidden state and returns the
controls and the next hidden state, and that is what gets exported (a stateful ONNX).
"""

from __future__ import annotations

import torch
from torch import nn

from training.models.linear import conv_stack


class RnnPilot(nn.Module):
    def __init__(self, input_shape: tuple[int, int, int], hidden: int = 64,
                 features: int = 128, dropout: float = 0.1):
        super().__init__()
        self.hidden = hidden
        self.cnn = conv_stack(dropout)
        with torch.no_grad():
            flat = self.cnn(torch.zeros(1, *input_shape)).numel()
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(flat, features), nn.ReLU(inplace=True))
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden, 2), nn.Tanh())
        self.burn_in = 0  # training only: leading steps run without gradients (not saved)

    def state_shape(self, batch: int = 1) -> tuple[int, int, int]:
        return (1, batch, self.hidden)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, 3, H, W) → (B, T, 2), from a zero state unless ``h`` is given.

        While training with a ``burn_in``, the first steps only warm the state up: they run
        without gradients (a third of the cost) and their outputs are zeros, which the
        loss leaves out (training.learner.after_burn_in)."""
        burn = self.burn_in if self.training else 0
        if 0 < burn < x.shape[1]:
            with torch.no_grad():
                _, h = self.step_sequence(x[:, :burn], h)
            out, _ = self.step_sequence(x[:, burn:], h)
            return torch.cat([out.new_zeros(out.shape[0], burn, out.shape[2]), out], dim=1)
        out, _ = self.step_sequence(x, h)
        return out

    def step_sequence(self, x: torch.Tensor, h: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = x.shape[:2]
        feats = self.embed(self.cnn(x.reshape(b * t, *x.shape[2:]))).reshape(b, t, -1)
        out, h_next = self.gru(feats, h)
        return self.head(out), h_next


class RnnStep(nn.Module):
    """One frame per call: (image (1, 3, H, W), h (1, 1, hidden)) → (controls (1, 2), h).

    This is what gets exported: static shapes, with the hidden state as an explicit input
    and output, so the car runs the model once per frame and keeps the state itself.
    """

    def __init__(self, model: RnnPilot):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, h_next = self.model.step_sequence(image[:, None], h)
        return out[:, 0], h_next
