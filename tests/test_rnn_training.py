"""The rnn learns on longer sequences after a burn-in: the hidden state runs over the first
steps of each sequence before the loss counts, so training sees a state like the one the car
has after driving a while, not only the zero state of a fresh sequence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deploy.manifest import load_manifest
from training.learner import after_burn_in
from training.objectives import steering_mae
from training.records import DataError, windows
from training.train import TrainConfig, train


def test_windows_with_a_stride_stay_inside_runs_and_keep_each_runs_last() -> None:
    runs = [range(0, 30), range(30, 33), range(40, 52)]
    ends = windows(runs, 5, stride=4)
    assert list(ends) == [4, 8, 12, 16, 20, 24, 28, 29, 44, 48, 51]
    assert list(windows(runs, 5)) == list(range(4, 30)) + list(range(44, 52))


def test_the_burn_in_steps_do_not_count() -> None:
    loss = after_burn_in(nn.MSELoss(), 3)
    target = torch.zeros(2, 6, 2)
    pred = torch.zeros(2, 6, 2)
    pred[:, :3] = 5.0  # wild outputs while the state warms up: not the model's fault
    assert float(loss(pred, target)) == 0.0
    pred[:, 3:] = 1.0
    assert float(loss(pred, target)) == pytest.approx(1.0)
    metric = after_burn_in(steering_mae, 3)
    assert metric.__name__ == "steering_mae"  # fastai names the column after it
    assert float(metric(pred, target)) == pytest.approx(1.0)


def test_an_rnn_trains_with_a_burn_in_and_the_manifest_says_so(sim_tub_pristine,
                                                                tmp_path) -> None:
    out = tmp_path / "rnn"
    result = train(TrainConfig(tubs=[sim_tub_pristine], model_type="rnn", out=out,
                               epochs=1, batch_size=8, seq_len=8, limit=200, progress=False,
                               augmentations=(), cache_dir=tmp_path / "cache"))
    training = load_manifest(out / "pilot.onnx").training
    assert training["sequence_length"] == 8 and training["burn_in"] == 4
    assert training["sample_stride"] == 2
    assert training["records"]["train_samples"] < training["records"]["train"]
    assert np.isfinite(result.metrics["valid_loss"]) and "steering_mae" in result.metrics


@pytest.mark.parametrize("model_type, seq_len, burn_in, message", [
    ("rnn", 6, 6, "leaves no step of a 6-frame sequence"),
    ("3d", 5, 2, "--burn-in applies to rnn models only"),
    ("linear", 5, None, "--seq-len applies to 3d and rnn models; a linear model sees one"),
])
def test_a_sequence_setting_that_cannot_work_is_refused(model_type: str, seq_len: int,
                                               burn_in: int | None,
                                               message: str, sim_tub_pristine,
                                               tmp_path) -> None:
    with pytest.raises(DataError, match=message):
        train(TrainConfig(tubs=[sim_tub_pristine], model_type=model_type,
                          out=tmp_path / "m", epochs=1, seq_len=seq_len, burn_in=burn_in,
                          progress=False, cache_dir=tmp_path / "cache"))


def test_the_burn_in_runs_without_gradients_while_training_only() -> None:
    from training.models.rnn import RnnPilot

    torch.manual_seed(0)
    model = RnnPilot((3, 64, 80))
    model.burn_in = 3
    x = torch.randn(2, 6, 3, 64, 80)
    out = model.train()(x)
    assert out.shape == (2, 6, 2) and not out[:, :3].any() and out[:, 3:].abs().sum() > 0
    out[:, 3:].sum().backward()
    assert model.gru.weight_hh_l0.grad is not None
    with torch.no_grad():  # at export and on the car every step is computed
        assert model.eval()(x)[:, :3].abs().sum() > 0
