"""Closed loop on the CPU: a trained linear pilot (tests/fixtures/README.md) drives the
embedded simulator through the real loop; plus `car drive`, `car sim eval`, `car bench`
and `car replay` from the command line, their JSON and their errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from car.cli import main
from car.config import Config
from car.frames import Command
from car.sim.eval import ExpertPilot, autonomy_pct, evaluate
from car.sim.eval_plot import EXPERT, HEADER_PX
from car.sim.expert import Expert
from car.sim.link import SimLink
from car.sim.tracks import load_track
from car.sim.world import Simulator
from car.tub.reader import Tub
from deploy.engine import load_engine
from tests.loop_fakes import FakeEngine

FIXTURE = Path(__file__).parent / "fixtures" / "pilot_linear.onnx"
EVAL_KEYS = {"track", "laps_completed", "lap_times_s", "autonomy_pct", "interventions",
             "mean_abs_cte_m", "max_abs_cte_m", "elapsed_s", "loop"}


def sim_on(track: str, **kw) -> Simulator:
    config = Config()
    return Simulator(load_track(track, 0.39), config.sim, **kw)


def lockstep(sim: Simulator, latency_s: float) -> SimLink:
    """The simulator as a lock-step World at 20 Hz, charging a fixed pilot latency."""
    return SimLink(sim, 0.05, lockstep=True, latency_s=latency_s)


def test_the_trained_pilot_laps_a_track_it_never_saw():
    sim = sim_on("diyrobocars")
    result = evaluate(lockstep(sim, 0.002), load_engine(FIXTURE), Config(), laps=1, rate_hz=20)
    assert result.laps_completed == 1, result
    assert result.autonomy_pct >= 95.0
    assert result.mean_abs_cte_m < 0.15
    assert result.loop["overruns"] == 0


def test_the_expert_scores_full_autonomy_through_the_same_loop():
    sim = sim_on("technical")
    pilot = ExpertPilot(sim, Expert(sim.track, sim.params, 2.0), 0.05)
    result = evaluate(lockstep(sim, 0.0), pilot, Config(), laps=1, rate_hz=20)
    assert result.laps_completed == 1 and result.interventions == 0
    assert result.autonomy_pct == 100.0


def test_departures_are_interventions_and_cost_six_seconds_each():
    sim = sim_on("oval")
    pilot = FakeEngine(lambda n: (1.0, 0.5))  # circles off the track again and again
    result = evaluate(lockstep(sim, 0.0), pilot, Config(), laps=1, rate_hz=20,
                      should_stop=lambda: sim.time_s > 30)
    assert result.interventions >= 3
    assert all(cause == "off track" for *_, cause in result.intervention_points)
    assert pilot.resets == result.interventions  # temporal state reset with each
    assert result.autonomy_pct == pytest.approx(autonomy_pct(result.interventions,
                                                             result.elapsed_s))
    assert autonomy_pct(1, 60.0) == pytest.approx(90.0)


def test_a_car_that_does_not_move_is_an_intervention_too():
    sim = sim_on("oval")
    result = evaluate(lockstep(sim, 0.0), FakeEngine(lambda n: (0.0, 0.0)), Config(), laps=1,
                      rate_hz=20, should_stop=lambda: sim.time_s > 25)
    assert result.interventions == 2  # stalled at 10 s and at 20 s
    assert {cause for *_, cause in result.intervention_points} == {"stalled"}


def test_a_crawling_pilot_does_not_finish_and_the_command_fails(capsys):
    sim = sim_on("oval")
    result = evaluate(lockstep(sim, 0.0), FakeEngine(lambda n: (0.0, 0.12)), Config(), laps=1,
                      rate_hz=20)
    assert not result.finished and result.laps_completed == 0
    assert result.stop_reason.startswith("time limit")
    assert result.elapsed_s < 80  # 3x the expert's planned lap, plus 15 s


def test_lock_step_charges_the_pilots_latency_to_the_car():
    """120 ms of pilot latency at 20 Hz: the command acts 40 + 120 ms after the frame, and
    the next frame comes when the late tick ends (120 ms), as the Ratekeeper does."""
    sim = sim_on("oval")
    link = SimLink(sim, 0.05, lockstep=True, latency_s=0.12)
    link.camera.read()
    link.actuator.send(Command(1.0, 0.0))
    assert sim.time_s == pytest.approx(0.12)
    assert sim.vehicle.applied == (0.0, 0.0)  # not yet: it acts at 0.16 s
    sim.run_until(0.2)
    assert sim.vehicle.applied == (1.0, 0.0)
    quick = sim_on("oval")
    link = SimLink(quick, 0.05, lockstep=True, latency_s=0.0)
    link.camera.read()
    link.actuator.send(Command(1.0, 0.0))
    assert quick.time_s == pytest.approx(0.05) and quick.vehicle.applied == (1.0, 0.0)


def test_a_slow_pilot_overruns_in_lock_step():
    sim = sim_on("oval")
    result = evaluate(lockstep(sim, 0.07), FakeEngine(lambda n: (0.0, 0.3)), Config(), laps=1,
                      rate_hz=20, should_stop=lambda: sim.time_s > 2)
    assert result.loop["overruns"] == result.loop["ticks"] - 1 > 10  # every tick but the last


def test_json_schema_of_car_sim_eval(capsys, tmp_path):
    plot = tmp_path / "map.png"
    code = main(["sim", "eval", "--model", str(FIXTURE), "--track", "oval", "--laps", "1",
                 "--latency-ms", "2", "--json", "--plot", str(plot)])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out)  # exactly one JSON object
    assert set(data) >= EVAL_KEYS
    assert set(data["loop"]) >= {"hz", "overruns", "latency_ms"}
    assert set(data["loop"]["latency_ms"]) == {"p50", "p99"}
    assert data["laps_completed"] == 1 and len(data["lap_times_s"]) == 1
    assert data["latency"] == "fixed 2 ms"
    assert plot.stat().st_size > 10_000


def test_car_sim_eval_compares_with_the_expert(capsys, tmp_path):
    plot = tmp_path / "map.png"
    code = main(["sim", "eval", "--model", str(FIXTURE), "--track", "oval", "--laps", "1",
                 "--latency-ms", "2", "--vs-expert", "--plot", str(plot)])
    out = capsys.readouterr().out
    assert code == 0
    assert "oval: autonomy" in out and "vs expert" in out
    image = cv2.imread(str(plot))  # the expert's path is drawn too, in its own purple
    expert = np.abs(image.astype(int) - np.array(EXPERT)).sum(axis=2) < 40
    assert expert[HEADER_PX:].sum() > 200


def test_car_drive_in_the_simulator_prints_its_summary_as_json(capsys, tmp_path):
    code = main(["drive", "--model", str(FIXTURE), "--sim", "oval", "--duration", "1.5",
                 "--json", "--record", str(tmp_path / "tub")])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out)
    assert data["ticks"] >= 10 and data["target_hz"] == 20
    for stage in ("capture", "preprocess", "infer", "decide", "actuate", "record",
                  "frame_to_command"):
        assert set(data["latency_ms"][stage]) >= {"p50", "p99"}
    assert data["sim"]["track"] == "oval" and data["mode"] == "local"
    assert data["record"]["written"] == data["ticks"]
    records = list(Tub(tmp_path / "tub").records())
    assert len(records) == data["ticks"]
    assert {"pilot/angle", "car/steering", "sim/cte"} <= set(records[-1])


@pytest.mark.parametrize("argv, message", [
    (["--hz", "500"], "must be from 1.0 to 200.0"),
    (["--laps", "2", "--camera", "usb:0"], "--laps needs --sim"),
    (["--camera", "usb:99"], "cannot open camera 99"),
    (["--camera", "tape:1"], "unknown camera 'tape:1'"),
])
def test_car_drive_refuses_bad_input_at_load(argv, message, capsys):
    try:
        code = main(["drive", "--model", str(FIXTURE), *argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    assert code in (1, 2) and message in err
    assert "Traceback" not in err


def test_car_drive_refuses_a_model_without_its_manifest(tmp_path, capsys):
    model = tmp_path / "pilot.onnx"
    shutil.copy(FIXTURE, model)
    assert main(["drive", "--model", str(model), "--sim"]) == 1
    err = capsys.readouterr().err
    assert "manifest is missing" in err and len(err.strip().splitlines()) == 1


def test_car_replay_against_a_reference(tmp_path, capsys, sim_tub_pristine):
    ref = tmp_path / "ref.json"
    base = ["replay", str(sim_tub_pristine), "--model", str(FIXTURE), "--ref", str(ref),
            "--budget-ms", "10000"]  # what is compared here is the outputs, not the speed
    assert main([*base, "--update-ref"]) == 0
    assert main([*base, "--json"]) == 0
    passed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert passed["comparison"]["passed"] and passed["comparison"]["max_abs_diff"] < 1e-5
    data = json.loads(ref.read_text())
    data["outputs"][3][1] += 0.01  # the model "changed" on record 3
    ref.write_text(json.dumps(data))
    assert main(base) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and f"record {data['outputs'][3][0]}, pilot_steering" in out


def test_car_replay_counts_a_nan_on_one_side_as_a_mismatch(tmp_path, capsys,
                                                           sim_tub_pristine):
    ref = tmp_path / "ref.json"
    base = ["replay", str(sim_tub_pristine), "--model", str(FIXTURE), "--ref", str(ref),
            "--budget-ms", "10000"]  # what is compared here is the outputs, not the speed
    assert main([*base, "--update-ref"]) == 0
    data = json.loads(ref.read_text())
    data["outputs"][0][1] = None  # the reference said NaN there
    ref.write_text(json.dumps(data))
    capsys.readouterr()
    assert main([*base, "--json"]) == 1
    result = json.loads(capsys.readouterr().out)  # valid JSON: no Infinity
    assert result["comparison"]["nan_mismatches"] == 1 and not result["comparison"]["passed"]


def test_car_replay_needs_a_reference(tmp_path, capsys, sim_tub_pristine):
    code = main(["replay", str(sim_tub_pristine), "--model", str(FIXTURE), "--ref",
                 str(tmp_path / "none.json")])
    assert code == 1 and "--update-ref" in capsys.readouterr().err


def test_car_bench_lists_every_engine(capsys):
    assert main(["bench", "--model", str(FIXTURE), "--runs", "20"]) == 0
    out = capsys.readouterr().out
    assert "CPUExecutionProvider" in out
    assert "cuda" in out  # benched, or skipped with the reason


def test_car_drive_on_a_replayed_tub_moves_no_motors(capsys, sim_tub_pristine):
    code = main(["drive", "--model", str(FIXTURE), "--camera", f"replay:{sim_tub_pristine}",
                 "--json", "--hz", "200"])
    captured = capsys.readouterr()
    assert code == 0 and "dry run" in captured.err  # not the MCU on actuator.port
    assert json.loads(captured.out)["stop_reason"] == "end of frames"


def test_car_sim_eval_adds_its_score_to_car_models(capsys, tmp_path):
    where = ["--set", f"paths.models_dir={tmp_path}"]
    assert main(["sim", "eval", "--model", str(FIXTURE), "--track", "oval", "--laps", "1",
                 "--latency-ms", "2", *where]) == 0
    capsys.readouterr()
    assert main(["models", "--json", *where]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["model"] == str(FIXTURE) and row["type"] == "linear"
    assert row["eval"]["track"] == "oval" and row["eval"]["laps_completed"] == 1
    assert row["eval"]["autonomy_pct"] > 90
    assert main(["models", *where]) == 0
    assert "1/1 laps oval" in capsys.readouterr().out
