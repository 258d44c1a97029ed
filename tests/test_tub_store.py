"""Writing and reading tubs: every type, rollover, deletes, sessions, the writer's queue."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from car.errors import TubError
from car.tub import Tub, TubAppender, TubWriter
from car.tub.format import catalog_manifest_name
from car.tub.lock import lock_holder
from tests.conftest import (
    DRIVE_INPUTS,
    DRIVE_TYPES,
    ROOT,
    drive_record,
    frame,
    writer_in_another_process,
)
from tests.waiting import wait_for

ALL_INPUTS = ["cam/image_array", "cam/gray", "depth/array", "user/angle", "count", "user/mode",
              "flag", "imu/array", "path/list", "behavior/vector"]
ALL_TYPES = ["image_array", "image_array", "gray16_array", "float", "int", "str", "boolean",
             "nparray", "list", "vector"]


def slow_down_appends(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make every record take ``seconds`` longer to write, as a slow SD card would."""
    append = TubAppender.append

    def slow(self: TubAppender, *args: object) -> int:
        time.sleep(seconds)
        return append(self, *args)

    monkeypatch.setattr(TubAppender, "append", slow)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_round_trip_of_every_type(tmp_path: Path) -> None:
    depth = (np.arange(120 * 160, dtype=np.uint32).reshape(120, 160) * 3).astype(np.uint16)
    gray = frame(3)[:, :, 0]
    record = {
        "cam/image_array": frame(1), "cam/gray": gray, "depth/array": depth,
        "user/angle": np.float32(-0.25), "count": np.int64(7), "user/mode": "local_angle",
        "flag": np.bool_(True), "imu/array": np.array([[1.5, 2.0], [3.0, -4.25]]),
        "path/list": [1, "a", np.float64(2.5)], "behavior/vector": (0.0, 1.0, 0.0),
    }
    t_capture = time.monotonic()
    with TubWriter(tmp_path / "tub", ALL_INPUTS, ALL_TYPES, {"car": "test"}) as writer:
        assert writer.write(record, capture_time=t_capture)
    tub = Tub(tmp_path / "tub")
    assert tub.inputs == ALL_INPUTS and tub.types == ALL_TYPES
    assert tub.manifest.metadata == {"car": "test"}
    (got,) = list(tub.records())
    assert got["user/angle"] == -0.25 and isinstance(got["user/angle"], float)
    assert got["count"] == 7 and got["user/mode"] == "local_angle" and got["flag"] is True
    assert got["imu/array"] == [[1.5, 2.0], [3.0, -4.25]]
    assert got["path/list"] == [1, "a", 2.5]
    assert got["behavior/vector"] == [0.0, 1.0, 0.0]
    assert got["cam/image_array"] == "0_cam_image_array_.jpg"
    assert got["depth/array"] == "0_depth_array_.png"
    colour = tub.load_image(got, "cam/image_array")
    assert psnr(colour, frame(1)) > 35
    assert colour[..., 2].mean() < colour[..., 0].mean()  # still RGB, not BGR
    assert tub.load_image(got, "cam/gray").shape == (120, 160)
    assert psnr(tub.load_image(got, "cam/gray"), gray) > 30
    loaded_depth = tub.load_image(got, "depth/array")
    assert loaded_depth.dtype == np.uint16 and np.array_equal(loaded_depth, depth)
    assert got["_index"] == 0 and got["_session_id"] == writer.session_id
    assert abs(got["_timestamp_ms"] - time.time() * 1000) < 60_000
    wall_capture_ms = (t_capture + time.time() - time.monotonic()) * 1000
    assert abs(got["_capture_timestamp_ms"] - wall_capture_ms) < 50


def test_catalogs_roll_over_every_1000_records(tmp_path: Path) -> None:
    with TubAppender(tmp_path / "tub", ["user/angle"], ["float"]) as appender:
        for i in range(2345):
            appender.append({"user/angle": i / 2345})
    tub = Tub(tmp_path / "tub")
    assert len(tub) == 2345
    assert tub.manifest.catalog_paths == [f"catalog_{n}.catalog" for n in range(3)]
    assert tub.manifest.current_index == 2345
    for number, (start, count) in enumerate([(0, 1000), (1000, 1000), (2000, 345)]):
        catalog = tmp_path / "tub" / f"catalog_{number}.catalog"
        lines = catalog.read_bytes().splitlines(keepends=True)
        assert len(lines) == count
        assert json.loads(lines[0])["_index"] == start
        meta = json.loads((catalog.with_name(catalog_manifest_name(catalog.name))).read_text())
        assert meta["start_index"] == start
        assert meta["line_lengths"] == [len(line) for line in lines]


def test_delete_and_restore(tmp_path: Path) -> None:
    path = tmp_path / "tub"
    with TubWriter(path, DRIVE_INPUTS, DRIVE_TYPES) as writer:
        for i in range(30):
            writer.write(drive_record(i))
        erased = writer.delete_last(5).result(timeout=10)
    assert erased == [25, 26, 27, 28, 29]
    assert len(Tub(path)) == 25
    with TubAppender(path) as appender:
        assert appender.delete(range(0, 10)) == list(range(10))
        assert appender.restore([0, 1, 27]) == [0, 1, 27]
    tub = Tub(path)
    assert len(tub) == 18 and tub.deleted_count == 12
    assert [r["_index"] for r in tub.records()][:3] == [0, 1, 10]
    assert len(list(tub.records(include_deleted=True))) == 30


def test_sessions_are_new_on_each_open(tmp_path: Path) -> None:
    path = tmp_path / "tub"
    ids = []
    for _ in range(3):
        with TubWriter(path, DRIVE_INPUTS, DRIVE_TYPES) as writer:
            writer.write(drive_record(0))
            ids.append(writer.session_id)
    assert [int(i.rpartition("_")[2]) for i in ids] == [0, 1, 2]
    tub = Tub(path)
    assert [s.id for s in tub.sessions()] == ids
    assert tub.manifest.sessions["all_full_ids"] == ids
    assert tub.manifest.sessions["last_id"] == 2


def test_an_empty_tub_reads_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "tub"
    TubWriter(path, DRIVE_INPUTS, DRIVE_TYPES).close()
    tub = Tub(path)
    assert len(tub) == 0 and tub.info()["records"] == 0 and tub.info()["sessions"] == []
    assert tub.manifest.sessions == {}  # a session with no record is not one
    (path / "catalog_0.catalog").touch()  # an empty catalog, as a crash can leave
    assert len(Tub(path)) == 0
    with TubWriter(path) as writer:
        writer.write(drive_record(1))
    assert [r["_index"] for r in Tub(path).records()] == [0]


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    with TubWriter(tmp_path / "tub", DRIVE_INPUTS, DRIVE_TYPES), \
            pytest.raises(TubError, match="this process already has it open"):
        TubWriter(tmp_path / "tub")


def test_other_inputs_are_refused(tmp_path: Path) -> None:
    TubWriter(tmp_path / "tub", DRIVE_INPUTS, DRIVE_TYPES).close()
    with pytest.raises(TubError, match="record these fields into a new tub"):
        TubWriter(tmp_path / "tub", ["user/angle"], ["float"])


def test_a_folder_of_other_files_is_not_turned_into_a_tub(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TubError, match="not empty and is not a tub"):
        TubWriter(tmp_path, DRIVE_INPUTS, DRIVE_TYPES)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("user/angle", float("nan"), "is nan"),
    ("user/throttle", float("inf"), "is inf"),
    ("user/mode", 3, "not a string"),
    ("cam/image_array", np.zeros((120, 160, 3), np.float32), "must be uint8"),
    ("unknown/key", 1.0, "not an input of this tub"),
])
def test_bad_values_are_refused_in_the_caller(tmp_path: Path, field: str, value: object,
                                              message: str) -> None:
    with TubWriter(tmp_path / "tub", DRIVE_INPUTS, DRIVE_TYPES) as writer:
        record = drive_record(0)
        record[field] = value
        with pytest.raises(TubError, match=message):
            writer.write(record)
        assert writer.stats.submitted == 0


def test_a_full_queue_drops_counts_and_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    slow_down_appends(monkeypatch, 0.02)
    caplog.set_level(logging.WARNING)
    with TubWriter(tmp_path / "tub", DRIVE_INPUTS, DRIVE_TYPES, queue_size=2) as writer:
        accepted = [writer.write(drive_record(i)) for i in range(40)]
    assert writer.stats.dropped == accepted.count(False) > 0
    assert writer.stats.written == accepted.count(True) == len(Tub(tmp_path / "tub"))
    assert "queue full" in caplog.text


def test_a_writer_thread_error_reaches_the_caller(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def append(self: TubAppender, *args: object) -> int:
        raise OSError(28, "No space left on device")

    writer = TubWriter(tmp_path / "tub", DRIVE_INPUTS, DRIVE_TYPES)
    monkeypatch.setattr(TubAppender, "append", append)
    writer.write(drive_record(0))
    errors: list[TubError] = []

    def refused() -> bool:  # a later write raises the thread's error
        try:
            writer.write(drive_record(1))
        except TubError as exc:
            errors.append(exc)
        return bool(errors)

    assert wait_for(refused, 10)
    assert "No space left on device" in str(errors[0])
    with pytest.raises(TubError, match="No space left"):
        writer.close()
    monkeypatch.undo()
    with TubWriter(tmp_path / "tub") as again:  # the tub is still usable
        again.write(drive_record(1))
    assert len(Tub(tmp_path / "tub")) == 1


def test_a_blocking_writer_never_drops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow_down_appends(monkeypatch, 0.005)
    with TubWriter(tmp_path / "tub", DRIVE_INPUTS, DRIVE_TYPES, queue_size=2,
                   drop_when_full=False) as writer:
        assert all(writer.write(drive_record(i)) for i in range(30))
    assert writer.stats.dropped == 0 and len(Tub(tmp_path / "tub")) == 30


def test_a_dead_writer_thread_never_hangs_its_caller(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def append(self: TubAppender, *args: object) -> int:
        time.sleep(0.01)
        raise OSError(28, "No space left on device")

    writer = TubWriter(tmp_path / "tub", DRIVE_INPUTS, DRIVE_TYPES, queue_size=1,
                       drop_when_full=False)
    monkeypatch.setattr(TubAppender, "append", append)
    futures = []

    def caller() -> None:
        try:
            for i in range(5):
                writer.write(drive_record(i))
                futures.append(writer.delete_last(1))
        except TubError:
            pass
        with contextlib.suppress(TubError):
            writer.close()

    thread = threading.Thread(target=caller)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "the caller hung on a dead writer"
    for future in futures:
        with pytest.raises(TubError, match=r"the tub writer stopped: .*No space left"):
            future.result(timeout=5)


def test_a_program_that_forgets_close_loses_nothing(tmp_path: Path) -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from car.tub import TubWriter\n"
        "from tests.conftest import DRIVE_INPUTS, DRIVE_TYPES, drive_record\n"
        f"w = TubWriter({str(tmp_path / 'tub')!r}, DRIVE_INPUTS, DRIVE_TYPES, queue_size=500)\n"
        "for i in range(200): w.write(drive_record(i))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    tub = Tub(tmp_path / "tub")
    assert len(tub) == 200 and tub.manifest.current_index == 200 and tub.damage == []


def test_deleting_indexes_not_written_yet_does_nothing(tmp_path: Path) -> None:
    with TubWriter(tmp_path / "tub", DRIVE_INPUTS, DRIVE_TYPES) as writer:
        writer.write(drive_record(0))
        assert writer.delete([0, 1, 2]).result(timeout=10) == [0]
        writer.write(drive_record(1))
    assert [r["_index"] for r in Tub(tmp_path / "tub").records()] == [1]


def test_a_writer_in_another_process_is_named(tmp_path: Path) -> None:
    path = tmp_path / "tub"
    TubWriter(path, DRIVE_INPUTS, DRIVE_TYPES).close()
    with writer_in_another_process(path) as pid:
        with pytest.raises(TubError, match=rf"another process \(pid {pid}\)"):
            TubWriter(path)
        assert lock_holder(path) == pid
    assert lock_holder(path) is None  # the kernel released it with the process
    TubWriter(path).close()


def test_a_cancelled_command_does_not_stop_the_writer(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    slow_down_appends(monkeypatch, 0.05)
    with TubWriter(tmp_path / "tub", DRIVE_INPUTS, DRIVE_TYPES) as writer:
        writer.write(drive_record(0))
        assert writer.delete_last(1).cancel()  # still queued behind the slow record
        writer.write(drive_record(1))
    assert writer.stats.written == 2 and len(Tub(tmp_path / "tub")) == 2
