"""The residual (2+1)D ``3d`` model: shape and range, its shortcuts, its temporal receptive
field, its size, and its ONNX export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.export import export_untrained
from training.models.conv3d import Conv3dPilot, ResBlock2Plus1D, temporal_kernels, windows

PARAM_BUDGET = 500_000  # small enough for the car's CPU (the plain 3d CNN it replaced: 413k)


@pytest.fixture(scope="module")
def model() -> Conv3dPilot:
    torch.manual_seed(0)
    return Conv3dPilot().eval()


@pytest.mark.parametrize("frames", [1, 3, 5, 8])
def test_output_shape_and_range_for_any_window(model: Conv3dPilot, frames: int) -> None:
    with torch.no_grad():
        out = model(torch.randn(2, frames, 3, 80, 160) * 3)
    assert out.shape == (2, 2)
    assert out.abs().max() <= 1


def test_parameter_budget(model: Conv3dPilot) -> None:
    assert sum(p.numel() for p in model.parameters()) < PARAM_BUDGET


def test_residual_blocks_add_their_shortcut(model: Conv3dPilot) -> None:
    assert sum(isinstance(m, ResBlock2Plus1D) for m in model.modules()) == 3
    block = ResBlock2Plus1D(32, 64, stride=2, kt=3).eval()
    x = torch.randn(1, 3, 32, 20, 40)
    with torch.no_grad():
        full = block(x)
        block.spatial2[1].weight.zero_()  # the branch's last BatchNorm: the branch gives 0
        block.spatial2[1].bias.zero_()
        only_shortcut = block(x)
        shortcut = torch.relu(block.shortcut(x[:, -1]))  # from the newest frame
    assert full.shape == (1, 1, 64, 10, 20)
    torch.testing.assert_close(only_shortcut[:, 0], shortcut)
    assert not torch.allclose(full, only_shortcut)


def test_windows_stack_each_steps_newest_frames() -> None:
    x = torch.arange(5.0).reshape(1, 5, 1, 1, 1)
    assert windows(x, 3).flatten(2).tolist() == [[[0, 1, 2], [1, 2, 3], [2, 3, 4]]]
    assert temporal_kernels(5) == (3, 3)
    assert all(sum(temporal_kernels(f)) - 2 == f - 1 for f in range(1, 12))


def test_the_last_step_sees_every_frame_of_the_window(model: Conv3dPilot) -> None:
    x = torch.randn(1, 5, 3, 80, 160, requires_grad=True)
    model(x)[0, 0].backward()
    per_frame = x.grad.abs().sum(dim=(0, 2, 3, 4))  # type: ignore[union-attr]
    assert (per_frame > 0).all(), per_frame
    with torch.no_grad():  # and frames older than the window change nothing
        longer = torch.cat([torch.randn(1, 2, 3, 80, 160), x.detach()], dim=1)
        torch.testing.assert_close(model(longer), model(x.detach()))


def test_onnx_export_matches_torch(tmp_path: Path) -> None:
    onnx_path = export_untrained("3d", tmp_path)
    manifest = json.loads((tmp_path / "pilot.json").read_text())
    assert manifest["sequence_length"] == 5
    assert manifest["export"]["max_abs_diff"] <= 1e-4
    checkpoint = torch.load(tmp_path / "pilot.pt", weights_only=True)
    model = Conv3dPilot().eval()
    model.load_state_dict(checkpoint["state_dict"])
    x = np.random.default_rng(1).standard_normal((1, 5, 3, 80, 160)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (ours,) = session.run(None, {"image": x})
    with torch.no_grad():
        np.testing.assert_allclose(ours, model(torch.from_numpy(x)).numpy(), atol=1e-4)
