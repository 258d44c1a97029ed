"""`car train --init` and `car sim dagger`: training from a checkpoint's weights, DAgger's
collection (expert labels, mixture actions), the β schedule, sessions per round, the round
table and its files, Ctrl-C between rounds, and one-line refusals. Tiny data: small circle
tracks at 10 Hz and one-epoch linear models."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from car.cli import main
from car.commands import sim_dagger as dagger_cli
from car.config import load_config
from car.sim.dagger import (
    DAGGER_FIELDS,
    BetaSchedule,
    CollectSummary,
    RoundRow,
    TrackScore,
    best_round,
    collect,
    format_table,
)
from car.sim.expert import Expert
from car.sim.tracks import load_track_for
from car.sim.vehicle import VehicleState
from car.sim.world import Simulator
from car.tub.reader import Tub
from car.tub.writer import TubWriter
from deploy.manifest import load_manifest
from tests.sim_helpers import circle_points
from training.checkpoint import load_checkpoint, save_checkpoint
from training.models import build_model
from training.train import TrainConfig, train


def _track_file(path: Path, radius_m: float, clockwise: bool = False) -> Path:
    path.write_text(json.dumps({"name": path.stem, "width_m": 1.0,
                                "centerline": circle_points(radius_m, 24, clockwise)}))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small collection tracks, a held-out one, an expert tub and a 1-epoch model."""
    root = tmp_path_factory.mktemp("dagger")
    paths = {"root": root, "ring": _track_file(root / "ring.json", 2.0),
             "loop": _track_file(root / "loop.json", 2.4, clockwise=True),
             "held": _track_file(root / "held.json", 2.2), "tub": root / "tub"}
    for track, seed in (("ring", "1"), ("loop", "2")):
        assert main(["sim", "record", "--track", str(paths[track]), "--laps", "2", "--hz", "10",
                     "--out", str(paths["tub"]), "--seed", seed]) == 0
    paths["model"] = root / "m0"
    train(TrainConfig(tubs=[paths["tub"]], model_type="linear", out=paths["model"], epochs=1,
                      progress=False, cache_dir=root / "cache"))
    return paths


def _params(path: Path) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in load_checkpoint(path)[0].named_parameters()}


def test_init_starts_from_the_checkpoint_weights(world: dict[str, Path]) -> None:
    """At a learning rate of 1e-30 no step moves a weight, so what is saved is what the
    training started from: the checkpoint's weights, not the fresh ones its seed gives."""
    base = world["model"] / "pilot.pt"
    result = train(TrainConfig(tubs=[world["tub"]], model_type="linear", epochs=1, lr=1e-30,
                               out=world["root"] / "init", init_from=base, progress=False,
                               cache_dir=world["root"] / "cache"))
    want = _params(base)
    got = _params(world["root"] / "init" / "pilot.pt")
    assert all(torch.equal(got[k], want[k]) for k in want)
    torch.manual_seed(0)  # what the same training would start from without --init
    fresh = dict(build_model("linear", result.manifest.preprocess.input_shape).named_parameters())
    assert any(not torch.equal(fresh[k].detach(), want[k]) for k in want)
    assert result.manifest.training["init_from"] == str(base.resolve())


def _refusal(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("car: error:")
    return err


def test_init_refuses_another_type_input_or_sequence_length(
        world: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root = world["root"]
    pre = load_manifest(world["model"] / "pilot.onnx").preprocess
    rnn = root / "rnn.pt"
    save_checkpoint(rnn, build_model("rnn", pre.input_shape), "rnn", {}, pre, 3, {})
    cropped = dataclasses.replace(pre, crop_top=30, height=90)
    wide = root / "wide.pt"
    save_checkpoint(wide, build_model("linear", cropped.input_shape), "linear", {}, cropped,
                    1, {})
    out = root / "refused"
    argv = ["train", "--tub", str(world["tub"]), "--out", str(out), "--epochs", "1", "--quiet"]
    err = _refusal(capsys, [*argv, "--type", "linear", "--init", str(rnn)])
    assert "is a rnn model" in err and "makes a linear model" in err
    window = root / "3d.pt"  # a 3d model's window is its architecture; the rnn runs any
    save_checkpoint(window, build_model("3d", pre.input_shape, frames=3), "3d", {"frames": 3},
                    pre, 3, {})
    err = _refusal(capsys, [*argv, "--type", "3d", "--seq-len", "4", "--init", str(window)])
    assert "3-frame sequences" in err and "uses 4" in err
    err = _refusal(capsys, [*argv, "--type", "linear", "--init", str(wide)])
    assert "takes 3x90x160 inputs" in err and "give 3x80x160 inputs" in err
    assert not out.exists()


class Wobbly:
    """A learner that weaves: its actions differ from the expert's on most ticks."""

    def __init__(self) -> None:
        self.calls = 0
        self.resets = 0

    def predict(self, frame: np.ndarray) -> tuple[float, float]:
        assert frame.shape == (120, 160, 3)
        self.calls += 1
        return math.sin(self.calls / 3.0), 0.25

    def reset(self) -> None:
        self.resets += 1


def test_collection_labels_are_the_experts_and_runs_the_mixture(world: dict[str, Path]
                                                                 ) -> None:
    config = load_config(None, ["drive.steering_rate_per_s=1000",
                                "drive.throttle_rate_per_s=1000", "drive.max_throttle=1"])
    track = load_track_for(str(world["ring"]), config)
    sim = Simulator(track, config.sim, seed=3)
    expert = Expert(track, sim.params, config.sim.expert_speed_mps)
    learner = Wobbly()
    tub = world["root"] / "collected"
    writer = TubWriter(tub, [k for k, _ in DAGGER_FIELDS], [t for _, t in DAGGER_FIELDS],
                       drop_when_full=False)
    try:
        summary = collect(sim, expert, learner, writer, config=config, round_i=2, beta=0.5,
                          laps=1, period_s=0.1, rng=np.random.default_rng(0), latency_s=0.0)
    finally:
        writer.close()
    records = list(Tub(tub).records())
    assert summary.records == len(records) == learner.calls > 30
    assert summary.stop_reason == "laps done" and summary.laps == 1
    fresh = Expert(track, sim.params, config.sim.expert_speed_mps)
    drove = [r["dagger/expert_drove"] for r in records]
    assert 0.25 < np.mean(drove) < 0.75 and summary.expert_ticks == sum(drove)
    for i, r in enumerate(records):
        state = VehicleState(x=r["sim/x"], y=r["sim/y"], yaw=r["sim/yaw"],
                             speed_mps=r["sim/speed"])
        label = fresh.act(state, 0.1)
        assert (r["user/angle"], r["user/throttle"]) == pytest.approx(label, abs=1e-9)
        model = (math.sin((i + 1) / 3.0), 0.25)
        assert (r["dagger/model_angle"], r["dagger/model_throttle"]) == pytest.approx(model)
        ran = label if r["dagger/expert_drove"] else model
        assert (r["sim/applied_angle"], r["sim/applied_throttle"]) == pytest.approx(ran)
        assert r["dagger/round"] == 2 and r["dagger/beta"] == 0.5 and r["user/mode"] == "user"


def test_beta_decays_and_the_best_round_is_chosen() -> None:
    schedule = BetaSchedule(0.5, 0.5)
    assert [schedule.beta(i) for i in (1, 2, 3)] == [0.5, 0.25, 0.125]
    with pytest.raises(ValueError):
        schedule.beta(0)

    def row(n: int, autonomy: float, lap_s: float | None) -> RoundRow:
        return RoundRow(n, f"r{n}", scores=[TrackScore("t", autonomy, 0, 1, lap_s, 10.0)])

    rows = [row(0, 80.0, 12.0), row(1, 95.0, None), row(2, 95.0, 11.0), row(3, 95.0, 11.0)]
    assert best_round(rows).round == 2  # autonomy, then lap ratio, then the earliest
    table = format_table(rows, 2)
    assert table.splitlines()[3].endswith("*") and "1.100" in table


def _dagger(world: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["sim", "dagger", "--model", str(world["model"]), "--out", str(out), "--hz", "10",
            "--laps", "1", "--eval-laps", "1", "--epochs", "1", "--latency-ms", "5",
            "--eval-track", str(world["held"]), "--quiet", *extra]


def test_one_round_end_to_end(world: dict[str, Path], capsys: pytest.CaptureFixture[str]
                              ) -> None:
    out = world["root"] / "run"
    argv = _dagger(world, out, "--track", str(world["ring"]), str(world["loop"]),
                   "--rounds", "1")
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["ROUND", "BETA", "RECORDS", "COLL.INT",
                                               "VAL", "LOSS", "AUTONOMY", "LAP/EXPERT",
                                               "EVAL.INT"]
    report = json.loads((out / "dagger.json").read_text())
    rows = report["rows"]
    assert [r["round"] for r in rows] == [0, 1] and report["rounds_done"] == 1
    assert rows[0]["beta"] is None and rows[1]["beta"] == 0.5
    for r in rows:
        assert f"{r['round']:>5} " in printed and r["eval"][0]["track"] == "held"
    sessions = Tub(out / "data").sessions()
    assert [s.info["dagger"]["track"] for s in sessions] == ["ring", "loop"]
    assert rows[1]["records"] == sum(s.records for s in sessions) > 0
    trained = load_manifest(out / "round_1" / "pilot.onnx").training
    assert trained["init_from"] == str((world["model"] / "pilot.pt").resolve())
    assert str((out / "data").resolve()) in trained["tubs"]
    best = report["best_round"]
    source = world["model"] if best == 0 else out / f"round_{best}"
    assert (out / "best" / "pilot.onnx").read_bytes() == (source / "pilot.onnx").read_bytes()
    assert report["expert"][0]["track"] == "held" and report["interrupted"] is False


class PressLater:
    """Ctrl-C as the command sees it, pressed by the test."""

    latest: PressLater | None = None

    def __init__(self) -> None:
        self.pressed = False
        PressLater.latest = self

    def __enter__(self) -> PressLater:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to restore."""


def test_ctrl_c_keeps_the_finished_rounds_and_beta_decays(
        world: dict[str, Path], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during round 2's collection: rounds 0 and 1 are kept, round 2 is not
    trained, and its session was recorded at half round 1's β."""
    real_collect = dagger_cli.collect

    def collect(*args: Any, round_i: int, on_step: Any = None, **kwargs: Any) -> CollectSummary:
        ticks = iter(range(10**6))

        def press(done: float) -> None:
            if round_i == 2 and next(ticks) == 10:
                assert PressLater.latest is not None
                PressLater.latest.pressed = True

        return real_collect(*args, round_i=round_i, on_step=press, **kwargs)

    monkeypatch.setattr(dagger_cli, "CtrlC", PressLater)
    monkeypatch.setattr(dagger_cli, "collect", collect)
    out = world["root"] / "stopped"
    assert main(_dagger(world, out, "--track", str(world["ring"]), "--rounds", "3",
                        "--json")) == 130
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report == json.loads((out / "dagger.json").read_text())
    assert [r["round"] for r in report["rows"]] == [0, 1] and report["interrupted"] is True
    assert (out / "round_1").is_dir() and not (out / "round_2").exists()
    assert "interrupted" in captured.err
    betas = [s.info["dagger"]["beta"] for s in Tub(out / "data").sessions()]
    assert betas == [0.5, 0.25]
    assert {r["dagger/beta"] for r in Tub(out / "data").records() if r["dagger/round"] == 2} \
        == {0.25}


@pytest.mark.parametrize(("change", "message"), [
    ({"--model": "NOWHERE"}, "give the folder `car train --out` wrote"),
    ({"--model": "EMPTY"}, "holds no pilot.pt"),
    ({"--model": "UNEXPORTED"}, "holds no pilot.onnx to drive with; run `car export"),
    ({"--track": "no_such_track"}, "no track 'no_such_track'"),
    ({"--eval-track": "random:x"}, "whole number"),
    ({"--out": "FULL"}, "is not an empty folder"),
    ({"--set": "camera.width=128"}, "trained on 160x120 frames but the camera gives 128x120"),
    ({"--rounds": "0"}, "--rounds: must be from 1"),
    ({"--beta0": "1.5"}, "--beta0: must be from 0"),
])
def test_bad_flags_get_one_line_errors(world: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str],
                                       change: dict[str, str], message: str) -> None:
    folders = ("NOWHERE", "EMPTY", "UNEXPORTED", "FULL")  # made here, by these names
    for name in folders[1:]:
        (tmp_path / name).mkdir()
    (tmp_path / "UNEXPORTED" / "pilot.pt").write_bytes((world["model"] / "pilot.pt").read_bytes())
    (tmp_path / "FULL" / "notes.txt").write_text("mine")
    flags = {"--model": str(world["model"]), "--track": str(world["ring"]), "--rounds": "1",
             "--out": str(tmp_path / "out")}
    for key, value in change.items():
        flags[key] = str(tmp_path / value) if value in folders else value
    argv = ["sim", "dagger", *[x for kv in flags.items() for x in kv]]
    if "--rounds" in change or "--beta0" in change:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    else:
        assert message in _refusal(capsys, argv)
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "FULL" / "notes.txt").read_text() == "mine"
