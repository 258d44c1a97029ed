"""Every model family on a CUDA GPU (marker ``gpu``; skipped where the probe, torch itself,
sees no CUDA device): one mixed-precision training step, as `car train` takes them on a GPU
(autocast to float16 with a gradient scaler), gives a finite loss and moves the weights; a
CUDA forward matches the CPU forward of the same weights."""

from __future__ import annotations

import copy

import pytest

FAMILIES = ("linear", "categorical", "resnet18", "3d", "rnn")
SHAPE = (3, 80, 160)  # car train's input for 160x120 frames (the top third cropped)
SEQ = {"3d": 5, "rnn": 8}


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not _torch_cuda(), reason="probe: torch sees no CUDA GPU")]


def model_and_batch(family: str, batch: int = 4):
    import torch

    from training.models import build_model
    from training.objectives import objective

    torch.manual_seed(0)
    config = {"pretrained": False} if family == "resnet18" else (
        {"frames": SEQ["3d"]} if family == "3d" else {})
    model = build_model(family, SHAPE, **config)
    seq = SEQ.get(family)
    x = torch.randn((batch, seq, *SHAPE) if seq else (batch, *SHAPE))
    y = torch.rand((batch, seq, 2) if family == "rnn" else (batch, 2)) * 2 - 1
    return model, x, y, objective(family, model).loss


@pytest.mark.parametrize("family", FAMILIES)
def test_one_mixed_precision_training_step_on_cuda(family):
    import torch

    model, x, y, loss_fn = model_and_batch(family)
    model = model.cuda().train()
    x, y = x.cuda(), y.cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**8)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.autocast("cuda", dtype=torch.float16):
        loss = loss_fn(model(x), y)
    assert torch.isfinite(loss), loss
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    torch.cuda.synchronize()
    assert scaler.get_scale() >= 2.0**8  # no inf/NaN gradient: the step was taken
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, model.parameters()))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_cuda_forward_matches_the_cpu_forward(family, monkeypatch):
    import torch

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # full float32 on both
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model, x, _, _ = model_and_batch(family, batch=2)
    model = model.eval()
    with torch.inference_mode():
        cpu = model(x)
        gpu = copy.deepcopy(model).cuda()(x.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-3)
