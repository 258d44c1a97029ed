"""One rule for a temporal pilot's state (``car.temporal``): where it starts afresh, and that
`car replay` and `car tub plot` apply it alike to an rnn and a 3d model on a tub with a
deleted stretch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from car.cli import main
from car.frames import Frame
from car.temporal import Continuity
from car.tub.reader import Tub
from deploy.engine import load_engine
from tests.process_replay import FIXTURES, replay_tub

IMAGE = np.zeros((2, 2, 3), np.uint8)


def frame(seq: int, index: int | None = None, session: str | None = None) -> Frame:
    return Frame(IMAGE, float(seq), seq, index=index, session=session)


def test_the_state_starts_afresh_at_gaps_new_sessions_stale_frames_and_mode_changes():
    rule = Continuity()
    assert rule.breaks(frame(0, 5, "a")) is None  # a fresh engine needs no reset
    assert rule.breaks(frame(1, 6, "a")) is None
    assert rule.breaks(frame(2, 9, "a")) == "gap in the records"
    assert rule.breaks(frame(3, 10, "b")) == "new session"
    assert rule.breaks(frame(4, 11, "b"), stale=True) == "stale frame"
    assert rule.breaks(frame(5, 12, "b"), mode_changed=True) == "mode change"
    rule.restart()  # put back, or a new model: reset already, nothing more to do
    assert rule.breaks(frame(6, 40, "b")) is None
    live = Continuity()  # a live camera's frames carry no record index: only time and mode
    assert live.breaks(frame(0)) is None and live.breaks(frame(7)) is None


@pytest.fixture(scope="module")
def gap_tub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real tub with records 300 to 319 deleted."""
    return replay_tub(tmp_path_factory.mktemp("gap"))


def predict(model: Path, tub: Tub, indexes: range) -> np.ndarray:
    """The model on records ``indexes`` one after the other, from a fresh state."""
    engine = load_engine(model)
    by_index = {r["_index"]: r for r in tub.records()}
    return np.array([engine.predict(tub.load_image(by_index[i])) for i in indexes])


@pytest.mark.parametrize("name", ["pilot_rnn", "pilot_3d"])
def test_replay_and_tub_plot_agree_and_restart_the_state_after_a_deleted_stretch(
        name: str, gap_tub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = FIXTURES / f"{name}.onnx"
    ref = tmp_path / "replay.json"
    assert main(["replay", str(gap_tub), "--model", str(model), "--ref", str(ref),
                 "--update-ref", "--budget-ms", "10000"]) == 0
    replayed = {row[0]: row[1:3] for row in json.loads(ref.read_text())["outputs"]}
    csv = tmp_path / "rows.csv"
    assert main(["tub", "plot", str(gap_tub), "--model", str(model), "--out",
                 str(tmp_path / "plot.png"), "--csv", str(csv)]) == 0
    capsys.readouterr()
    rows = np.loadtxt(csv, delimiter=",", skiprows=1)
    plotted = {int(row[0]): row[3:5] for row in rows}
    assert sorted(replayed) == sorted(plotted) and 300 not in replayed and 320 in replayed
    np.testing.assert_allclose([replayed[i] for i in sorted(replayed)],
                               [plotted[i] for i in sorted(replayed)], atol=1e-6)
    tub = Tub(gap_tub)
    after_gap = predict(model, tub, range(320, 330))  # a fresh state at record 320
    np.testing.assert_allclose([replayed[i] for i in range(320, 330)], after_gap, atol=1e-5)
    # Carried across the gap instead, the state would have given other outputs.
    engine = load_engine(model)
    by_index = {r["_index"]: r for r in tub.records()}
    for i in range(290, 300):
        engine.predict(tub.load_image(by_index[i]))
    across = np.array([engine.predict(tub.load_image(by_index[i])) for i in range(320, 330)])
    assert np.abs(across - after_gap).max() > 1e-4
