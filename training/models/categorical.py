"""``categorical``: donkeycar's categorical pilot, done right.

The PilotNet convolutions of ``linear`` with a head of S + T logits: steering in S bins
(default 15) and throttle in T bins (default 20), both over [-1, 1]. Bin k of n is centred
on ``linspace(-1, 1, n)[k]`` (donkeycar's ``linear_bin``): -1 and +1 are bin centres (full
lock is reachable) and so is 0 for an odd n; a label goes to its nearest centre, half-way
up (0 with 20 bins goes to bin 10). In training, ``forward`` gives the logits (B, S + T);
training.objectives holds the loss (cross-entropy per head on ``soft_targets``) and metrics.

**Decoding: the expected value.** The export (``CategoricalExport``) gives the engines the
(1, 2) ``controls`` they read from every family: each head's expected bin centre under its
softmax, not the argmax centre. Where the model hesitates between two bins the argmax
jumps a whole bin (0.14 of steering at 15 bins) from one frame to the next and cannot say
anything between centres; the expectation moves smoothly and resolves between them (on an
unseen track, steering MAE 0.035 against the argmax's 0.047, same model). The
export also gives ``steering_probs`` (1, S) and ``throttle_probs`` (1, T), which the
manifest names and `car tub plot` draws; engines run only ``controls``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from training.models.linear import conv_stack, dense_layers
from training.records import DataError

MAX_BINS = 1000  # the manifest's limit too
OUTPUTS = ("controls", "steering_probs", "throttle_probs")


def bin_centres(n: int) -> torch.Tensor:
    """The n bin centres over [-1, 1], ``linspace(-1, 1, n)``."""
    return torch.linspace(-1.0, 1.0, n)


def to_bins(values: torch.Tensor, n: int) -> torch.Tensor:
    """Each value's bin (its nearest centre; values outside [-1, 1] go to the end bins)."""
    position = (values.float().clamp(-1.0, 1.0) + 1.0) * ((n - 1) / 2.0)
    return torch.floor(position + 0.5).long().clamp(0, n - 1)


def soft_targets(values: torch.Tensor, n: int, sigma: float) -> torch.Tensor:
    """Target distributions (..., n): a Gaussian over the bin centres around each value,
    ``sigma`` in bin widths; ``sigma`` 0 gives the one-hot of ``to_bins``. Each sums to 1."""
    if sigma <= 0:
        return F.one_hot(to_bins(values, n), n).float()
    centres = bin_centres(n).to(values.device)
    width = 2.0 / (n - 1)
    z = (centres - values.float().clamp(-1.0, 1.0)[..., None]) / (sigma * width)
    return torch.softmax(-0.5 * z * z, dim=-1)


def expected_value(logits: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """The expected bin centre under the softmax of ``logits`` (..., n) → (...)."""
    return torch.softmax(logits.float(), dim=-1) @ centres


class CategoricalPilot(nn.Module):
    """(B, 3, H, W) → logits (B, S + T): steering's S bins, then throttle's T."""

    def __init__(self, input_shape: tuple[int, int, int], steering_bins: int = 15,
                 throttle_bins: int = 20, dropout: float = 0.1):
        super().__init__()
        for name, n in (("steering", steering_bins), ("throttle", throttle_bins)):
            if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= MAX_BINS:
                raise DataError(f"{name} bins = {n!r}: a categorical model takes a whole "
                                f"number of bins from 2 to {MAX_BINS} per output")
        self.bins = (steering_bins, throttle_bins)
        self.features = conv_stack(dropout)
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *input_shape)).numel()
        self.head = nn.Sequential(*dense_layers(flat, steering_bins + throttle_bins, dropout))
        self.register_buffer("steering_centres", bin_centres(steering_bins), persistent=False)
        self.register_buffer("throttle_centres", bin_centres(throttle_bins), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def split(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(steering logits (B, S), throttle logits (B, T))."""
        return logits[..., :self.bins[0]], logits[..., self.bins[0]:]

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits → (B, 2) expected (steering, throttle)."""
        steering, throttle = self.split(logits)
        return torch.stack([expected_value(steering, self.steering_centres),
                            expected_value(throttle, self.throttle_centres)], dim=-1)


class CategoricalExport(nn.Module):
    """What is exported: image → (controls (B, 2), steering_probs (B, S),
    throttle_probs (B, T)), named as in ``OUTPUTS``."""

    def __init__(self, pilot: CategoricalPilot):
        super().__init__()
        self.pilot = pilot

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        steering, throttle = self.pilot.split(self.pilot(x))
        p_steering, p_throttle = torch.softmax(steering, -1), torch.softmax(throttle, -1)
        controls = torch.stack([p_steering @ self.pilot.steering_centres,
                                p_throttle @ self.pilot.throttle_centres], dim=-1)
        return controls, p_steering, p_throttle
