"""A disk that fills up during a repair, a delete or a recording: the error names the file
that could not be written, says that nothing was lost, and nothing was.

The disk is made full at the lowest level Python offers: ``os.write`` into any file under
the tub writes what room is left (a short write), then fails with ENOSPC.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from car.cli import main
from car.errors import TubError
from car.tub import Tub, TubWriter
from car.tub.check import check_tub
from car.tub.format import REPAIR_LOG
from tests.conftest import DRIVE_INPUTS, DRIVE_TYPES, drive_record

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(),
                                reason="needs /proc/self/fd to tell which file a write is to")


class FullDisk:
    """``os.write`` to files under ``root`` fails with ENOSPC after ``room`` bytes."""

    def __init__(self, root: Path, room: int):
        self.root = str(root.resolve()) + os.sep
        self.room = room
        self.written = 0
        self.failed: list[str] = []
        self._write = os.write

    def write(self, fd: int, data: Any) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if not target.startswith(self.root):
            return self._write(fd, data)
        left = self.room - self.written
        if left <= 0:
            self.failed.append(target)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = self._write(fd, memoryview(data)[:left])
        self.written += written
        return written


@contextmanager
def full_disk(monkeypatch: pytest.MonkeyPatch, root: Path, room: int = 0) -> Iterator[FullDisk]:
    disk = FullDisk(root, room)
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", disk.write)
        yield disk


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def damaged_tub(path: Path) -> Path:
    """30 records in 3 catalogs, with what crashes leave: a bad line, a torn tail, a stale
    current_index, a missing catalog manifest."""
    with TubWriter(path, DRIVE_INPUTS, DRIVE_TYPES, max_len=10) as writer:
        for i in range(30):
            writer.write(drive_record(i))
    lines = (path / "catalog_1.catalog").read_bytes().splitlines(keepends=True)
    lines[4] = b"garbage\n"
    (path / "catalog_1.catalog").write_bytes(b"".join(lines))
    with open(path / "catalog_2.catalog", "ab") as catalog:
        catalog.write(b'{"_index": 30, "user/an')
    manifest = (path / "manifest.json").read_text().replace('"current_index": 30',
                                                             '"current_index": 25')
    (path / "manifest.json").write_text(manifest)
    (path / "catalog_0.catalog_manifest").unlink()
    return path


def live(tub: Path) -> dict[int, dict[str, Any]]:
    return {r["_index"]: r for r in Tub(tub).records()}


def test_a_repair_that_fills_the_disk_names_the_file_and_loses_nothing(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    pristine = damaged_tub(tmp_path / "pristine")
    before = live(pristine)
    reference = Path(shutil.copytree(pristine, tmp_path / "reference"))
    with full_disk(monkeypatch, reference, room=10**9) as disk:
        assert run(capsys, "tub", "check", str(reference), "--repair")[0] == 0
    total = disk.written
    expected = live(reference), Tub(reference).deleted_indexes
    named = set()
    for room in sorted({0, 1, *range(7, total - 50, max(1, total // 25))}):
        tub = Path(shutil.copytree(pristine, tmp_path / f"room_{room}"))
        with full_disk(monkeypatch, tub, room) as disk:
            code, out, err = run(capsys, "tub", "check", str(tub), "--repair")
        assert code == 1 and out == "" and disk.failed, (room, out, err)
        assert err.count("\n") == 1 and err.startswith(f"car: error: {tub}/"), err
        path = err.removeprefix("car: error: ").partition(": could not be written (No space "
                                                          "left on device); nothing was lost")
        assert path[1], err
        assert err.rstrip().endswith("free some disk space and run again")
        named.add(Path(path[0]).name)
        assert live(tub) == before, f"room {room}: records changed by a failed repair"
        assert not list(tub.glob("*.tmp")), f"room {room}: a temp file was left"
        for line in (tub / REPAIR_LOG).read_text().splitlines() if (tub / REPAIR_LOG).exists() \
                else []:
            json.loads(line)  # no torn line in the log
        code, out, _ = run(capsys, "tub", "check", str(tub), "--repair")  # room again
        assert code == 0 and "after repair: 0 problem(s) left" in out, (room, out)
        assert (live(tub), Tub(tub).deleted_indexes) == expected
    assert {REPAIR_LOG, "catalog_1.catalog", "manifest.json"} <= named, named


def test_a_delete_on_a_full_disk_names_the_manifest(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    tub = damaged_tub(tmp_path / "tub")
    before = (tub / "manifest.json").read_bytes()
    for room in (0, 40):  # nothing written, and half a manifest written
        with full_disk(monkeypatch, tub, room):
            code, out, err = run(capsys, "tub", "delete", str(tub), "0:5")
        assert code == 1 and out == "" and err.count("\n") == 1
        assert err.startswith(f"car: error: {tub / 'manifest.json'}: could not be written (No "
                              "space left on device); nothing was lost: it holds what it held "
                              "before; free some disk space and run again")
        assert (tub / "manifest.json").read_bytes() == before
        assert not (tub / "manifest.json.tmp").exists()
    code, out, _ = run(capsys, "tub", "delete", str(tub), "0:5")
    assert code == 0 and "deleted 5 record(s)" in out


def test_recording_onto_a_full_disk_stops_with_the_file_named(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tub = tmp_path / "tub"
    with TubWriter(tub, DRIVE_INPUTS, DRIVE_TYPES) as writer:
        for i in range(5):
            writer.write(drive_record(i))
    named = set()
    for room, image in [(0, True), (3000, True), *((r, False) for r in range(0, 1500, 50))]:
        count = len(Tub(tub))
        writer = TubWriter(tub)
        with full_disk(monkeypatch, tub, room):
            with pytest.raises(TubError) as error:
                for i in range(100):
                    writer.write(drive_record(i, image))
                    writer.flush(timeout=10)
            with pytest.raises(TubError):
                writer.close()
        message = str(error.value)
        assert f"the tub writer stopped: {tub}/" in message, message
        assert "could not be written (No space left on device); nothing was lost" in message
        named.add(message.partition("stopped: ")[2].partition(":")[0].split("/")[-1])
        reader = Tub(tub)
        assert len(reader) >= count
        for record in reader.records():
            if "cam/image_array" in record:
                reader.load_image(record)  # every record written has its whole image
        assert not {p.kind for p in check_tub(tub).problems} - {"orphan_image", "stale_manifest",
                                                                "stale_catalog_manifest"}
    assert any(n.endswith(".jpg") for n in named) and "catalog_0.catalog" in named, named
    assert named & {"manifest.json", "catalog_0.catalog_manifest"}, named
    with TubWriter(tub) as writer:  # room again: the tub takes records as before
        writer.write(drive_record(0))
    assert check_tub(tub).problems == []
