"""The shared real donkeycar tub (2020 variant) reads as-is, and can be appended to."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from car.tub import Tub, TubWriter
from tests.conftest import drive_record


def test_reads_the_real_tub(real_tub_pristine: Path) -> None:
    tub = Tub(real_tub_pristine)
    assert len(tub) == 1000
    assert tub.manifest.legacy
    assert tub.inputs == ["cam/image_array", "user/angle", "user/throttle", "user/mode",
                          "timestamp"]
    records = list(tub.records())
    assert [r["_index"] for r in records] == list(range(1000))
    first_line = (real_tub_pristine / "catalog_0.catalog").read_text().splitlines()[0]
    assert records[0] == json.loads(first_line)
    for record in (records[0], records[500], records[999]):
        image = tub.load_image(record)
        assert image.shape == (120, 160, 3)
        assert image.dtype == np.uint8
    assert tub.damage == []


def test_info_of_the_real_tub(real_tub_pristine: Path) -> None:
    info = Tub(real_tub_pristine).info()
    assert info["records"] == 1000
    assert info["deleted"] == 0
    assert info["format"] == "tub_v2 (2020 variant)"
    assert info["first_timestamp_ms"] == 1602421393803
    assert info["last_timestamp_ms"] == 1602421397133
    assert info["sessions"] == [{"id": None, "records": 1000,
                                 "first_timestamp_ms": 1602421393803,
                                 "last_timestamp_ms": 1602421397133, "info": None}]


def test_appending_to_the_real_tub_keeps_old_records(real_tub: Path) -> None:
    before = (real_tub / "catalog_0.catalog").read_bytes()
    image_before = (real_tub / "images" / "999_cam_image_array_.jpg").read_bytes()
    with TubWriter(real_tub) as writer:
        for i in range(10):
            assert writer.write(drive_record(i))
    assert writer.session_id.endswith("_0")
    tub = Tub(real_tub)
    assert len(tub) == 1010
    assert (real_tub / "catalog_0.catalog").read_bytes() == before
    assert (real_tub / "images" / "999_cam_image_array_.jpg").read_bytes() == image_before
    new = tub.record(1005)
    assert new["_session_id"] == writer.session_id
    assert tub.load_image(new).shape == (120, 160, 3)
    assert tub.manifest.sessions["last_full_id"] == writer.session_id
