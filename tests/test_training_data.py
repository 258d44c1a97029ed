"""Training data: manifest, preprocessing, records, split, windows, cache, augmentations
(without torch, but for the one test of the Dataset's seeding)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from car.tub import Tub
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


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """64 smooth 80x160 frames with some detail, each a little different."""
    rng = np.random.default_rng(7)
    coarse = rng.integers(0, 255, (64, 10, 20, 3), dtype=np.uint8)
    return np.stack([cv2.resize(c, (160, 80), interpolation=cv2.INTER_CUBIC) for c in coarse])


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
    tub = Tub(data.tubs[0].path)
    image = tub.load_image(tub.record(data.records[3].index))
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
    first.shards[0].path.with_suffix(".json").write_text("{not json")
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
        flip, shift = bool(draw.flip[0]), int(draw.shift_px[0])
        out, steering = aug.apply(frame, np.float32(0.2), draw)
        line = np.flatnonzero(out[40, :, 0] > 128).mean()
        expected = 0.2 + shift * aug.steering_per_px
        if flip:
            seen_flip = True
            expected = -expected
            assert line < 80  # the line moved to the left half
        if abs(shift) >= 1 and not flip:
            seen_shift = True
            # Content moved right (camera looks left): steer more to the right.
            assert np.sign(line - 104.5) == np.sign(shift)
            assert np.sign(steering - 0.2) == np.sign(shift)
        assert steering == pytest.approx(np.clip(expected, -1, 1), abs=1e-6)
    assert seen_flip and seen_shift


def test_flip_and_shift_move_pixels_exactly(frames: np.ndarray) -> None:
    aug = Augmenter(["flip", "shift"], 160, 80)
    draws = aug.draw(np.random.default_rng(3), 64)
    out, _ = aug.apply_batch(frames[:64], np.zeros(64, np.float32), draws)
    for b in range(64):
        k = int(draws.shift_px[b])
        columns = np.clip(np.arange(160) - k, 0, 159)  # the edge column fills the gap
        expected = frames[b][:, columns]
        if draws.flip[b]:
            expected = expected[:, ::-1]
        assert np.array_equal(out[b], expected)


def test_photometric_augmentations_follow_their_formulas(frames: np.ndarray) -> None:
    aug = Augmenter(["brightness", "contrast", "colour", "shadow"], 160, 80)
    draws = aug.draw(np.random.default_rng(4), 32)
    out, _ = aug.apply_batch(frames[:32], np.zeros(32, np.float32), draws)
    for b in range(32):
        x = frames[b].astype(np.float64)
        gain = draws.gains[b] * draws.brightness[b]
        lit = np.clip(((x - x.mean()) * draws.contrast[b] + x.mean()) * gain, 0, 255)
        expected = np.round(lit)
        if draws.shadow_factor[b] != 1.0:
            mask = np.zeros((80, 160), np.uint8)
            cv2.fillConvexPoly(mask, draws.shadow[b], 1)
            shaded = np.round(expected * draws.shadow_factor[b])
            expected = np.where(mask[..., None] == 1, shaded, expected)
        assert np.abs(out[b] - expected).max() <= 1  # rounding


def test_a_batch_is_its_samples_augmented_one_by_one(frames: np.ndarray) -> None:
    aug = Augmenter(parse_augmentations(None), 160, 80)
    batch = frames[:48].reshape(16, 3, 80, 160, 3)  # 16 sequences of 3 frames
    steering = np.random.default_rng(5).uniform(-1, 1, (16, 3)).astype(np.float32)
    draws = aug.draw(np.random.default_rng(6), 16)
    before = batch.copy()
    out, labels = aug.apply_batch(batch, steering, draws)
    assert np.array_equal(batch, before)  # the input is left alone
    for b in range(16):
        one, one_labels = aug.apply(batch[b], steering[b], draws[b])
        assert np.array_equal(out[b], one) and np.array_equal(labels[b], one_labels)
    assert (labels[draws.flip] * steering[draws.flip] <= 0).all()
    assert not np.array_equal(out, batch)


def test_a_sequence_gets_one_draw_for_all_frames() -> None:
    aug = Augmenter(parse_augmentations(None), 160, 80)
    frames = np.repeat(np.random.default_rng(1).integers(0, 255, (1, 1, 80, 160, 3),
                                                         dtype=np.uint8), 5, axis=1)
    frames = np.repeat(frames, 40, axis=0)  # 40 samples of 5 equal frames
    out, steering = aug.apply_batch(frames, np.full((40, 5), 0.1, np.float32),
                                    aug.draw(np.random.default_rng(2), 40))
    # Every effect, blur and shadow included, is the same on each frame, and never
    # crosses from one frame into the next.
    assert all(np.array_equal(out[:, 0], out[:, k]) for k in range(5))
    assert (steering == steering[:, :1]).all()
    assert len({o.tobytes() for o in out[:, 0]}) > 30  # the samples did differ


def test_augmentation_is_seeded() -> None:
    aug = Augmenter(parse_augmentations(None), 160, 80)
    frames = np.random.default_rng(1).integers(0, 255, (8, 80, 160, 3), dtype=np.uint8)

    def run(seed: int) -> tuple[np.ndarray, np.ndarray]:
        return aug.apply_batch(frames, np.zeros(8, np.float32),
                               aug.draw(np.random.default_rng(seed), 8))

    a, b, c = run(9), run(9), run(10)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # The generator advances alike whatever is enabled: switching one augmentation off
    # leaves the others' draws as they were.
    some = Augmenter(["flip", "shift"], 160, 80).draw(np.random.default_rng(9), 8)
    every = aug.draw(np.random.default_rng(9), 8)
    assert np.array_equal(some.flip, every.flip)
    assert np.array_equal(some.shift_px, every.shift_px)


def test_the_dataset_draws_from_torchs_seed(sim_tub: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from training.torch_data import FramesDataset

    data = load_records([sim_tub])
    p = Preprocess()
    cache = load_frames(data, p, tmp_path / "cache", progress=False)

    def batch(seed: int) -> np.ndarray:
        torch.manual_seed(seed)
        dataset = FramesDataset(cache, data, np.arange(3, 40), 4, p,
                                Augmenter(parse_augmentations(None), p.width, p.height))
        x, y = dataset[list(range(16))]
        assert x.shape == (16, 4, 3, 80, 160) and y.shape == (16, 2)
        return x.numpy()

    assert np.array_equal(batch(1), batch(1)) and not np.array_equal(batch(1), batch(2))


def test_augmentation_names_are_checked() -> None:
    assert parse_augmentations("flip, shift") == ("flip", "shift")
    assert parse_augmentations(None, disabled=True) == ()
    with pytest.raises(DataError, match="unknown augmentation"):
        parse_augmentations("flip,mirror")
