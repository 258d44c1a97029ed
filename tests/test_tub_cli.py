"""`car tub ...` as a user runs it: output, exit codes, one-line errors, files written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from car.cli import main
from car.tub import Tub, TubWriter
from tests.conftest import DRIVE_INPUTS, DRIVE_TYPES, drive_record, writer_in_another_process

INFO_KEYS = {"path", "records", "deleted", "inputs", "types", "sessions", "first_timestamp_ms",
             "last_timestamp_ms"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def small_tub(path: Path, count: int = 20) -> Path:
    with TubWriter(path, DRIVE_INPUTS, DRIVE_TYPES) as writer:
        for i in range(count):
            writer.write(drive_record(i))
    return path


def test_info_json_of_one_tub_is_an_object(capsys: pytest.CaptureFixture[str],
                                           real_tub_pristine: Path) -> None:
    code, out, _ = run(capsys, "tub", "info", str(real_tub_pristine), "--json")
    info = json.loads(out)
    assert code == 0 and set(info) >= INFO_KEYS
    assert info["records"] == 1000 and info["deleted"] == 0


def test_info_json_of_several_tubs_is_a_list(capsys: pytest.CaptureFixture[str],
                                             real_tub_pristine: Path, tmp_path: Path) -> None:
    small_tub(tmp_path / "a", 3)
    small_tub(tmp_path / "b", 4)
    code, out, _ = run(capsys, "tub", "info", "--json", str(real_tub_pristine), str(tmp_path / "a"))
    assert code == 0 and [i["records"] for i in json.loads(out)] == [1000, 3]
    code, out, _ = run(capsys, "tub", "info", "--json", str(tmp_path / "*"))
    assert [i["records"] for i in json.loads(out)] == [3, 4]


def test_info_text(capsys: pytest.CaptureFixture[str], real_tub_pristine: Path) -> None:
    code, out, _ = run(capsys, "tub", "info", str(real_tub_pristine))
    assert code == 0
    assert "1000 live, 0 deleted" in out and "(no session id): 1000 records" in out


@pytest.mark.parametrize(("damage", "message"), [
    (lambda t: (t / "manifest.json").unlink(),
     "manifest.json: missing; run `car tub check --repair` to rebuild it"),
    (lambda t: (t / "manifest.json").write_text(
        '["cam/image_array",\n' + (t / "manifest.json").read_text().partition("\n")[2]),
     "manifest.json line 1: not JSON"),
    (lambda t: (t / "manifest.json").write_text("[]\n"), "has 1 of its 5 lines"),
    (lambda t: (t / "manifest.json").write_text(
        (t / "manifest.json").read_text().replace('"float"', '"float64"', 1)),
     "unknown type 'float64' of input 'user/angle'"),
])
def test_bad_manifests_are_one_line_errors(capsys: pytest.CaptureFixture[str], real_tub: Path,
                                           damage: object, message: str) -> None:
    damage(real_tub)  # type: ignore[operator]
    code, out, err = run(capsys, "tub", "info", str(real_tub))
    assert code == 1 and out == ""
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_path_that_is_not_a_tub(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "tub", "info", str(tmp_path / "nope"))
    assert code == 1 and "not a folder" in err
    code, _, err = run(capsys, "tub", "check", str(tmp_path), "--repair")
    assert code == 1 and "not a tub (no manifest.json and no catalog)" in err
    code, _, err = run(capsys, "tub", "info", str(tmp_path))
    assert code == 1 and "not a tub (no manifest.json)" in err


def test_a_bad_catalog_line_is_reported_not_fatal(capsys: pytest.CaptureFixture[str],
                                                  real_tub: Path) -> None:
    catalog = real_tub / "catalog_0.catalog"
    lines = catalog.read_text().splitlines(keepends=True)
    lines[41] = "garbage\n"
    catalog.write_text("".join(lines))
    code, out, _ = run(capsys, "tub", "info", str(real_tub), "--json")
    assert code == 0 and json.loads(out)["records"] == 999
    code, out, _ = run(capsys, "tub", "check", str(real_tub))
    assert code == 1 and "catalog_0.catalog line 42: not JSON" in out


def test_check_finds_corrupt_and_missing_jpegs_and_repair_deletes_them(
        capsys: pytest.CaptureFixture[str], real_tub: Path) -> None:
    images = real_tub / "images"
    truncated = images / "10_cam_image_array_.jpg"
    truncated.write_bytes(truncated.read_bytes()[:300])
    (images / "20_cam_image_array_.jpg").write_bytes(b"this is not a jpeg")
    (images / "30_cam_image_array_.jpg").unlink()
    code, out, _ = run(capsys, "tub", "check", str(real_tub))
    assert code == 1
    assert "10_cam_image_array_.jpg: image of record 10: truncated JPEG" in out
    assert "20_cam_image_array_.jpg: image of record 20: not a JPEG" in out
    assert "30_cam_image_array_.jpg: image of record 30 is missing" in out
    assert "--repair" in out
    assert truncated.stat().st_size == 300  # check alone changes nothing
    code, out, _ = run(capsys, "tub", "check", str(real_tub), "--repair")
    assert code == 0 and "after repair: 0 problem(s) left" in out
    assert truncated.stat().st_size == 300  # images are never touched
    assert len(Tub(real_tub)) == 997 and Tub(real_tub).deleted_count == 3
    code, out, _ = run(capsys, "tub", "movie", str(real_tub), "--out",
                       str(real_tub.parent / "m.mp4"), "--start", "5", "--end", "15")
    assert code == 0 and "(9 frames at " in out


def test_a_broken_image_is_a_clear_error_or_a_counted_skip(capsys: pytest.CaptureFixture[str],
                                                           real_tub: Path) -> None:
    (real_tub / "images" / "3_cam_image_array_.jpg").write_bytes(b"")
    out_file = str(real_tub.parent / "m.mp4")
    code, _, err = run(capsys, "tub", "movie", str(real_tub), "--out", out_file, "--end", "6")
    assert code == 1 and "3_cam_image_array_.jpg: image of record 3 is unreadable" in err
    code, out, _ = run(capsys, "tub", "movie", str(real_tub), "--out", out_file, "--end", "6",
                       "--skip-broken")
    assert code == 0 and "(5 frames at " in out and "; skipped 1 record(s)" in out


def test_delete_and_restore_ranges(capsys: pytest.CaptureFixture[str], real_tub: Path) -> None:
    code, out, _ = run(capsys, "tub", "delete", str(real_tub), "100:200", "950:")
    assert code == 0 and "deleted 150 record(s)" in out and "850 live records" in out
    assert f"car tub restore {real_tub} 100:200 950:" in out
    code, out, _ = run(capsys, "tub", "info", str(real_tub), "--json")
    assert json.loads(out)["records"] == 850 and json.loads(out)["deleted"] == 150
    code, out, _ = run(capsys, "tub", "restore", str(real_tub), "100:150")
    assert code == 0 and "restored 50 record(s) (100..149)" in out and "900 live" in out
    code, out, _ = run(capsys, "tub", "delete", str(real_tub), "150:160")
    assert code == 0 and "nothing deleted" in out


@pytest.mark.parametrize(("ranges", "message"), [
    ("5:3", "need 0 <= START < END"), ("a:b", "expected whole numbers; a range is N, START:END"),
    ("2000:3000", "no records in those ranges (indexes here: 0..999)"),
])
def test_bad_ranges(capsys: pytest.CaptureFixture[str], real_tub: Path, ranges: str,
                    message: str) -> None:
    code, _, err = run(capsys, "tub", "delete", str(real_tub), ranges)
    assert code == 1 and message in err


def test_hist_writes_a_png(capsys: pytest.CaptureFixture[str], real_tub_pristine: Path,
                           tmp_path: Path) -> None:
    out_file = tmp_path / "plots" / "hist.png"
    code, out, _ = run(capsys, "tub", "hist", str(real_tub_pristine), "--out", str(out_file))
    assert code == 0 and "1000 records" in out
    image = cv2.imread(str(out_file))
    assert image is not None and image.shape[1] > image.shape[0] > 200
    assert (image < 200).any(axis=2).mean() > 0.02  # bars and text were drawn


def test_hist_of_a_missing_key(capsys: pytest.CaptureFixture[str], real_tub_pristine: Path,
                               tmp_path: Path) -> None:
    code, _, err = run(capsys, "tub", "hist", str(real_tub_pristine), "--out",
                       str(tmp_path / "h.png"), "--steering-key", "pilot/angle")
    assert code == 1 and "has no input 'pilot/angle'" in err


def test_movie_writes_every_frame(capsys: pytest.CaptureFixture[str], real_tub_pristine: Path,
                                  tmp_path: Path) -> None:
    out_file = tmp_path / "movie.mp4"
    code, out, _ = run(capsys, "tub", "movie", str(real_tub_pristine), "--out", str(out_file),
                       "--scale", "2")
    assert code == 0 and "(1000 frames at 20.0 fps, the default: records were written" in out
    video = cv2.VideoCapture(str(out_file))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 1000
    ok, first = video.read()
    assert ok and first.shape[1] == 320 and first.shape[0] > 240
    assert np.abs(first.astype(int) - 128).mean() > 10  # a real picture, not a blank


def test_the_console_script(tmp_path: Path, real_tub_pristine: Path) -> None:
    car = Path(sys.executable).with_name("car")
    result = subprocess.run([str(car), "tub", "info", str(real_tub_pristine), "--json"],
                            capture_output=True, text=True, check=True)
    assert json.loads(result.stdout)["records"] == 1000
    result = subprocess.run([str(car), "tub", "frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_the_undo_hint_names_exactly_what_was_deleted(capsys: pytest.CaptureFixture[str],
                                                      real_tub: Path) -> None:
    run(capsys, "tub", "delete", str(real_tub), "100:110")
    code, out, _ = run(capsys, "tub", "delete", str(real_tub), "100:200", "950:")
    assert code == 0 and "deleted 140 record(s) (110..199, 950..999)" in out
    assert f"undo with: car tub restore {real_tub} 110:200 950:1000" in out
    run(capsys, "tub", "restore", str(real_tub), "110:200", "950:1000")
    assert len(Tub(real_tub)) == 990


@pytest.mark.parametrize(("argv", "message"), [
    (["movie", "{tub}", "--out", "{tmp}/m.mp4", "--scale", "0"], "must be from 1 to"),
    (["movie", "{tub}", "--out", "{tmp}/m.mp4", "--fps", "-3"], "must be from 1 to"),
])
def test_bad_flags_are_usage_errors(capsys: pytest.CaptureFixture[str], real_tub_pristine: Path,
                                    tmp_path: Path, argv: list[str], message: str) -> None:
    argv = [a.format(tub=real_tub_pristine, tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(["tub", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_picture_name_without_extension(capsys: pytest.CaptureFixture[str],
                                          real_tub_pristine: Path, tmp_path: Path) -> None:
    code, _, err = run(capsys, "tub", "hist", str(real_tub_pristine), "--out", str(tmp_path / "h"))
    assert code == 1 and "name the picture .png" in err and err.count("\n") == 1


def test_output_into_a_closed_pipe_is_quiet(real_tub_pristine: Path) -> None:
    car = Path(sys.executable).with_name("car")
    result = subprocess.run(f"'{car}' tub info --json '{real_tub_pristine}' | head -c 10",
                            shell=True, capture_output=True, text=True)
    assert result.stdout == '{\n  "path"' and result.stderr == ""


def test_check_while_recording(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = small_tub(tmp_path / "tub", 3)
    with writer_in_another_process(path) as pid:
        status, out, _ = run(capsys, "tub", "check", str(path))
        assert f"note: pid {pid} is recording into this tub" in out
        status, _, err = run(capsys, "tub", "check", str(path), "--repair")
        assert status == 1 and f"being recorded by pid {pid}" in err
        status, _, err = run(capsys, "tub", "delete", str(path), "0:1")
        assert status == 1 and f"another process (pid {pid}) is writing it" in err
