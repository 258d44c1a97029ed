"""The frame cache's size cap and `car cache info | prune`: least recently used first, the
entry in use kept, leftovers of stopped builds removed, a running build's files left alone."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from car.cli import main
from deploy.preprocess import Preprocess
from training.cache import load_frames
from training.cache_admin import list_cache, prune
from training.records import load_records


def build(tub: Path, cache: Path, width: int, age_s: float = 0.0) -> str:
    """One cache entry (frames of ``width``), made to look last used ``age_s`` ago."""
    data = load_records([tub])
    entry = load_frames(data, Preprocess(width=width, height=40), cache, progress=False)
    (shard,) = entry.shards  # one session: one shard
    index = shard.path.with_suffix(".json")
    os.utime(index, (time.time() - age_s, time.time() - age_s))
    return shard.key


@pytest.fixture
def cache(real_tub_pristine: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """Three entries: used 3 days, 2 days and 1 hour ago."""
    path = tmp_path / "frames"
    keys = [build(real_tub_pristine, path, w, age) for w, age in
            ((64, 3 * 86400), (96, 2 * 86400), (128, 3600))]
    return path, keys


def test_the_listing_names_tubs_and_orders_by_last_use(
        cache: tuple[Path, list[str]], real_tub_pristine: Path) -> None:
    path, keys = cache
    listing = list_cache(path)
    assert [e.key for e in listing.entries] == keys[::-1]
    assert listing.entries[0].tubs == [str(real_tub_pristine.resolve())]
    assert listing.entries[0].shape == (listing.entries[0].frames, 40, 128, 3)


def test_a_cap_removes_the_least_recently_used_and_keeps_the_one_in_use(
        cache: tuple[Path, list[str]], real_tub_pristine: Path) -> None:
    path, keys = cache
    sizes = {e.key: e.size_bytes for e in list_cache(path).entries}
    # Reusing the oldest makes it the newest: the cap then takes the 2-day-old one first.
    data = load_records([real_tub_pristine])
    again = load_frames(data, Preprocess(width=64, height=40), path, progress=False,
                        max_bytes=sizes[keys[0]] + sizes[keys[2]])
    assert not again.built
    assert {e.key for e in list_cache(path).entries} == {keys[0], keys[2]}
    # A cap smaller than the entry in use: the others go, the one in use stays.
    load_frames(data, Preprocess(width=64, height=40), path, progress=False, max_bytes=1)
    assert [e.key for e in list_cache(path).entries] == [keys[0]]


def test_leftovers_go_and_a_running_build_stays(cache: tuple[Path, list[str]]) -> None:
    path, keys = cache
    (path / "0123456789abcdef01234567.u8").write_bytes(b"\0" * 100)  # no index: half an entry
    (path / f".{keys[0]}.999999999.tmp").write_bytes(b"\0" * 10)  # its process is gone
    building = path / f".{keys[1]}.{os.getpid()}.tmp"  # this process runs
    building.write_bytes(b"\0" * 10)
    listing = list_cache(path)
    assert len(listing.leftovers) == 2 and listing.busy == [building]
    result = prune(path)
    assert result.removed == [] and len(result.leftovers) == 2
    assert building.exists() and len(list_cache(path).entries) == 3
    assert list_cache(path).leftovers == []


def test_car_cache_info_and_prune(cache: tuple[Path, list[str]],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    path, keys = cache
    where = ["--set", f"paths.frame_cache={path}"]
    assert main(["cache", "info", *where]) == 0
    out = capsys.readouterr().out
    assert f"frame cache  {path}" in out and "3 entries, cap 20.00 GB" in out
    assert out.index(keys[2]) < out.index(keys[1]) < out.index(keys[0])
    assert re.search(r"used +1 h ago +\d+ frames 128x40 +tub\n", out)
    assert re.search(r"used +3 d ago +\d+ frames 64x40", out)
    assert main(["cache", "info", "--json", *where]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [e["key"] for e in info["entries"]] == keys[::-1] and info["cap_bytes"] == 20e9

    assert main(["cache", "prune", "--older-than", "1", "--dry-run", *where]) == 0
    out = capsys.readouterr().out
    assert f"would remove {keys[0]}" in out and "would remove 2 entries" in out
    assert len(list_cache(path).entries) == 3  # a dry run removes nothing
    assert main(["cache", "prune", "--older-than", "1", *where]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert [e.key for e in list_cache(path).entries] == [keys[2]]
    assert main(["cache", "prune", "--all", *where]) == 0
    assert list_cache(path).entries == []


def test_the_configured_cap_is_what_prune_trims_to(cache: tuple[Path, list[str]],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path, keys = cache
    newest = list_cache(path).entries[0].size_bytes
    cap_gb = (newest + 1) / 1e9
    assert main(["cache", "prune", "--set", f"paths.frame_cache={path}", "--set",
                 f"paths.frame_cache_max_gb={cap_gb}"]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert [e.key for e in list_cache(path).entries] == [keys[2]]


def test_an_empty_or_missing_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--set", f"paths.frame_cache={tmp_path / 'none'}"]
    assert main(["cache", "info", *where]) == 0
    assert "0.0 MB in 0 entries" in capsys.readouterr().out
    assert main(["cache", "prune", "--all", *where]) == 0
    assert "removed 0 entries" in capsys.readouterr().out
