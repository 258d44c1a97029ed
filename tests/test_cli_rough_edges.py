"""The `car` command's small promises: every option explains itself, a wrong flag shows the
subcommand's usage, `--track` works on drive and record as on `car sim *`, and the run
summary and bench table say what their numbers are."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from car.bench import BenchRow, format_table
from car.cli import build_parser, main
from car.commands.run_options import format_summary, simulator


def _actions(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_has_help_text() -> None:
    missing = [f"{path} {a.option_strings or a.dest}" for path, a in _actions(build_parser(),
                                                                              "car")
               if not a.help]
    assert missing == []


@pytest.mark.parametrize("argv, usage", [
    (["drive", "--model", "m.onnx", "--bogus"], "usage: car drive"),
    (["tub", "info", "x", "--nope"], "usage: car tub info"),
    (["sim", "eval", "--expert", "--wrong", "1"], "usage: car sim eval"),
])
def test_a_wrong_flag_shows_the_subcommands_usage(argv: list[str], usage: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage) and "unrecognized arguments" in err


def test_track_names_the_simulator_on_drive_and_record() -> None:
    parser = build_parser()
    for command in (["drive", "--model", "m.onnx"], ["record", "--out", "t"]):
        assert simulator(parser.parse_args([*command, "--track", "technical"])) == "technical"
        assert simulator(parser.parse_args([*command, "--sim", "oval"])) == "oval"
        assert simulator(parser.parse_args([*command, "--sim", "--track", "oval"])) == "oval"


def test_sim_and_track_that_disagree_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drive", "--model", "m.onnx", "--sim", "technical", "--track", "oval"]) == 1
    err = capsys.readouterr().err
    assert err == "car: error: --sim technical and --track oval name two worlds; give one\n"


def test_record_lists_the_none_controller(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["record", "--help"])
    assert "or none (nobody: a check" in " ".join(capsys.readouterr().out.split())


def _summary(**safety: int) -> dict:
    lat = {"p50": 1.0, "p99": 2.0}
    return {"ticks": 10, "elapsed_s": 0.5, "hz": 20.0, "target_hz": 20.0, "overruns": 0,
            "overrun_pct": 0.0, "stop_reason": "done", "engine": None,
            "latency_ms": {"tick": lat}, "safety": {"estop_ticks": 0, **safety}}


def test_the_summary_explains_its_safety_counters() -> None:
    text = format_summary(_summary(throttle_capped=7), [])
    assert "engine: None" not in text  # `car record` has no engine
    assert "safety: throttle_capped 7" in text
    assert "throttle_capped: ticks the pilot's throttle was cut to drive.max_throttle" in text
    assert "estop" not in text  # counters at zero are not shown


def test_the_bench_header_names_its_units() -> None:
    row = BenchRow("onnxruntime", "CPUExecutionProvider", "pilot.onnx")
    row.preprocess_ms = row.infer_ms = {"p50": 0.1, "p99": 0.2}
    row.load_s = 0.05
    head, columns, line = format_table([row]).splitlines()
    assert "preprocess ms" in head and "inference ms" in head and "load" in head
    assert columns.split() == ["engine", "provider", "p50", "p99", "p50", "p99", "s"]
    assert line.split()[:2] == ["onnxruntime", "CPUExecutionProvider"]


def test_tub_info_shows_the_capture_rate_first(sim_tub_pristine: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tub", "info", str(sim_tub_pristine)]) == 0
    lines = capsys.readouterr().out.splitlines()
    captured = next(i for i, line in enumerate(lines) if line.startswith("captured"))
    written = next(i for i, line in enumerate(lines) if line.startswith("written"))
    assert captured < written
    hz = float(re.search(r"([\d.]+) Hz \(simulated time\)", lines[captured])[1])
    assert hz == pytest.approx(10.0, rel=0.05)  # `sim record --hz 10`, not the disk's rate
