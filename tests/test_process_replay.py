"""Process replay: the fixture models' outputs on the real tub, against the references
committed beside them (``tests/process_replay.py`` says how to update them on purpose)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from car.cli import main
from tests.process_replay import FIXTURES, fixture_models, replay_args, replay_tub

LINEAR = FIXTURES / "pilot_linear.onnx"


@pytest.fixture(scope="module")
def tub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return replay_tub(tmp_path_factory.mktemp("replay"))


def reference(model: Path) -> Path:
    return model.with_name(f"{model.stem}.replay.json")


def test_every_fixture_model_has_a_committed_reference() -> None:
    models = fixture_models()
    assert {m.stem for m in models} >= {"pilot_linear", "pilot_rnn", "pilot_3d"}
    missing = [m.name for m in models if not reference(m).is_file()]
    assert not missing, f"{missing}: run `.venv/bin/python -m tests.process_replay --update`"


@pytest.mark.parametrize("model", fixture_models(), ids=lambda m: m.stem)
def test_the_outputs_match_the_committed_reference(model: Path, tub: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*replay_args(tub, model), "--json"])
    result = json.loads(capsys.readouterr().out)
    comparison = result["comparison"]
    assert code == 0 and comparison["passed"], comparison
    assert comparison["compared"] == result["records"] == 980  # 1000 less the deleted 20


def test_outputs_that_drift_past_the_tolerance_fail(tub: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "pilot_linear.onnx"
    for suffix in (".onnx", ".json"):
        shutil.copy(LINEAR.with_suffix(suffix), model.with_suffix(suffix))
    committed = json.loads(reference(LINEAR).read_text())
    for drift, passes in ((0.5, True), (2.0, False)):
        data = json.loads(json.dumps(committed))
        data["outputs"][500][1] += drift * data["tolerance"]  # as if the model had changed
        reference(model).write_text(json.dumps(data))
        code = main(replay_args(tub, model))
        out = capsys.readouterr().out
        assert (code == 0) is passes and ("PASS" if passes else "FAIL") in out, out


def test_a_reference_made_from_another_tub_is_refused(tub: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    other = Path(shutil.copytree(tub, tmp_path / "tub"))
    assert main(["tub", "restore", str(other), "300:320"]) == 0
    capsys.readouterr()
    model = LINEAR
    assert main(replay_args(other, model)) == 1
    err = capsys.readouterr().err
    assert "was made from other frames" in err and len(err.strip().splitlines()) == 1
