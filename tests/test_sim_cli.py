"""`car sim ...` as a user runs it: recordings that read back, views, errors, Ctrl-C."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from car.cli import main
from car.sim.record import SIM_FIELDS
from car.tub import Tub
from car.tub.check import check_tub
from tests.conftest import ROOT
from tests.sim_helpers import circle_points, run


def test_record_a_lap_reads_back_with_every_field(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    out = tmp_path / "tub"
    code, stdout, _ = run(capsys, "sim", "record", "--track", "oval", "--laps", "1",
                          "--out", str(out), "--hz", "10", "--seed", "3")
    assert code == 0, stdout
    tub = Tub(out)
    assert tub.inputs == [k for k, _ in SIM_FIELDS]
    records = list(tub.records())
    assert len(records) == len(tub) > 100
    assert f"{len(records)} records written" in stdout and "1 lap(s)" in stdout
    first, last = records[0], records[-1]
    assert first["user/mode"] == "user" and first["sim/lap"] == 0
    assert last["sim/lap"] == 0 and last["sim/progress"] > 0.9 * 31.0
    assert all(-1 <= r["user/angle"] <= 1 and -1 <= r["user/throttle"] <= 1 for r in records)
    assert any(r["user/angle"] != r["sim/applied_angle"] for r in records)  # DART noise on
    image = tub.load_image(first)
    assert image.shape == (120, 160, 3)
    # Capture times are spaced by simulated time: 10 Hz.
    gaps = [b["_capture_timestamp_ms"] - a["_capture_timestamp_ms"]
            for a, b in itertools.pairwise(records)]
    assert min(gaps) == pytest.approx(100.0, abs=0.01)
    assert max(gaps) == pytest.approx(100.0, abs=0.01)
    code, info, _ = run(capsys, "tub", "info", str(out), "--json")
    meta = json.loads(info)
    assert code == 0 and meta["records"] == len(records)


def test_record_a_users_json_track_with_randomization(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
    track = tmp_path / "mine.json"
    track.write_text(json.dumps({"name": "mine", "width_m": 0.8,
                                 "centerline": circle_points(2.0, 12),
                                 "style": {"floor_rgb": [120, 120, 120]}}))
    out = tmp_path / "tub"
    code, stdout, _ = run(capsys, "sim", "record", "--track", str(track), "--laps", "2",
                          "--out", str(out), "--randomize", "--noise", "0")
    assert code == 0 and "2 lap(s)" in stdout and "0 off-track" in stdout
    assert len(Tub(out)) > 100


def test_view_writes_a_map_beside_frames(capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    out = tmp_path / "view.png"
    code, stdout, _ = run(capsys, "sim", "view", "--track", "random:4", "--out", str(out),
                          "--frames", "4")
    assert code == 0 and "wrote" in stdout
    image = cv2.imread(str(out))
    assert image.shape[0] == 28 + 2 * 120 and image.shape[1] > 4 * 2 * 160


def test_tracks_lists_the_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run(capsys, "sim", "tracks", "--json")
    names = [t["name"] for t in json.loads(stdout)]
    assert code == 0 and {"oval", "technical", "diyrobocars"} <= set(names)


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["sim", "record", "--track", "nope", "--out", "x"], 1, "no track 'nope'"),
    (["sim", "record", "--track", "random:-3", "--out", "x"], 1, "whole number"),
    (["sim", "record", "--laps", "0", "--out", "x"], 2, "--laps: must be from 1"),
    (["sim", "record", "--noise", "2", "--out", "x"], 2, "--noise: must be from 0"),
    (["sim", "record", "--hz", "fast", "--out", "x"], 2, "--hz: not a number"),
    (["sim", "view", "--out", "view.jpg"], 1, "must name a .png"),
    (["sim", "record", "--out", "x", "--set", "sim.wheelbase_m=9"], 1, "sim.wheelbase_m"),
])
def test_bad_flags_get_one_line_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                       code: int, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    if code == 2:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
    else:
        got, _, err = run(capsys, *argv)
        assert got == code
        assert len(err.strip().splitlines()) == 1
    assert message in err
    assert not (tmp_path / "x").exists()  # nothing half-made


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_leaves_a_valid_tub(tmp_path: Path, presses: int) -> None:
    """One Ctrl-C, or an impatient second one 50 ms later during the final flush."""
    out = tmp_path / "tub"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "car.cli", "sim", "record", "--track",
                             "oval", "--laps", "100", "--out", str(out)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob("images/1*_cam_image_array_.jpg")):
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    if presses == 2:
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "records so far are kept in a valid tub" in stderr
    report = check_tub(out)
    assert report.problems == []
    assert len(Tub(out)) > 10
    assert "records written" in stdout


def test_randomize_changes_the_look_every_lap(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    out = tmp_path / "tub"
    code, _, _ = run(capsys, "sim", "record", "--track", "oval", "--laps", "3", "--out",
                     str(out), "--randomize", "--noise", "0", "--hz", "10")
    assert code == 0
    tub = Tub(out)
    records = list(tub.records())
    means = []
    for lap in range(3):  # the frame nearest the same place on the track in each lap
        lap_records = [r for r in records if r["sim/lap"] == lap]
        nearest = min(lap_records, key=lambda r: abs(r["sim/progress"] - 10.0))
        means.append(tub.load_image(nearest).reshape(-1, 3).mean(axis=0))
    assert all(abs(means[a] - means[b]).max() > 3 for a, b in ((0, 1), (1, 2), (0, 2)))


def test_appending_keeps_each_sessions_settings_and_refuses_other_frame_sizes(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "tub"
    for track, seed in (("oval", "1"), ("technical", "2")):
        code, _, _ = run(capsys, "sim", "record", "--track", track, "--laps", "1", "--out",
                         str(out), "--seed", seed, "--hz", "5")
        assert code == 0
    sessions = Tub(out).sessions()
    assert [s.info["sim"]["track"] for s in sessions] == ["oval", "technical"]
    assert [s.info["sim"]["seed"] for s in sessions] == [1, 2]
    code, info, _ = run(capsys, "tub", "info", str(out))
    assert "sim: track technical" in info
    code, _, err = run(capsys, "sim", "record", "--out", str(out), "--laps", "1",
                       "--set", "camera.width=320", "--set", "camera.height=240")
    assert code == 1 and "holds 160x120 frames" in err
    assert len(Tub(out).sessions()) == 2
