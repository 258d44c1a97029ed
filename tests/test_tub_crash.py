"""Crash safety: kill -9 at random points, and each kind of damage a crash leaves."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from car.errors import TubError
from car.tub import Tub, TubWriter
from car.tub.check import check_tub
from car.tub.format import REPAIR_LOG, Manifest
from car.tub.repair import check_and_repair
from tests.conftest import DRIVE_INPUTS, DRIVE_TYPES, drive_record

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from crash_demo import image_hashes, kill_rounds


def catalog_stream(tub: Path) -> list[dict]:
    """Every catalog line of the tub, in order, parsed."""
    manifest = Manifest.read(tub)
    return [json.loads(line) for name in manifest.catalog_paths
            for line in (tub / name).read_text().splitlines()]


def make_tub(path: Path, count: int, max_len: int = 1000) -> Path:
    with TubWriter(path, DRIVE_INPUTS, DRIVE_TYPES, max_len=max_len) as writer:
        for i in range(count):
            writer.write(drive_record(i))
    return path


@pytest.mark.slow
def test_kill_9_at_random_points_loses_nothing(tmp_path: Path) -> None:
    tub = tmp_path / "tub"
    seen = kill_rounds(tub, rounds=10, seed=1234, max_len=60, log=False)

    with TubWriter(tub) as writer:  # reopening repairs; appending works
        for i in range(10):
            writer.write(drive_record(i))
    reader = Tub(tub)
    assert reader.duplicates == []
    assert reader.damage == []
    assert_lines_hold_their_index(tub)
    assert reader.manifest.current_index == len(catalog_stream(tub))
    assert len(reader) > 100
    for record in reader.records():
        reader.load_image(record)  # every live record's image decodes
    final = image_hashes(tub)
    for name, digest in seen.items():
        assert final.get(name) == digest, f"image {name} was overwritten or removed"
    assert check_tub(tub).problems == []


def test_a_torn_last_line_is_dropped_and_kept_in_the_log(tmp_path: Path) -> None:
    tub = make_tub(tmp_path / "tub", 5)
    torn = b'{"_index": 5, "_session_id": "26-01-01_0", "user/an'
    with open(tub / "catalog_0.catalog", "ab") as f:
        f.write(torn)
    reader = Tub(tub)
    assert len(reader) == 5 and "torn last line" in reader.damage[0]
    assert {p.kind for p in check_tub(tub).problems} == {"torn_line"}
    with TubWriter(tub) as writer:
        writer.write(drive_record(5))
    assert writer.repairs and "torn last line" in writer.repairs[0]
    log = [json.loads(line) for line in (tub / REPAIR_LOG).read_text().splitlines()]
    assert log[0]["removed_bytes_latin1"].encode("latin-1") == torn
    assert [r["_index"] for r in Tub(tub).records()] == list(range(6))
    assert check_tub(tub).problems == []


def test_an_image_without_its_line_is_never_overwritten(tmp_path: Path) -> None:
    tub = make_tub(tmp_path / "tub", 5)
    orphan = tub / "images" / "5_cam_image_array_.jpg"
    orphan.write_bytes((tub / "images" / "0_cam_image_array_.jpg").read_bytes())
    before = orphan.read_bytes()
    assert {p.kind for p in check_tub(tub).problems} == {"orphan_image"}
    with TubWriter(tub) as writer:
        writer.write(drive_record(6))
    assert orphan.read_bytes() == before
    reader = Tub(tub)
    assert [r["_index"] for r in reader.records()] == [0, 1, 2, 3, 4, 6]
    assert reader.tombstone_count == 1 and 5 in reader.manifest.deleted_indexes
    assert check_tub(tub).problems == []


def test_a_lagging_manifest_does_not_reuse_indexes(tmp_path: Path) -> None:
    """donkeycar's crash: the manifest's current_index is behind the catalog."""
    tub = make_tub(tmp_path / "tub", 20)
    manifest = Manifest.read(tub)
    manifest.current_index = 15
    manifest.write(tub)
    before = image_hashes(tub)
    assert "stale_manifest" in {p.kind for p in check_tub(tub).problems}
    with TubWriter(tub) as writer:
        writer.write(drive_record(99))
    reader = Tub(tub)
    assert reader.indexes() == list(range(21)) and reader.duplicates == []
    after = image_hashes(tub)
    assert all(after[name] == digest for name, digest in before.items())


def test_a_catalog_the_manifest_does_not_list_yet_is_read_and_listed(tmp_path: Path) -> None:
    tub = make_tub(tmp_path / "tub", 15, max_len=10)
    manifest = Manifest.read(tub)
    manifest.catalog_paths = ["catalog_0.catalog"]  # crash during rollover
    manifest.current_index = 10
    manifest.write(tub)
    assert len(Tub(tub)) == 15
    with TubWriter(tub) as writer:
        writer.write(drive_record(15))
    assert Manifest.read(tub).catalog_paths == ["catalog_0.catalog", "catalog_1.catalog"]
    assert Tub(tub).indexes() == list(range(16))


def test_a_zero_filled_tail_after_a_power_cut_is_torn(tmp_path: Path) -> None:
    tub = make_tub(tmp_path / "tub", 3)
    with open(tub / "catalog_0.catalog", "ab") as f:
        f.write(b"\0" * 300)
    assert len(Tub(tub)) == 3
    report, _ = check_and_repair(tub)
    assert [p.kind for p in report.problems] == ["torn_line"]
    assert check_tub(tub).problems == []


def test_donkeycars_torn_manifest_is_a_clear_error_and_repairable(tmp_path: Path) -> None:
    tub = make_tub(tmp_path / "tub", 12)
    lines = (tub / "manifest.json").read_text().splitlines()
    (tub / "manifest.json").write_text("\n".join(lines[:4]) + "\n")  # truncated, line 5 lost
    with pytest.raises(TubError, match=r"has 4 of its 5 lines.*car tub check --repair"):
        Tub(tub)
    report, done = check_and_repair(tub)
    assert "bad_manifest" in report.kinds()
    assert any("rebuilt manifest.json" in line for line in done)
    reader = Tub(tub)
    assert len(reader) == 12 and reader.inputs == DRIVE_INPUTS
    assert check_tub(tub).problems == []


def test_donkeycars_duplicate_indexes_are_repaired(tmp_path: Path) -> None:
    """donkeycar restarted with a stale current_index writes indexes 8, 9 again."""
    tub = make_tub(tmp_path / "tub", 10)
    catalog = tub / "catalog_0.catalog"
    lines = catalog.read_text().splitlines(keepends=True)
    rewritten = [line.replace('"user/mode": "user"', '"user/mode": "again"') for line in lines[8:]]
    catalog.write_text("".join(lines + rewritten))
    reader = Tub(tub)
    assert len(reader) == 10 and len(reader.duplicates) == 2
    assert reader.record(8)["user/mode"] == "again"  # the later line owns the image
    report, _ = check_and_repair(tub)
    assert [p.kind for p in report.problems].count("duplicate_index") == 2
    assert [r["_index"] for r in catalog_stream(tub)] == list(range(10))
    assert Tub(tub).record(9)["user/mode"] == "again"
    assert check_tub(tub).problems == []


def test_a_bad_line_in_the_middle_becomes_a_tombstone(tmp_path: Path) -> None:
    tub = make_tub(tmp_path / "tub", 6)
    catalog = tub / "catalog_0.catalog"
    lines = catalog.read_text().splitlines(keepends=True)
    lines[3] = "{ this is not json }\n"
    catalog.write_text("".join(lines))
    reader = Tub(tub)
    assert reader.indexes() == [0, 1, 2, 4, 5]
    assert any("line 4: not JSON" in d for d in reader.damage)
    report, _ = check_and_repair(tub)
    assert {p.kind for p in report.problems} >= {"bad_line"}
    assert [r["_index"] for r in catalog_stream(tub)] == list(range(6))
    assert 3 in Manifest.read(tub).deleted_indexes
    assert check_tub(tub).problems == []


def assert_lines_hold_their_index(tub: Path) -> None:
    stream = catalog_stream(tub)
    assert [r["_index"] for r in stream] == list(range(len(stream))), "line N must hold index N"
    manifest = Manifest.read(tub)
    assert {r["_index"] for r in stream if "_tombstone" in r} <= manifest.deleted_indexes


@pytest.mark.parametrize("bad_line", [0, 4, 9, 10, 14])
def test_repair_keeps_line_positions_at_catalog_edges(tmp_path: Path, bad_line: int) -> None:
    tub = make_tub(tmp_path / "tub", 15, max_len=10)
    with TubWriter(tub) as writer:
        writer.delete([7, 12]).result(timeout=10)
    catalog = tub / f"catalog_{bad_line // 10}.catalog"
    lines = catalog.read_text().splitlines(keepends=True)
    lines[bad_line % 10] = "garbage\n"
    catalog.write_text("".join(lines))
    report, _ = check_and_repair(tub)
    assert "bad_line" in report.kinds()
    assert_lines_hold_their_index(tub)
    reader = Tub(tub)
    assert reader.indexes() == list(range(15))
    assert [r["_index"] for r in reader.records()] == \
        [i for i in range(15) if i not in (7, 12, bad_line)]
    assert check_tub(tub).problems == []


def test_a_missing_catalog_blocks_writing_and_repairs_to_tombstones(tmp_path: Path) -> None:
    tub = make_tub(tmp_path / "tub", 25, max_len=10)
    (tub / "catalog_1.catalog").rename(tmp_path / "catalog_1.catalog")  # being copied, say
    with pytest.raises(TubError, match=r"catalog_1\.catalog is listed in manifest\.json"):
        TubWriter(tub)
    assert Tub(tub).indexes() == [*range(10), *range(20, 25)]  # the refusal changed nothing
    report, done = check_and_repair(tub)
    assert "missing_catalog" in report.kinds()
    assert "marked tombstones deleted: 10..19" in done
    assert_lines_hold_their_index(tub)
    assert [r["_index"] for r in Tub(tub).records()] == [*range(10), *range(20, 25)]
    assert check_tub(tub).problems == []


def test_tombstones_outside_deleted_indexes_are_fixed(tmp_path: Path) -> None:
    """A kill between writing tombstone lines and the manifest, or a rebuilt manifest."""
    tub = make_tub(tmp_path / "tub", 5)
    orphan = tub / "images" / "5_cam_image_array_.jpg"
    orphan.write_bytes((tub / "images" / "0_cam_image_array_.jpg").read_bytes())
    TubWriter(tub).close()  # index 5 becomes a tombstone
    manifest = Manifest.read(tub)
    manifest.deleted_indexes.discard(5)
    manifest.write(tub)
    assert "tombstone_not_deleted" in check_tub(tub).kinds()
    assert Tub(tub).indexes() == list(range(6)) and len(Tub(tub)) == 5
    with TubWriter(tub) as writer:
        assert 5 in Manifest.read(tub).deleted_indexes
        assert writer.restore([5]).result(timeout=10) == []  # tombstones stay deleted
    lines = (tub / "manifest.json").read_text().splitlines()
    (tub / "manifest.json").write_text("\n".join(lines[:4]) + "\n")
    check_and_repair(tub)
    assert 5 in Manifest.read(tub).deleted_indexes
    assert check_tub(tub).problems == []


def test_a_catalog_path_outside_the_tub_is_refused(tmp_path: Path) -> None:
    tub = make_tub(tmp_path / "tub", 3)
    victim = tmp_path / "victim.catalog"
    victim.write_text("precious\n")
    manifest_lines = (tub / "manifest.json").read_text().splitlines()
    manifest_lines[4] = manifest_lines[4].replace('["catalog_0.catalog"]',
                                                  '["catalog_0.catalog", "../victim.catalog"]')
    (tub / "manifest.json").write_text("\n".join(manifest_lines) + "\n")
    with pytest.raises(TubError, match=r"'\.\./victim\.catalog' is not a catalog name"):
        Tub(tub)
    check_and_repair(tub)
    assert victim.read_text() == "precious\n"
    assert Manifest.read(tub).catalog_paths == ["catalog_0.catalog"]
    assert len(Tub(tub)) == 3


def test_a_stray_image_far_ahead_is_refused_not_tombstoned(tmp_path: Path) -> None:
    tub = make_tub(tmp_path / "tub", 3)
    stray = tub / "images" / "90000_cam_image_array_.jpg"
    stray.write_bytes((tub / "images" / "0_cam_image_array_.jpg").read_bytes())
    assert [p.kind for p in check_tub(tub).problems] == ["stray_image"]
    with pytest.raises(TubError, match="index 90000, far past the last record"):
        TubWriter(tub)
    assert not (tub / REPAIR_LOG).exists()
    stray.unlink()
    with TubWriter(tub) as writer:
        writer.write(drive_record(3))
    assert Tub(tub).indexes() == [0, 1, 2, 3]


def test_an_unknown_type_is_not_rebuilt_away(tmp_path: Path) -> None:
    tub = make_tub(tmp_path / "tub", 3)
    text = (tub / "manifest.json").read_text()
    (tub / "manifest.json").write_text(text.replace('"float"', '"float64"', 1))
    with pytest.raises(TubError, match="unknown type 'float64'"):
        check_tub(tub)
    with pytest.raises(TubError, match="unknown type 'float64'"):
        check_and_repair(tub)
    assert (tub / "manifest.json").read_text() == text.replace('"float"', '"float64"', 1)


def test_only_our_own_temp_files_are_removed(tmp_path: Path) -> None:
    tub = make_tub(tmp_path / "tub", 3)
    (tub / "notes.tmp").write_text("mine")
    (tub / "images" / "draft.tmp").write_text("mine too")
    (tub / "manifest.json.tmp").write_text("half")
    assert [p.where for p in check_tub(tub).problems] == ["manifest.json.tmp"]
    TubWriter(tub).close()
    assert not (tub / "manifest.json.tmp").exists()
    assert (tub / "notes.tmp").read_text() == "mine"
    assert (tub / "images" / "draft.tmp").read_text() == "mine too"


def test_a_torn_line_in_an_earlier_catalog_keeps_positions(tmp_path: Path) -> None:
    """A power cut can tear a donkeycar catalog that is not the last one."""
    tub = make_tub(tmp_path / "tub", 15, max_len=5)
    catalog = tub / "catalog_1.catalog"
    lines = catalog.read_bytes().splitlines(keepends=True)
    catalog.write_bytes(b"".join(lines[:4]) + b"\0" * 40)  # index 9's line is zeros
    assert "torn_line" in check_tub(tub).kinds()
    with TubWriter(tub) as writer:  # the writer leaves an earlier catalog's tail alone
        writer.write(drive_record(15))
    check_and_repair(tub)
    assert_lines_hold_their_index(tub)
    assert [r["_index"] for r in Tub(tub).records()] == [i for i in range(16) if i != 9]
    assert check_tub(tub).problems == []


def test_a_repeated_run_and_a_garbage_line(tmp_path: Path) -> None:
    tub = make_tub(tmp_path / "tub", 10)
    catalog = tub / "catalog_0.catalog"
    lines = catalog.read_text().splitlines(keepends=True)
    again = [line.replace('"user/mode": "user"', '"user/mode": "again"') for line in lines[7:9]]
    catalog.write_text("".join(lines + again) + "garbage\n")
    check_and_repair(tub)
    assert_lines_hold_their_index(tub)
    reader = Tub(tub)
    assert reader.indexes() == list(range(11))  # the garbage line is a tombstone of 10
    assert [r["_index"] for r in reader.records()] == list(range(10))
    assert [reader.record(i)["user/mode"] for i in (6, 7, 8, 9)] == ["user", "again", "again",
                                                                      "user"]
    log = (tub / REPAIR_LOG).read_text()
    assert log.count('"action": "remove_line"') == 3  # two old copies and the garbage
    assert check_tub(tub).problems == []


def test_an_empty_listed_catalog_is_unlisted(tmp_path: Path) -> None:
    """donkeycar creates catalog_0 empty with the tub; donkeycar itself cannot open that."""
    tub = make_tub(tmp_path / "tub", 0)
    manifest = Manifest.read(tub)
    manifest.catalog_paths = ["catalog_0.catalog"]
    manifest.write(tub)
    (tub / "catalog_0.catalog").touch()
    assert [p.kind for p in check_tub(tub).problems] == ["empty_catalog"]
    check_and_repair(tub)
    assert Manifest.read(tub).catalog_paths == [] and check_tub(tub).problems == []
    with TubWriter(tub) as writer:  # and a writer lists a catalog only once it has a line
        writer.write(drive_record(0))
    assert Manifest.read(tub).catalog_paths == ["catalog_0.catalog"]


def test_a_whole_manifest_tmp_finishes_the_update(tmp_path: Path) -> None:
    """Killed between writing manifest.json.tmp and renaming it: the newer one wins."""
    tub = make_tub(tmp_path / "tub", 10)
    newer = Manifest.read(tub)
    newer.deleted_indexes = {7, 8, 9}  # an "erase last 3" that the crash interrupted
    (tub / "manifest.json.tmp").write_text(newer.text())
    assert [p.kind for p in check_tub(tub).problems] == ["temp_file"]
    with TubWriter(tub) as writer:
        assert any("finished a manifest update" in r for r in writer.repairs)
    assert Manifest.read(tub).deleted_indexes == {7, 8, 9}
    (tub / "manifest.json.tmp").write_text(newer.text()[:50])  # a torn one is dropped
    TubWriter(tub).close()
    assert Manifest.read(tub).deleted_indexes == {7, 8, 9}
    assert not (tub / "manifest.json.tmp").exists()


def test_a_torn_line_5_keeps_the_deletions_it_still_shows(tmp_path: Path) -> None:
    tub = make_tub(tmp_path / "tub", 10)
    lines = (tub / "manifest.json").read_text().splitlines()
    lines[4] = lines[4].replace('"deleted_indexes": []', '"deleted_indexes": [1, 6')
    (tub / "manifest.json").write_text("\n".join(lines))
    old = (tub / "manifest.json").read_bytes()
    _, done = check_and_repair(tub)
    assert any("1 of its indexes could still be read" in line for line in done)
    assert Manifest.read(tub).deleted_indexes == {1}  # "6" may have been cut from "63"
    log = [json.loads(line) for line in (tub / REPAIR_LOG).read_text().splitlines()]
    assert log[0]["removed_bytes_latin1"].encode("latin-1") == old
