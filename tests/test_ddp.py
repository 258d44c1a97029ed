"""`car train --nproc 2`: two gloo processes on the CPU through torch.distributed, against
the same training in one process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.distributed import World, per_rank_batch, shard, smallest_share, without_nproc
from training.records import DataError, load_records, windows
from training.split import split_records

ROOT = Path(__file__).resolve().parent.parent


def car(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CAR_CONFIG"}
    env["XDG_CACHE_HOME"] = str(cwd / "xdg")
    return subprocess.run([sys.executable, "-m", "car.entry", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def history(model: Path) -> list[dict[str, str]]:
    with open(model / "history.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_shards_are_disjoint_contiguous_and_cover_every_sample() -> None:
    ends = np.arange(4, 1003, 3)  # 333 window ends
    parts = [shard(ends, World(rank=r, size=3, launched=True), "training") for r in range(3)]
    assert np.array_equal(np.concatenate(parts), ends)  # in order: contiguous, disjoint, all
    assert {len(p) for p in parts} == {111}
    odd = [shard(ends[:10], World(rank=r, size=3, launched=True), "x") for r in range(3)]
    assert [len(p) for p in odd] == [4, 3, 3]
    assert smallest_share(10, World(size=3)) == 3  # every rank draws 3 a epoch: equal steps
    with pytest.raises(DataError, match="cannot be shared by 3 processes"):
        shard(ends[:2], World(rank=0, size=3, launched=True), "validation")
    with pytest.raises(DataError, match="multiple of 3"):
        per_rank_batch(32, World(size=3))
    assert without_nproc(["train", "--nproc", "2", "--tub", "t", "--nproc=3"]) == [
        "train", "--tub", "t"]


def test_sequence_windows_stay_inside_one_rank(sim_tub_pristine: Path) -> None:
    data = load_records([sim_tub_pristine])
    split = split_records(data, 0.2, seed=0)
    ends = windows(split.train, 20, 2)
    parts = [shard(ends, World(rank=r, size=2, launched=True), "training") for r in range(2)]
    starts = {tuple(range(e - 19, e + 1)) for e in parts[0]}
    # a window belongs to one rank whole; the ranks' windows are all the windows
    assert sum(len(p) for p in parts) == len(ends) and not set(parts[0]) & set(parts[1])
    assert all(len(s) == 20 for s in starts)


@pytest.mark.slow
def test_two_gloo_processes_train_one_model_like_one_process(sim_tub_pristine: Path,
                                                             tmp_path: Path) -> None:
    common = ("train", "--tub", str(sim_tub_pristine), "--type", "linear", "--epochs", "4",
              "--batch-size", "32", "--no-aug", "--quiet", "--patience", "10")
    two = car(*common, "--out", "two", "--nproc", "2", cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "on 2 processes on cpu" in two.stdout
    assert two.stdout.count("trained linear") == 1  # rank 0 reports, once
    one = car(*common, "--out", "one", cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]

    # one set of outputs, from rank 0
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir())
    training = json.loads((tmp_path / "two" / "pilot.json").read_text())["training"]
    assert training["world_size"] == 2 and training["batch_size"] == 32
    dist = training["distributed"]
    assert dist["backend"] == "gloo" and dist["batch_per_process"] == 16
    ranks = dist["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["initial_weights"] == ranks[1]["initial_weights"]  # one starting model
    records = training["records"]
    assert sum(r["train_samples"] for r in ranks) == records["train_samples"]  # all covered
    assert sum(r["validation_samples"] for r in ranks) == records["validation_samples"]

    # it learns as the one-process run does
    rows_two, rows_one = history(tmp_path / "two"), history(tmp_path / "one")
    assert len(rows_two) == len(rows_one) == 4
    first_two, best_two = float(rows_two[0]["valid_loss"]), min(
        float(r["valid_loss"]) for r in rows_two)
    best_one = min(float(r["valid_loss"]) for r in rows_one)
    assert best_two < 0.8 * first_two
    assert best_two < 1.5 * best_one

    # the summed validation loss is the loss of the whole validation set
    assert training["validation"]["valid_loss"] == pytest.approx(
        whole_validation_loss(tmp_path / "two", sim_tub_pristine), rel=1e-3)


def whole_validation_loss(model: Path, tub: Path) -> float:
    """The saved model's loss over every validation sample, in one process."""
    import torch

    from deploy.preprocess import Preprocess
    from training.cache import load_frames
    from training.checkpoint import load_checkpoint
    from training.objectives import objective
    from training.torch_data import FramesDataset

    net, meta = load_checkpoint(model / "pilot.pt")
    data = load_records([tub])
    preprocess = Preprocess.from_dict(meta["preprocess"])
    cache = load_frames(data, preprocess, model.parent / "xdg" / "car" / "frames",
                        progress=False)
    ends = windows(split_records(data, 0.2, 0).val, 1)
    x, y = FramesDataset(cache, data, ends, 1, preprocess)[list(range(len(ends)))]
    with torch.no_grad():
        return float(objective("linear", net).loss(net.eval()(x), y))


@pytest.mark.slow
def test_a_batch_that_does_not_split_is_one_clear_line(sim_tub_pristine: Path,
                                                      tmp_path: Path) -> None:
    done = car("train", "--tub", str(sim_tub_pristine), "--type", "linear", "--out", "m",
               "--batch-size", "33", "--nproc", "2", "--quiet", cwd=tmp_path)
    assert done.returncode == 1
    assert "--batch-size 33 (the global batch) does not split evenly across 2 processes" in (
        done.stderr)
    assert done.stderr.count("error") == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_plain_torchrun_runs_the_same_entry_point(sim_tub_pristine: Path, tmp_path: Path
                                                  ) -> None:
    """The multi-node form of docs/training.md, on one node: torchrun with a c10d
    rendezvous, ``-m car.entry train``."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "CAR_CONFIG"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node",
         "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
         "--rdzv-id", "test", "-m", "car.entry", "train", "--tub", str(sim_tub_pristine),
         "--type", "linear", "--out", "m", "--epochs", "1", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("on 2 processes on cpu") == 1
    manifest = json.loads((tmp_path / "m" / "pilot.json").read_text())
    assert manifest["training"]["world_size"] == 2


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="no CUDA device (probed with torch.cuda)")
@pytest.mark.parametrize("family", ["linear", "rnn"])
def test_nccl_training_on_the_gpu(family: str, sim_tub_pristine: Path, tmp_path: Path) -> None:
    """`--nproc 1` on CUDA: NCCL (a world of one on a single GPU), mixed precision, and
    channels_last for the 2-D families; the export still matches ONNX Runtime."""
    done = car("train", "--tub", str(sim_tub_pristine), "--type", family, "--out", "m",
               "--epochs", "2", "--nproc", "1", "--quiet", "--workers", "0",
               *(["--seq-len", "8"] if family == "rnn" else []), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    training = json.loads((tmp_path / "m" / "pilot.json").read_text())["training"]
    assert training["device"] == "cuda" and training["distributed"]["backend"] == "nccl"
    assert np.isfinite(training["validation"]["valid_loss"])
