"""The fastai side of `car train`: the Learner, its callbacks, and the fit itself.

From scratch a model is fitted with ``fit_one_cycle``. From pretrained weights it is
fine-tuned the fastai way (``Learner.fine_tune``): the body frozen while the new head learns
for ``freeze_epochs``, then everything unfrozen at discriminative learning rates,
``slice(lr/100, lr)`` across the model's parameter groups (its ``param_groups()``).

Every epoch of every phase is one row of ``history.csv`` (numbered on across phases, with the
phase), written as it ends, so a stopped run keeps what it learned about itself.
"""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.models import TEMPORAL
from training.objectives import Metric, Objective, objective

BEST = "best.pth"  # fastai's copy of the best epoch's weights, deleted after the export
HISTORY = "history.csv"

with warnings.catch_warnings():  # fastai's import uses the deprecated torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)
    import fastai.callback.schedule  # noqa: F401 - adds fit_one_cycle, fine_tune, lr_find
    from fastai.callback.core import Callback
    from fastai.callback.tracker import (
        EarlyStoppingCallback,
        SaveModelCallback,
        TrackerCallback,
    )
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner, Recorder


class KeepBest(SaveModelCallback):
    """Save the best model by validation loss, without printing each time; the best is kept
    across the phases of a fine-tune."""

    def after_epoch(self) -> None:
        TrackerCallback.after_epoch(self)
        if self.new_best:
            self._save(self.fname)


class EpochLog(Callback):
    """One history row per epoch, continuous across fits, appended to ``history.csv``."""

    order = Recorder.order + 20  # after the recorder has the epoch's values and time

    def __init__(self, path: Path | None):
        self.path = path  # None: keep the rows without writing them (a rank other than 0)
        self.rows: list[dict[str, Any]] = []
        if path is not None:
            path.unlink(missing_ok=True)

    def after_epoch(self) -> None:
        recorder = self.learn.recorder
        names = [n for n in recorder.metric_names if n not in ("epoch", "time")]
        opt = self.learn.opt
        phase = "frozen" if opt is not None and getattr(opt, "frozen_idx", 0) > 0 else "all"
        row: dict[str, Any] = {"epoch": len(self.rows)}
        row |= {n: float(v) for n, v in zip(names, recorder.values[-1])}
        row |= {"phase": phase, "time": recorder.log[-1] if recorder.add_time else ""}
        fresh = not self.rows
        self.rows.append(row)
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            if fresh:
                f.write(",".join(row) + "\n")
            f.write(",".join(_cell(v) for v in row.values()) + "\n")


def _cell(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def make_learner(loaders: tuple, model: nn.Module, model_type: str, out: Path, patience: int,
                 cuda: bool, burn_in: int = 0) -> Any:
    """A Learner over the (train, validation) loaders, saving the best epoch to ``out``;
    with ``burn_in``, the loss and metrics of sequences skip their first steps."""
    dls = DataLoaders(*loaders, device=torch.device("cuda" if cuda else "cpu"))
    goal = objective(model_type, model)
    if burn_in:
        goal = Objective(after_burn_in(goal.loss, burn_in),
                         tuple(after_burn_in(m, burn_in) for m in goal.metrics))
    groups = getattr(model, "param_groups", None)
    extra = {"splitter": lambda m: m.param_groups()} if callable(groups) else {}
    learn = Learner(dls, model.to("cuda" if cuda else "cpu"), loss_func=goal.loss,
                    metrics=list(goal.metrics), path=out, model_dir=".",
                    cbs=[KeepBest(monitor="valid_loss", fname="best", reset_on_fit=False),
                         EarlyStoppingCallback(monitor="valid_loss", patience=patience,
                                               reset_on_fit=False)], **extra)
    if cuda:
        learn = learn.to_fp16()  # mixed precision on the GPU
        if model_type not in TEMPORAL:  # 2-D convolutions run faster in NHWC there
            model.to(memory_format=torch.channels_last)
            learn.add_cb(ChannelsLast())
    return learn


class ChannelsLast(Callback):
    """Image batches in channels-last memory order, as the model's weights (CUDA only)."""

    def before_batch(self) -> None:
        self.learn.xb = tuple(x.contiguous(memory_format=torch.channels_last)
                              if x.ndim == 4 else x for x in self.learn.xb)


def after_burn_in(fn: Metric, burn_in: int) -> Metric:
    """``fn`` on the steps of (B, T, ...) sequences after the first ``burn_in``."""

    @functools.wraps(fn)
    def sliced(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return fn(pred[:, burn_in:], target[:, burn_in:])

    return sliced


def fit(learn: Any, epochs: int, lr: float, fine_tune: bool, freeze_epochs: int,
        progress: bool, write_history: bool = True) -> list[dict[str, Any]]:
    """Train: ``fit_one_cycle``, or ``fine_tune`` from pretrained weights. The history rows
    (written to ``history.csv`` as they come with ``write_history``)."""
    log = EpochLog(Path(learn.path) / HISTORY if write_history else None)
    with quiet(learn, progress):
        if fine_tune:
            learn.fine_tune(epochs, lr, freeze_epochs=freeze_epochs, cbs=[log])
        else:
            learn.fit_one_cycle(epochs, lr, cbs=[log])
    return log.rows


class quiet:  # used like a function, as fastai's own no_bar()
    """fastai's progress bars and epoch table only when progress is wanted."""

    def __init__(self, learn: Any, progress: bool):
        self.contexts = [] if progress else [learn.no_bar(), learn.no_logging()]

    def __enter__(self) -> None:
        for c in self.contexts:
            c.__enter__()

    def __exit__(self, *exc: object) -> None:
        for c in reversed(self.contexts):
            c.__exit__(*exc)


def find_lr(learn: Any, out: Path, progress: bool, frozen: bool) -> float:
    """fastai's ``lr_find`` (on the frozen model before a fine-tune), its plot in
    ``lr_find.png``, and the suggested learning rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if frozen:
        learn.freeze()
    with quiet(learn, progress):
        suggestion = learn.lr_find(show_plot=False)
    learn.recorder.plot_lr_find()
    plt.title(f"lr_find: suggested {suggestion.valley:.2e}")
    plt.savefig(out / "lr_find.png", dpi=100)
    plt.close("all")
    return float(suggestion.valley)


def plot_loss(history: list[dict[str, Any]], path: Path) -> None:
    """Training and validation loss per epoch (numbered as in ``history.csv``), with the
    frozen epochs of a fine-tune shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [h["epoch"] for h in history]
    for key in ("train_loss", "valid_loss"):
        ax.plot(epochs, [h.get(key, math.nan) for h in history], marker="o", label=key)
    frozen = [h["epoch"] for h in history if h.get("phase") == "frozen"]
    if frozen:
        ax.axvspan(min(frozen) - 0.5, max(frozen) + 0.5, color="0.9", label="body frozen")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
