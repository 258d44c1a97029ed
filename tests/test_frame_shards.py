"""The frame cache's shards: one per recording session, built once, split across processes,
and read back as one array by record position."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from car.cli import main
from car.tub import Tub
from deploy.preprocess import Preprocess
from training.cache import load_frames, plan_shards
from training.frame_shards import ShardedFrames
from training.records import load_records


def test_sharded_frames_index_like_one_array() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 255, (n, 4, 6, 3), dtype=np.uint8) for n in (5, 1, 7)]
    whole = np.concatenate(parts)
    frames = ShardedFrames(parts, (4, 6, 3))
    assert frames.shape == whole.shape and len(frames) == 13
    assert np.array_equal(frames[4], whole[4]) and np.array_equal(frames[-1], whole[-1])
    assert np.array_equal(frames[3:9], whole[3:9])
    picks = np.array([[12, 0, 5], [6, 4, 4]])  # across every boundary, repeated, 2-D
    assert np.array_equal(frames[picks], whole[picks])
    assert np.array_equal(np.asarray(frames), whole)
    with pytest.raises(IndexError):
        frames[np.array([13])]


def test_one_shard_per_session_and_a_new_session_builds_only_its_own(
        sim_tub_pristine: Path, tmp_path: Path) -> None:
    tub = Path(shutil.copytree(sim_tub_pristine, tmp_path / "tub"))
    cache_dir, p = tmp_path / "cache", Preprocess()
    first = load_frames(load_records([tub]), p, cache_dir, progress=False)
    assert len(first.shards) == 2 and first.built_shards == 2  # oval, then technical
    assert main(["sim", "record", "--track", "oval", "--laps", "1", "--hz", "10",
                 "--out", str(tub), "--seed", "3"]) == 0
    data = load_records([tub])
    again = load_frames(data, p, cache_dir, progress=False)
    assert len(again.shards) == 3 and again.built_shards == 1
    assert [s.key for s in again.shards[:2]] == [s.key for s in first.shards]
    n = len(first.frames)
    assert np.array_equal(again.frames[n - 3:n + 3][:3], np.asarray(first.frames[n - 3:n]))
    tub = Tub(data.tubs[0].path)
    image = tub.load_image(tub.record(data.records[n + 2].index))
    assert np.array_equal(again.frames[n + 2], p.geometry(image))


def test_processes_split_the_build_and_then_reuse_each_others_shards(
        sim_tub_pristine: Path, tmp_path: Path) -> None:
    data, cache_dir, p = load_records([sim_tub_pristine]), tmp_path / "cache", Preprocess()
    shards = plan_shards(data, p, cache_dir)
    seen = []

    def wait() -> None:  # the barrier: this process's share is built, the other's is not
        seen.append([s.path.exists() for s in shards])

    first = load_frames(data, p, cache_dir, progress=False, share=(0, 2), wait=wait)
    assert seen == [[True, False]]
    assert first.built_shards == 2  # no other process built shard 1: this one did, after
    other = load_frames(data, p, cache_dir, progress=False, share=(1, 2))
    assert other.built_shards == 0 and other.frames.shape == (len(data), 80, 160, 3)
    assert np.array_equal(np.asarray(other.frames), np.asarray(first.frames))
