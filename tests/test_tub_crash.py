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
from car.tub.repair import repair_tub
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
    stream = catalog_stream(tub)
    assert [r["_index"] for r in stream] == list(range(len(stream))), "line N must hold index N"
    assert reader.manifest.current_index == len(stream)
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
    report = check_tub(tub)
    assert [p.kind for p in report.problems] == ["torn_line"]
    repair_tub(report)
    assert check_tub(tub).problems == []


def test_donkeycars_torn_manifest_is_a_clear_error_and_repairable(tmp_path: Path) -> None:
    tub = make_tub(tmp_path / "tub", 12)
    lines = (tub / "manifest.json").read_text().splitlines()
    (tub / "manifest.json").write_text("\n".join(lines[:4]) + "\n")  # truncated, line 5 lost
    with pytest.raises(TubError, match=r"has 4 of its 5 lines.*car tub check --repair"):
        Tub(tub)
    report = check_tub(tub)
    assert "bad_manifest" in report.kinds()
    done = repair_tub(report)
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
    report = check_tub(tub)
    assert [p.kind for p in report.problems].count("duplicate_index") == 2
    repair_tub(report)
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
    report = check_tub(tub)
    assert {p.kind for p in report.problems} >= {"bad_line"}
    repair_tub(report)
    assert [r["_index"] for r in catalog_stream(tub)] == list(range(6))
    assert 3 in Manifest.read(tub).deleted_indexes
    assert check_tub(tub).problems == []
