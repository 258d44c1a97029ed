"""The models database (car.model_db) and `car models`: training and eval entries, their
join by model digest, first-format lines, corrupt lines, and a missing database."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from car import model_db
from car.commands import models
from deploy.manifest import file_sha256

FIXTURE = Path(__file__).parent / "fixtures" / "pilot_linear.onnx"
TRAINING = {"tubs": ["/data/tub_1", "/data/tub_2"],
            "records": {"usable": 1398, "train": 1080, "validation": 278},
            "validation": {"valid_loss": 0.0056, "steering_mae": 0.0496, "throttle_mae": 0.0575},
            "epochs_run": 11}
EVAL = {"track": "oval", "laps": 3, "laps_completed": 3, "autonomy_pct": 97.5,
        "mean_abs_cte_m": 0.1234, "lap_time_vs_expert_pct": 4.2, "finished": True}


def model_in(folder: Path, name: str = "pilot") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURE, folder / f"{name}.onnx")
    shutil.copy(FIXTURE.with_suffix(".json"), folder / f"{name}.json")
    return folder / f"{name}.onnx"


def run_models(tmp_path: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    models.register(parser.add_subparsers())
    args = parser.parse_args(["models", "--set", f"paths.models_dir={tmp_path / 'db'}", *argv])
    return args.handler(args)


def test_training_and_eval_entries_join_by_the_model_file(tmp_path: Path) -> None:
    db = tmp_path / "db"
    pilot = model_in(tmp_path / "a")
    train = model_db.record_training(db, pilot, "linear", TRAINING, 232.34)
    assert train["kind"] == "train" and train["type"] == "linear" and train["epochs"] == 11
    assert train["sha256"] and train["out"] == str(pilot.parent.resolve())
    assert train["duration_s"] == 232.3 and train["validation"]["throttle_mae"] == 0.0575
    model_db.record_eval(db, pilot, EVAL | {"autonomy_pct": 50.0})
    model_db.record_eval(db, pilot, EVAL)  # the latest counts
    entries, corrupt = model_db.read_entries(db / "database.jsonl")
    assert corrupt == 0 and [e["kind"] for e in entries] == ["train", "eval", "eval"]
    (row,) = model_db.model_rows(entries)
    assert (row.type, row.tubs, row.records, row.steering_mae) == ("linear", 2, 1398, 0.0496)
    assert row.eval is not None and row.eval["autonomy_pct"] == 97.5
    assert row.eval["lap_time_vs_expert_pct"] == 4.2 and row.eval["mean_abs_cte_m"] == 0.1234


def test_an_engine_built_from_the_model_joins_through_its_manifest(tmp_path: Path) -> None:
    """A pilot.trt is another file, but its manifest records the ONNX file's digest."""
    db = tmp_path / "db"
    pilot = model_in(tmp_path / "a")
    manifest = json.loads(pilot.with_suffix(".json").read_text())
    manifest["export"]["sha256"] = file_sha256(pilot)
    pilot.with_suffix(".json").write_text(json.dumps(manifest))
    model_db.record_training(db, pilot, "linear", TRAINING, 10.0)
    engine = pilot.with_suffix(".trt")
    engine.write_bytes(b"a serialized engine")
    entry = model_db.record_eval(db, engine, EVAL)
    assert entry["source_sha256"] == manifest["export"]["sha256"] and entry["type"] == "linear"
    (row,) = model_db.model_rows(model_db.read_entries(db / "database.jsonl")[0])
    assert row.eval is not None and row.eval["model"] == str(engine.resolve())


def test_rows_are_newest_first_and_foreign_evals_get_their_own_row(tmp_path: Path) -> None:
    db = tmp_path / "db"
    older, newer = model_in(tmp_path / "old"), model_in(tmp_path / "new", "other")
    newer.write_bytes(newer.read_bytes() + b"\0")  # another file, another digest
    model_db.record_training(db, older, "linear", TRAINING, 1.0)
    model_db.record_training(db, newer, "3d", TRAINING, 1.0)
    foreign = model_in(tmp_path / "elsewhere", "foreign")
    foreign.write_bytes(foreign.read_bytes() + b"\0\0")
    model_db.record_eval(db, foreign, EVAL)
    rows = model_db.model_rows(model_db.read_entries(db / "database.jsonl")[0])
    assert [r.type for r in rows] == ["3d", "linear", "linear"]
    assert rows[0].eval is None and rows[1].eval is None
    assert rows[2].model == str(foreign.resolve()) and rows[2].tubs == 0
    assert rows[2].eval is not None and rows[2].eval["track"] == "oval"


def test_car_models_prints_a_table_and_json(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    pilot = model_in(tmp_path / "a")
    model_db.record_training(tmp_path / "db", pilot, "linear", TRAINING, 5.0)
    model_db.record_eval(tmp_path / "db", pilot, EVAL)
    assert run_models(tmp_path) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["TRAINED", "TYPE", "DATA", "STEER"]
    assert "linear" in table[1] and "2 tub(s), 1398 rec" in table[1] and "0.050" in table[1]
    assert "97.5% 3/3 laps oval, lap +4% vs expert, |cte| 0.12 m" in table[1]
    assert table[1].endswith(str(pilot.resolve()))
    assert run_models(tmp_path, "--json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["type"] == "linear" and row["eval"]["autonomy_pct"] == 97.5


def test_a_missing_database_is_a_note_not_an_error(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert run_models(tmp_path) == 0
    out = capsys.readouterr().out
    assert "no models database at" in out and len(out.strip().splitlines()) == 1
    assert run_models(tmp_path, "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == [] and "no models database" in captured.err


def test_corrupt_lines_are_skipped_and_counted_and_old_lines_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "db"
    db.mkdir()
    first_format = {"time": "2026-11-22T22:40:03", "out": str(tmp_path / "p2"),
                    "type": "linear", "tubs": ["/tmp/dm/sim_train"],
                    "records": {"train": 1853, "validation": 644, "left_out": {}},
                    "validation": {"steering_mae": 0.016895}, "epochs": 20}
    (db / "database.jsonl").write_text(json.dumps(first_format) + "\n{not json\n[1, 2]\n\n"
                                       '{"kind": "train", "type": "rnn", "valid')  # cut off
    model_db.record_eval(db, model_in(tmp_path / "p2"), EVAL)  # starts a fresh line
    entries, corrupt = model_db.read_entries(db / "database.jsonl")
    assert corrupt == 3 and len(entries) == 2
    assert run_models(tmp_path) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == f"car: skipped 3 corrupt line(s) in {db / 'database.jsonl'}"
    (row,) = captured.out.splitlines()[1:]
    assert "1 tub(s), 2497 rec" in row and "0.017" in row and "97.5%" in row  # joined by folder


def test_hostile_lines_are_corrupt_lines_and_odd_values_do_not_break_the_table(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A number of 5,000 digits, arrays nested 5,000 deep, a 2 MB line, a line cut off in a
    byte that is not UTF-8: skipped and counted like any corrupt line. Values of the wrong
    type show as -."""
    from car.cli import main

    db = tmp_path / "db"
    db.mkdir()
    odd = {"kind": "train", "time": "2026-01-01T00:00:00", "type": "linear", "tubs": 7,
           "validation": ["x"], "sha256": "abc", "model": "/m/pilot.onnx"}
    odd_eval = {"kind": "eval", "sha256": "abc", "autonomy_pct": "97%", "laps": [1],
                "mean_abs_cte_m": True, "lap_time_vs_expert_pct": {"a": 1}}
    lines = [b'{"kind": "train", "epochs": ' + b"1" * 5000 + b"}",
             b'{"kind": "eval", "laps": ' + b"[" * 5000 + b"]" * 5000 + b"}",
             b'{"kind": "train", "type": "' + b"a" * 2_000_000 + b'"}',
             b'{"kind": "train", "type": "\xff', json.dumps(odd).encode(),
             json.dumps(odd_eval).encode()]
    (db / "database.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    entries, corrupt = model_db.read_entries(db / "database.jsonl")
    assert corrupt == 4 and len(entries) == 2
    code = main(["models", "--set", f"paths.models_dir={db}"])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.err == f"car: skipped 4 corrupt line(s) in {db / 'database.jsonl'}\n"
    (row,) = captured.out.splitlines()[1:]
    assert row.startswith("2026-01-01T00:00:00 linear    -") and "/m/pilot.onnx" in row
