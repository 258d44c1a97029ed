"""Training input pipeline speed, against a naive Dataset measured in the same run.

    python benchmarks/bench_data.py [--records 10000] [--batches 60] [--rounds 3] [--tub DIR]

Rows (samples/s through a DataLoader, batch 64, torch and OpenCV on one thread each):

- baseline: a naive Dataset that opens and decodes each JPEG with PIL in ``__getitem__``,
  then crops, resizes, augments (one sample at a time) and normalises it, which is what a
  first PyTorch port of donkeycar does;
- ours: the memory-mapped frame cache, read, augmented and normalised a batch at a time.

Both are measured without augmentation and with all eight on, in the main process, and
both again with all eight in 1 and 2 DataLoader worker processes. Each figure is the best of
``--rounds`` rounds, the two sides taking turns, so that a busy machine hurts both alike.

Also: the one-off cache build (decode + geometry, 2 threads), and the CPU time of one
training epoch of ``linear`` on all the records. Target (issue 18): ours with all eight
augmentations ≥ 5x the baseline. Without ``--tub`` it records a simulator tub first.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from deploy.preprocess import Preprocess  # noqa: E402
from training.augment import ALL, Augmenter  # noqa: E402
from training.cache import load_frames  # noqa: E402
from training.records import load_records  # noqa: E402
from training.torch_data import FramesDataset, make_loader  # noqa: E402
from training.train import TrainConfig, train  # noqa: E402

BATCH = 64


class NaiveDataset(Dataset):
    def __init__(self, paths: list[Path], labels: np.ndarray, preprocess: Preprocess,
                 augmenter: Augmenter | None = None):
        self.paths, self.labels, self.preprocess = paths, labels, preprocess
        self.augmenter = augmenter
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        frame = self.preprocess.geometry(np.asarray(Image.open(self.paths[i]).convert("RGB")))
        label = self.labels[i].copy()
        if self.augmenter is not None:
            frame, label[0] = self.augmenter.apply(frame, label[0],
                                                   self.augmenter.draw(self.rng))
        return torch.from_numpy(self.preprocess.normalise(frame)), torch.from_numpy(label)


def one_opencv_thread(worker_id: int) -> None:
    cv2.setNumThreads(1)


def samples_per_s(dataset: Dataset, batches: int, workers: int = 0) -> float:
    if isinstance(dataset, FramesDataset):  # ours: the loader asks for whole batches
        loader = make_loader(dataset, BATCH, True, workers, False, 0)
    else:
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(0),
                            worker_init_fn=one_opencv_thread)
    it = iter(loader)
    for _ in range(1 + 2 * workers):  # warm-up: every worker started and busy
        next(it)
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        x, _ = next(it)
        count += len(x)
    return count / (time.perf_counter() - start)


def best_of(rounds: int, naive: Dataset, ours: Dataset, batches: int, workers: int
            ) -> tuple[float, float]:
    """The best samples/s of each side over ``rounds`` rounds, taking turns."""
    rates = [(samples_per_s(naive, batches, workers), samples_per_s(ours, batches, workers))
             for _ in range(rounds)]
    return max(r[0] for r in rates), max(r[1] for r in rates)


def record_tub(path: Path, records: int) -> None:
    laps = max(1, -(-records // 540))  # about 550 records a lap of diyrobocars at 20 Hz
    subprocess.run([sys.executable, "-m", "car.cli", "sim", "record", "--track", "diyrobocars",
                    "--laps", str(laps), "--out", str(path), "--randomize"], check=True,
                   cwd=ROOT, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=lambda t: [int(w) for w in t.split(",")],
                        default=[1, 2], help="worker counts to try besides the main process, "
                        "comma-separated (default 1,2; 0: none)")
    parser.add_argument("--tub", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tub = args.tub or Path(tmp) / "tub"
        if args.tub is None:
            record_tub(tub, args.records)
        data = load_records([tub])
        data.records = data.records[:args.records]
        data.runs = [range(r.start, min(r.stop, len(data.records))) for r in data.runs
                     if r.start < len(data.records)]
        p = Preprocess()
        start = time.perf_counter()
        cache = load_frames(data, p, Path(tmp) / "cache", progress=False)
        build_s = time.perf_counter() - start
        labels = np.array([[r.steering, r.throttle] for r in data.records], np.float32)
        paths = [data.tubs[r.tub].path / "images" / r.image for r in data.records]
        ends = np.arange(len(data))
        aug = Augmenter(ALL, p.width, p.height)
        pairs = [
            ("no augmentation", NaiveDataset(paths, labels, p),
             FramesDataset(cache, data, ends, 1, p)),
            ("all 8 augmentations", NaiveDataset(paths, labels, p, aug),
             FramesDataset(cache, data, ends, 1, p, aug)),
        ]
        print(f"Input pipeline, {len(data)} records of 160x120 (to 80x160), batch {BATCH}, "
              f"torch and OpenCV on 1 thread each, best of {args.rounds} rounds\n")
        print("| augmentation | loader | baseline: PIL decode in __getitem__, samples/s | "
              "ours: frame cache, batched, samples/s | ours vs baseline |")
        print("|---|---|---:|---:|---:|")
        runs = [(0, *pairs[0]), (0, *pairs[1])] + [(w, *pairs[1]) for w in args.workers if w]
        for workers, name, naive, ours in runs:
            base, rate = best_of(args.rounds, naive, ours, args.batches, workers)
            where = f"{workers} worker{'s' if workers > 1 else ''}" if workers else "main process"
            print(f"| {name} | {where} | {base:,.0f} | {rate:,.0f} | {rate / base:.1f}x |")
        print(f"\nCache build (once): {build_s:.1f} s for {len(data)} frames "
              f"({len(data) / build_s:,.0f} frames/s, 2 threads)")

        torch.set_num_threads(2)
        cv2.setNumThreads(2)
        out = Path(tmp) / "linear"
        train(TrainConfig(tubs=[tub], model_type="linear", out=out, epochs=1, batch_size=64,
                          limit=args.records, progress=False, augmentations=ALL,
                          cache_dir=Path(tmp) / "cache"))
        with open(out / "history.csv") as f:
            epoch_time = next(iter(csv.DictReader(f)))["time"]
        print(f"One epoch of linear on the CPU (2 threads), {len(data)} records with all "
              f"augmentations, including validation: {epoch_time} (mm:ss)")


if __name__ == "__main__":
    main()
