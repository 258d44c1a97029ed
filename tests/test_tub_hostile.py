"""Hostile or careless input to tubs: blank ranges, tub files linked out of the tub, NaN
labels. Each test runs the attack and checks that the data is kept and the user is told."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from car.cli import main
from car.config import RecordConfig
from car.errors import TubError
from car.frames import Command, Frame, Mode, UserInput
from car.modes import Decision
from car.recorder import DriveRecorder
from car.tub import Tub, TubAppender, TubWriter
from car.tub.check import check_tub
from tests.conftest import DRIVE_INPUTS, DRIVE_TYPES, drive_record


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    """The single `car: error: ...` line a user error prints (and nothing else)."""
    assert err.startswith("car: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.removeprefix("car: error: ").strip()


def small_tub(path: Path, count: int = 10) -> Path:
    with TubWriter(path, DRIVE_INPUTS, DRIVE_TYPES) as writer:
        for i in range(count):
            writer.write(drive_record(i))
    return path


def digest(path: Path) -> str:
    """The content of a file, or of every file under a folder, as one hash."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    sha = hashlib.sha256()
    for file in files:
        sha.update(str(file.relative_to(path) if path.is_dir() else "").encode())
        sha.update(file.read_bytes())
    return sha.hexdigest()


# ---------------------------------------------------------------------------- blank ranges


@pytest.mark.parametrize(("text", "message"), [
    ("", "range '' is empty; a range is N, START:END"),
    (" ", "range ' ' is empty; a range is N, START:END"),
    ("\t", "is empty; a range is N, START:END"),
    (":", "range ':' has neither START nor END (all: say 0:)"),
    (" : ", "has neither START nor END"),
    ("1,,2", "range '1,,2': expected whole numbers; a range is N, START:END"),
    ("1_0", "expected whole numbers"),
    ("3:3", "need 0 <= START < END"),
    ("-1", "need 0 <= START < END"),
])
@pytest.mark.parametrize("command", ["delete", "restore"])
def test_a_blank_or_malformed_range_changes_nothing(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path, command: str, text: str,
                                                    message: str) -> None:
    tub = small_tub(tmp_path / "tub")
    run(capsys, "tub", "delete", str(tub), "5")  # so that restore would have work to do
    before = (tub / "manifest.json").read_bytes()
    code, out, err = run(capsys, "tub", command, str(tub), "0:2", text)
    assert code == 1 and out == ""
    assert message in one_error_line(err)
    assert (tub / "manifest.json").read_bytes() == before
    assert len(Tub(tub)) == 9 and Tub(tub).deleted_indexes == {5}


def test_open_ended_ranges_still_work(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tub = small_tub(tmp_path / "tub")
    code, out, _ = run(capsys, "tub", "delete", str(tub), " 8: ", ":2")
    assert code == 0 and "deleted 4 record(s) (0..1, 8..9)" in out


@pytest.mark.parametrize(("flags", "message"), [
    (["--start", "-1"], "--start -1: an index is 0 or more"),
    (["--start", "5", "--end", "5"], "--end 5: must be past --start (5)"),
    (["--end", "0"], "--end 0: must be past --start (0)"),
])
def test_movie_spans_are_checked(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                 flags: list[str], message: str) -> None:
    tub = small_tub(tmp_path / "tub", 3)
    out_file = tmp_path / "m.mp4"
    code, _, err = run(capsys, "tub", "movie", str(tub), "--out", str(out_file), *flags)
    assert code == 1 and message in one_error_line(err) and not out_file.exists()


# ---------------------------------------------------------------------------- links out


def link_out(tub: Path, name: str, outside: Path) -> Path:
    """Move the tub's ``name`` to ``outside`` (or create it there) and leave a symlink to it."""
    source = tub / name
    outside.parent.mkdir(parents=True, exist_ok=True)
    if source.exists():
        source.rename(outside)
    elif name == "images":
        outside.mkdir()
    else:
        outside.write_bytes(b"someone else's file\n")
    source.symlink_to(outside)
    return outside


LINKABLE = ["catalog_0.catalog", "catalog_0.catalog_manifest", "manifest.json", "images",
            "images/3_cam_image_array_.jpg", ".car-tub.lock", "repair_log.jsonl",
            "manifest.json.tmp", "catalog_0.catalog.tmp"]


def drive(recorder: DriveRecorder, count: int) -> None:
    image = np.zeros((120, 160, 3), np.uint8)
    for i in range(count):
        recorder.write(Frame(image, float(i), i),
                       Decision(Command(0.1, 0.3), "ok", UserInput(0.1, 0.3), None), Mode.USER)


def test_the_recorder_refuses_a_catalog_linked_out_of_the_tub(tmp_path: Path) -> None:
    tub = tmp_path / "tub"
    first = DriveRecorder(tub, RecordConfig())
    drive(first, 5)
    first.close()
    outside = link_out(tub, "catalog_0.catalog", tmp_path / "elsewhere" / "victim.catalog")
    before = digest(outside), outside.stat().st_mtime_ns
    with pytest.raises(TubError) as error:
        DriveRecorder(tub, RecordConfig())
    assert str(error.value).startswith(
        f"{tub.absolute()}/catalog_0.catalog is a symlink to {outside}: a tub's files must be "
        "inside it; replace the link")
    assert "\n" not in str(error.value)
    assert (digest(outside), outside.stat().st_mtime_ns) == before


@pytest.mark.parametrize("name", LINKABLE)
@pytest.mark.parametrize("opener", [
    lambda tub: TubWriter(tub), lambda tub: TubAppender(tub),
    lambda tub: TubWriter(tub, DRIVE_INPUTS, DRIVE_TYPES)])
def test_every_writer_refuses_any_tub_file_linked_out(tmp_path: Path, name: str,
                                                       opener: Callable[[Path], object]) -> None:
    tub = small_tub(tmp_path / "tub", 5)
    was_there = (tub / name).exists()
    outside = link_out(tub, name, tmp_path / "elsewhere" / name.replace("/", "_"))
    before = digest(outside), sorted(os.listdir(outside)) if outside.is_dir() else None
    with pytest.raises(TubError, match=re.escape(f"{tub / name} is a symlink to {outside}")):
        opener(tub)
    assert (digest(outside), sorted(os.listdir(outside)) if outside.is_dir() else None) == before
    (tub / name).unlink()
    if was_there:
        outside.rename(tub / name)
    with TubWriter(tub) as writer:  # nothing was left locked or half-done
        writer.write(drive_record(5))
    assert [r["_index"] for r in Tub(tub).records()] == list(range(6))


def test_a_new_tub_whose_images_folder_is_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "tub").mkdir()
    (tmp_path / "tub" / "images").symlink_to(outside)
    with pytest.raises(TubError, match="images is a symlink to"):
        TubWriter(tmp_path / "tub", DRIVE_INPUTS, DRIVE_TYPES)
    assert list(outside.iterdir()) == []


def test_images_linked_out_while_recording_are_not_written(tmp_path: Path) -> None:
    tub = small_tub(tmp_path / "tub", 3)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with TubAppender(tub) as appender:
        appender.append({"user/angle": 0.0})  # no image: fine
        (tub / "images").rename(tmp_path / "images.moved")
        (tub / "images").symlink_to(outside)
        with pytest.raises(TubError, match=r"images is a symlink to .*must be inside it"):
            appender.append({"cam/image_array": np.zeros((8, 8, 3), np.uint8)})
    assert list(outside.iterdir()) == []


def test_a_fifo_in_place_of_a_catalog_is_refused(tmp_path: Path) -> None:
    tub = small_tub(tmp_path / "tub", 3)
    os.mkfifo(tub / "catalog_1.catalog")  # opening it for writing would hang forever
    with pytest.raises(TubError, match=r"catalog_1\.catalog is not a regular file"):
        TubWriter(tub)


@pytest.mark.parametrize("name", ["catalog_0.catalog", "manifest.json", "images",
                                  "images/3_cam_image_array_.jpg", ".car-tub.lock"])
def test_check_reports_links_and_repair_and_delete_refuse(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path, name: str) -> None:
    tub = small_tub(tmp_path / "tub", 5)
    outside = link_out(tub, name, tmp_path / "elsewhere" / "victim")
    before = digest(outside)
    code, out, _ = run(capsys, "tub", "check", str(tub))
    assert code == 1 and f"  {name}: is a symlink to {outside} (a tub's files" in out
    assert "[replace the link with a regular copy" in out
    for argv in (["check", str(tub), "--repair"], ["delete", str(tub), "0:2"]):
        code, out, err = run(capsys, "tub", *argv)
        assert code == 1 and out == ""
        assert f"{tub / name} is a symlink to {outside}" in one_error_line(err)
    assert digest(outside) == before
    assert not (tub / "repair_log.jsonl").exists()


def test_reading_a_tub_with_a_linked_image_still_works(tmp_path: Path) -> None:
    tub = small_tub(tmp_path / "tub", 5)
    link_out(tub, "images/3_cam_image_array_.jpg", tmp_path / "elsewhere" / "3.jpg")
    reader = Tub(tub)
    assert len(reader) == 5 and reader.load_image(reader.record(3)).shape == (120, 160, 3)


# ---------------------------------------------------------------------------- NaN labels


def set_value(tub: Path, index: int, key: str, token: str) -> None:
    """Write ``token`` (``NaN``, ``Infinity``, ...) as the value of ``key`` in record
    ``index``, padded so that the line keeps its length (the catalog manifest stays true)."""
    catalog = tub / "catalog_0.catalog"
    lines = catalog.read_bytes().splitlines(keepends=True)
    pattern = re.compile(rb'("' + re.escape(key.encode()) + rb'": )(-?[0-9.eE+-]+)')
    match = pattern.search(lines[index])
    assert match and len(match.group(2)) >= len(token)
    value = token.encode().ljust(len(match.group(2)))
    lines[index] = lines[index][:match.start(2)] + value + lines[index][match.end(2):]
    catalog.write_bytes(b"".join(lines))


def test_check_reports_non_finite_labels(capsys: pytest.CaptureFixture[str],
                                         real_tub: Path) -> None:
    for index in (3, 40, 41, 42, 500, 610, 777):
        set_value(real_tub, index, "user/angle", "NaN")
    set_value(real_tub, 12, "user/throttle", "-Infinity")
    set_value(real_tub, 900, "user/angle", "Infinity")
    run(capsys, "tub", "delete", str(real_tub), "900")  # a deleted record is not reported
    code, out, _ = run(capsys, "tub", "check", str(real_tub), "--quick")
    assert code == 1
    assert ("  field 'user/angle': NaN or infinity in 7 live record(s): 3, 40, 41, 42, 500, ...; "
            "training leaves them out  [to drop them, run: car tub delete "
            f"{real_tub} 3:4 40:43 500:501 610:611 777:778]") in out
    assert "  field 'user/throttle': NaN or infinity in 1 live record(s): 12;" in out
    assert "--repair" not in out  # nothing here that a repair would change
    report = check_tub(real_tub, decode=False)
    assert {p.kind for p in report.problems} == {"non_finite_value"}
    assert {p.index for p in report.problems} == {3, 12}
    code, out, _ = run(capsys, "tub", "delete", str(real_tub), "3:4", "40:43", "500:501",
                       "610:611", "777:778", "12")
    code, out, _ = run(capsys, "tub", "check", str(real_tub), "--quick")
    assert code == 0 and "no problems" in out


def test_check_reports_non_numbers_in_float_fields(real_tub: Path) -> None:
    catalog = real_tub / "catalog_0.catalog"
    lines = catalog.read_text().splitlines(keepends=True)
    record = json.loads(lines[7])
    record["user/throttle"] = "fast"
    lines[7] = json.dumps(record) + "\n"
    catalog.write_text("".join(lines))
    problems = [p for p in check_tub(real_tub, decode=False).problems
                if p.kind == "non_number_value"]
    assert [(p.where, p.index) for p in problems] == [("field 'user/throttle'", 7)]
    assert "not a number (its type is float) in 1 live record(s): 7" in problems[0].what
