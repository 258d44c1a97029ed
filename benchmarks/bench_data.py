"""Training input pipeline speed, against a naive Dataset measured in the same run.

    python benchmarks/bench_data.py [--records 10000] [--batches 60] [--tub DIR]

Rows (samples/s through a DataLoader, batch 64, main process, one core's worth of work):

- baseline: a naive Dataset that opens and decodes each JPEG with PIL in ``__getitem__``,
  then crops, resizes and normalises it (what a first PyTorch port of donkeycar does);
- ours: the memory-mapped frame cache, no augmentation;
- ours with every augmentation on.

Also: the one-off cache build (decode + geometry, 2 threads), and the CPU time of one
training epoch of ``linear`` on all the records. Target (issue 4): ours ≥ 5x the baseline.
Without ``--tub`` it records a simulator tub of ``--records`` frames first.
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

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from deploy.preprocess import Preprocess  # noqa: E402
from training.augment import ALL, Augmenter  # noqa: E402
from training.cache import load_frames  # noqa: E402
from training.records import load_records  # noqa: E402
from training.torch_data import FramesDataset  # noqa: E402
from training.train import TrainConfig, train  # noqa: E402

BATCH = 64


class NaiveDataset(Dataset):
    def __init__(self, paths: list[Path], labels: np.ndarray, preprocess: Preprocess):
        self.paths, self.labels, self.preprocess = paths, labels, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        frame = np.asarray(Image.open(self.paths[i]).convert("RGB"))
        x = self.preprocess.normalise(self.preprocess.geometry(frame))
        return torch.from_numpy(x), torch.from_numpy(self.labels[i])


def samples_per_s(dataset: Dataset, batches: int) -> float:
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=0,
                        generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    next(it)  # warm-up
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        x, _ = next(it)
        count += len(x)
    return count / (time.perf_counter() - start)


def record_tub(path: Path, records: int) -> None:
    laps = max(1, round(records / 1100))  # about 1,100 records a lap of diyrobocars at 20 Hz
    subprocess.run([sys.executable, "-m", "car.cli", "sim", "record", "--track", "diyrobocars",
                    "--laps", str(laps), "--out", str(path), "--randomize"], check=True,
                   cwd=ROOT, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--tub", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
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
        rows = [
            ("baseline: PIL decode in __getitem__", NaiveDataset(paths, labels, p)),
            ("frame cache (memmap), no augmentation", FramesDataset(cache, data, ends, 1, p)),
            ("frame cache, all 8 augmentations", FramesDataset(
                cache, data, ends, 1, p, Augmenter(ALL, p.width, p.height))),
        ]
        results = [(name, samples_per_s(ds, args.batches)) for name, ds in rows]
        base = results[0][1]
        print(f"Input pipeline, {len(data)} records of 160x120 (to 80x160), batch {BATCH}, "
              "main process, torch on 1 thread\n")
        print("| run | samples/s | vs baseline |")
        print("|---|---:|---:|")
        for name, rate in results:
            print(f"| {name} | {rate:,.0f} | {rate / base:.1f}x |")
        print(f"\nCache build (once): {build_s:.1f} s for {len(data)} frames "
              f"({len(data) / build_s:,.0f} frames/s, 2 threads)")

        torch.set_num_threads(2)
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
