"""benchmarks/compare_report.py: the comparison study's aggregation, table, CSV and markdown
section (no training, no simulator)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from compare_report import (
    BEGIN,
    END,
    aggregate,
    failed_row,
    format_table,
    mean_std,
    plot,
    replace_section,
    run_row,
    write_csv,
)


def _eval(autonomy: float, ratio_pct: float | None, cte: float = 0.1) -> dict:
    return {"autonomy_pct": autonomy, "interventions": 0, "lap_time_vs_expert_pct": ratio_pct,
            "mean_abs_cte_m": cte, "max_abs_cte_m": 0.3, "mean_lap_time_s": 10.0,
            "expert": {"mean_lap_time_s": 9.8}}


def _rows() -> list[dict]:
    return [run_row("cruise", "linear", 0, "oval", _eval(100.0, 2.0), 1.0, 400_000, 120.0),
            run_row("cruise", "linear", 1, "oval", _eval(90.0, 4.0), 1.2, 400_000, 180.0),
            run_row("cruise", "linear", 2, "oval", _eval(80.0, None), 1.1, 400_000, 150.0),
            failed_row("cruise", "rnn", 0, "oval", "train: invalid choice | x")]


def test_run_row_turns_the_percentage_into_a_ratio() -> None:
    row = run_row("race", "3d", 0, "random:11", _eval(99.0, -1.5), 15.8, 10, 60.0)
    assert row["lap_ratio"] == pytest.approx(0.985)
    assert row["expert_lap_s"] == 9.8 and row["status"] == "ok"
    assert run_row("race", "3d", 0, "t", _eval(0.0, None), 1.0, 10, 1.0)["lap_ratio"] is None


def test_mean_std_over_seeds() -> None:
    assert mean_std([]) is None and mean_std([None]) is None
    assert mean_std([2.0]) == (2.0, 0.0)
    mean, std = mean_std([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(1.0)  # the sample std


def test_aggregate_counts_seeds_failures_and_laps() -> None:
    linear, rnn = aggregate(_rows())
    assert (linear["family"], linear["ok"], linear["seeds"], linear["laps_n"]) == (
        "linear", 3, 3, 2)
    assert linear["autonomy_pct"][0] == pytest.approx(90.0)
    assert linear["lap_ratio"][0] == pytest.approx(1.03)
    assert linear["autonomy_each"] == [100.0, 90.0, 80.0]
    assert linear["drove"] == 1  # only seed 0 reached 99.5 % autonomy
    assert rnn["ok"] == 0 and rnn["autonomy_pct"] is None
    assert rnn["errors"] == ["train: invalid choice | x"]


def test_table_shows_mean_std_partial_laps_and_failures() -> None:
    table = format_table(aggregate(_rows()))
    lines = table.splitlines()
    assert len(lines) == 4 and lines[1].count("|") == lines[2].count("|") == lines[3].count("|")
    assert "90.0 ± 10.0" in lines[2] and "1.030 ± 0.014 (2 seeds)" in lines[2]
    assert "400.0 k" in lines[2] and "2.5" in lines[2]  # train minutes
    assert "| 3/3 | 1/3 | 90.0" in lines[2]  # seeds ok, then how many drove
    assert "0/1" in lines[3] and "failed: train: invalid choice / x" in lines[3]
    one = format_table(aggregate(_rows()[:1])).splitlines()[2]
    assert "100.0" in one and "±" not in one  # one seed: no spread to show


def test_replace_section_appends_then_replaces() -> None:
    first = replace_section("# Benchmarks\n\nold text\n", "table 1")
    assert first.startswith("# Benchmarks\n\nold text\n\n" + BEGIN) and "table 1" in first
    second = replace_section(first + "\n## after\n", "table 2")
    assert "table 1" not in second and "table 2" in second and second.count(BEGIN) == 1
    assert second.rstrip().endswith("## after") and second.index(END) < second.index("after")
    assert replace_section("", "t") == f"{BEGIN}\nt\n{END}\n"


def test_csv_and_plot(tmp_path: Path) -> None:
    rows = _rows()
    write_csv(tmp_path / "runs.csv", rows)
    with (tmp_path / "runs.csv").open() as f:
        back = list(csv.DictReader(f))
    assert [r["status"] for r in back] == ["ok", "ok", "ok", "failed"]
    assert back[2]["lap_ratio"] == "" and back[0]["params"] == "400000"
    pytest.importorskip("matplotlib")
    plot(aggregate(rows), tmp_path / "compare.png")
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_a_scored_model_is_complete_without_its_files(tmp_path: Path) -> None:
    # What git keeps of a study (compare.json and the evals) is enough to skip a model.
    import json

    from compare_models import complete

    model = tmp_path / "models" / "cruise" / "rnn" / "seed1"
    model.mkdir(parents=True)
    evals = tmp_path / "evals" / "cruise" / "rnn" / "seed1"
    evals.mkdir(parents=True)
    (evals / "oval.json").write_text(json.dumps(_eval(100.0, 1.0)))
    assert not complete(tmp_path, "cruise", "rnn", 1, ["oval"])  # no compare.json yet
    (model / "compare.json").write_text(json.dumps({"train_s": 60, "latency_ms": 0.6,
                                                    "params": 5}))
    assert complete(tmp_path, "cruise", "rnn", 1, ["oval"])
    assert not complete(tmp_path, "cruise", "rnn", 1, ["oval", "random:11"])
