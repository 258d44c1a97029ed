"""Training data without torch: manifest, preprocessing, records, split, windows, cache,
augmentations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from car.tub.marks import set_deleted
from deploy.manifest import (
    VERSION,
    Manifest,
    ManifestError,
    StateTensor,
    load_manifest,
    save_manifest,
)
from deploy.preprocess import Preprocess, PreprocessError
from training.augment import Augmenter, parse_augmentations
from training.cache import load_frames
from training.records import DataError, load_records, windows
from training.split import split_records


def test_manifest_round_trips_and_refuses_other_versions(tmp_path: Path) -> None:
    manifest = Manifest("rnn", Preprocess(crop_top=30),
                        state=(StateTensor("h_in", "h_out", (1, 1, 64)),),
                        training={"records": 12, "tubs": ["a"]}, export={"max_abs_diff": 1e-6})
    model = tmp_path / "pilot.onnx"
    save_manifest(manifest, model)
    assert load_manifest(model) == manifest
    data = json.loads((tmp_path / "pilot.json").read_text())
    assert data["version"] == VERSION and data["input"]["shape"] == [1, 3, 80, 160]
    for bad, message in (({**data, "version": VERSION + 1}, "newer than this software"),
                         ({**data, "format": "other"}, "not a model manifest"),
                         ({**data, "model_type": "transformer"}, "unknown model type"),
                         ({**data, "preprocess": {"crop_top": "x"}}, "malformed")):
        (tmp_path / "pilot.json").write_text(json.dumps(bad))
        with pytest.raises(ManifestError, match=message):
            load_manifest(model)
    with pytest.raises(ManifestError, match="missing"):
        load_manifest(tmp_path / "other.onnx")


def test_preprocess_crops_resizes_and_normalises() -> None:
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[:40] = 255  # the sky, cropped away
    frame[40:, :, 0] = 255  # red road
    p = Preprocess(crop_top=40, width=80, height=40)
    x = p(frame)
    assert x.shape == (1, 3, 40, 80) and x.dtype == np.float32
    assert np.allclose(x[0, 0], 1.0) and np.allclose(x[0, 1:], -1.0)
    bgr = Preprocess(crop_top=40, width=80, height=40, colour="BGR")(frame)
    assert np.allclose(bgr[0, 2], 1.0)
    with pytest.raises(PreprocessError, match="trained on 160x120"):
        p(np.zeros((240, 320, 3), np.uint8))
    with pytest.raises(PreprocessError, match="leave"):
        Preprocess(crop_top=115)


def test_real_tub_records_and_runs(real_tub: Path) -> None:
    data = load_records([real_tub])
    assert len(data) == 1000 and len(data.runs) == 1
    set_deleted(real_tub, [range(100, 110)], True)
    data = load_records([real_tub])
    assert len(data) == 990
    assert [len(r) for r in data.runs] == [100, 890]
    with pytest.raises(DataError, match="no usable records"):
        load_records([real_tub], modes=("local",))


def test_sequence_windows_never_cross_a_session_or_a_deletion(sim_tub: Path) -> None:
    set_deleted(sim_tub, [range(50, 53)], True)
    data = load_records([sim_tub])
    ends = windows(data.runs, 8)
    for end in ends:
        chunk = data.records[end - 7:end + 1]
        assert len({r.session for r in chunk}) == 1
        assert [r.index for r in chunk] == list(range(chunk[0].index, chunk[0].index + 8))
    assert len(ends) == sum(max(0, len(r) - 7) for r in data.runs)
    assert len(windows(data.runs, 10_000)) == 0


def test_session_split_has_no_leakage(sim_tub_pristine: Path, real_tub_pristine: Path) -> None:
    data = load_records([sim_tub_pristine, real_tub_pristine])  # three sessions
    split = split_records(data, 0.3, seed=1)
    assert split.method.startswith("by session")
    train = {data.records[i].session for r in split.train for i in r}
    val = {data.records[i].session for r in split.val for i in r}
    assert train and val and not train & val


def test_block_split_keeps_a_gap_between_train_and_validation(real_tub_pristine: Path) -> None:
    data = load_records([real_tub_pristine])  # one session
    split = split_records(data, 0.2, seed=3, block_len=100, gap=10)
    assert split.method.startswith("by blocks")
    train = np.array([i for r in split.train for i in r])
    val = np.array([i for r in split.val for i in r])
    assert 0.1 < len(val) / 1000 < 0.3 and len(train) > 600
    assert np.abs(train[:, None] - val[None, :]).min() > 10  # no neighbours across the sets
    again = split_records(data, 0.2, seed=3, block_len=100, gap=10)
    assert again == split


def test_frame_cache_builds_once_and_skips_a_corrupt_jpeg(sim_tub: Path, tmp_path: Path
                                                          ) -> None:
    data = load_records([sim_tub])
    victim = data.records[40]
    (sim_tub / "images" / victim.image).write_bytes(b"\xff\xd8 not really a jpeg")
    data = load_records([sim_tub])
    p = Preprocess()
    cache = load_frames(data, p, tmp_path / "cache", progress=False)
    assert cache.built and cache.bad_count == 1 and not cache.ok[40]
    assert cache.frames.shape == (len(data), 80, 160, 3)
    image = data.tubs[0].load_image(data.tubs[0].record(data.records[3].index))
    assert np.array_equal(cache.frames[3], p.geometry(image))
    again = load_frames(data, p, tmp_path / "cache", progress=False)
    assert not again.built and again.bad_count == 1
    assert cache.bad_reasons() == {"with a missing or corrupt image": 1}
    data.drop_unusable(cache.ok, cache.bad_reasons())
    assert data.skipped["with a missing or corrupt image"] == 1
    assert all(40 not in r for r in data.runs)


def test_truncated_jpegs_and_other_frame_sizes_are_told_apart(sim_tub: Path, tmp_path: Path
                                                              ) -> None:
    data = load_records([sim_tub])
    path = sim_tub / "images" / data.records[5].image
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # cut mid-file
    p = Preprocess(source_width=320, source_height=240, crop_top=80, width=160, height=80)
    cache = load_frames(data, p, tmp_path / "cache", progress=False)
    assert cache.bad_reasons() == {"with a missing or corrupt image": 1,
                                   "of another frame size": len(data) - 1}
    cache = load_frames(data, Preprocess(), tmp_path / "cache", progress=False)
    assert cache.bad_reasons() == {"with a missing or corrupt image": 1}


def test_a_damaged_cache_is_rebuilt(sim_tub_pristine: Path, tmp_path: Path) -> None:
    data = load_records([sim_tub_pristine])
    first = load_frames(data, Preprocess(), tmp_path / "cache", progress=False)
    first.path.with_suffix(".json").write_text("{not json")
    again = load_frames(data, Preprocess(), tmp_path / "cache", progress=False)
    assert again.built and np.array_equal(np.asarray(again.frames[:5]),
                                          np.asarray(first.frames[:5]))


def test_block_split_gap_holds_across_deletions_and_repeated_tubs(real_tub: Path) -> None:
    set_deleted(real_tub, [range(35, 36), range(105, 106), range(140, 141)], True)
    for seed in range(10):
        data = load_records([real_tub, real_tub])  # the same tub named twice counts once
        assert len(data) == 997
        split = split_records(data, 0.2, seed=seed, block_len=100, gap=10)
        train = np.array([data.records[i].index for r in split.train for i in r])
        val = np.array([data.records[i].index for r in split.val for i in r])
        assert np.abs(train[:, None] - val[None, :]).min() > 10


def test_flip_negates_steering_and_shift_corrects_toward_the_road() -> None:
    aug = Augmenter(["flip", "shift"], 160, 80)
    frame = np.zeros((80, 160, 3), np.uint8)
    frame[:, 100:110] = 255  # a line right of centre
    rng = np.random.default_rng(0)
    seen_flip = seen_shift = False
    for _ in range(40):
        draw = aug.draw(rng)
        out, steering = aug.apply(frame, np.float32(0.2), draw)
        line = np.flatnonzero(out[40, :, 0] > 128).mean()
        expected = 0.2 + draw.shift_px * aug.steering_per_px
        if draw.flip:
            seen_flip = True
            expected = -expected
            assert line < 80  # the line moved to the left half
        if abs(draw.shift_px) >= 1 and not draw.flip:
            seen_shift = True
            # Content moved right (camera looks left): steer more to the right.
            assert np.sign(line - 104.5) == np.sign(draw.shift_px)
            assert np.sign(steering - 0.2) == np.sign(draw.shift_px)
        assert steering == pytest.approx(np.clip(expected, -1, 1), abs=1e-6)
    assert seen_flip and seen_shift


def test_a_sequence_gets_one_draw_for_all_frames() -> None:
    aug = Augmenter(parse_augmentations(None), 160, 80)
    frames = np.repeat(np.random.default_rng(1).integers(0, 255, (1, 80, 160, 3),
                                                         dtype=np.uint8), 5, axis=0)
    rng = np.random.default_rng(2)
    for _ in range(10):
        out, steering = aug.apply(frames, np.full(5, 0.1, np.float32), aug.draw(rng))
        assert all(np.array_equal(out[0], out[k]) for k in range(5))
        assert len(set(steering.tolist())) == 1
    a = aug.apply(frames, np.zeros(5, np.float32), aug.draw(np.random.default_rng(9)))[0]
    b = aug.apply(frames, np.zeros(5, np.float32), aug.draw(np.random.default_rng(9)))[0]
    assert np.array_equal(a, b)  # seeded


def test_augmentation_names_are_checked() -> None:
    assert parse_augmentations("flip, shift") == ("flip", "shift")
    assert parse_augmentations(None, disabled=True) == ()
    with pytest.raises(DataError, match="unknown augmentation"):
        parse_augmentations("flip,mirror")
