"""A dataset larger than memory budgets: the frame cache and the training input on a
synthetic 1M-frame set of tubs.

    python benchmarks/bench_big_cache.py [--frames 1000000] [--tubs 20] [--sessions 5]
        [--size 128x96] [--workers 1,2] [--sweep-frames 100000] [--steps 100]
        [--work DIR] [--keep]

1. Writes ``--tubs`` tub v2 folders through the recorder's TubWriter (``--sessions`` sessions
   each), ``--frames`` records in all, cycling through 256 synthetic frames (each record still
   its own JPEG file, as a car writes them).
2. Builds the frame cache (one shard per session) for the first ``--sweep-frames`` records
   with each thread count in ``--workers``: frames/s. Then builds it for all the frames.
3. Trains the linear model for ``--steps`` steps on shuffled batches drawn from every shard:
   from a cold page cache (dropped first, when run as root) and warm; the loader alone too.
   The baseline, in the same run, is the same loop on the sweep's smaller set.

Memory is sampled from /proc/self/status every 20 ms: the peak of RssAnon (the process's own
memory: the record index, batches, the model) and of RssFile (pages of the memory-mapped
cache that the kernel may drop at any time) are reported apart. The budget is on RssAnon.
The frames are smaller than a car's (128x96 by default, 24.6 kB cached each) so that 1M
of them fit this machine's disk; the cache's disk size scales with the frame area, its memory
does not.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from car.tub import TubWriter

INPUTS = ["cam/image_array", "user/angle", "user/throttle", "user/mode"]
TYPES = ["image_array", "float", "float", "str"]


class MemoryWatch:
    """Peaks of RssAnon and RssFile (bytes) of this process, sampled on a thread."""

    def __init__(self) -> None:
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":")[0]
                if key in self.peak:
                    self.peak[key] = max(self.peak[key], int(line.split()[1]) * 1024)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._sample()


def frames_pool(width: int, height: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    pool = []
    for k in range(256):
        base = np.stack([(x * 3 + k) % 256, (y * 4 + 2 * k) % 256,
                         np.full_like(x, (40 + k) % 256)], -1).astype(np.uint8)
        noise = rng.integers(0, 30, base.shape, dtype=np.uint8)
        pool.append(base + noise)
    return pool


def write_tub(job: tuple[Path, int, int, int, int, int]) -> None:
    """One tub as the recorder writes it, minus the per-image fsyncs (a car's durability,
    not worth minutes of a benchmark's setup)."""
    import car.tub.appender

    car.tub.appender.sync = lambda fd, path: None
    car.tub.appender.fsync_dir = lambda path: None
    path, first, count, sessions, width, height = job
    pool = frames_pool(width, height)
    per = -(-count // sessions)
    written = 0
    for _ in range(sessions):
        with TubWriter(path, INPUTS, TYPES, drop_when_full=False, queue_size=2000,
                       checkpoint_interval_s=60.0) as tub:
            for _ in range(min(per, count - written)):
                i = first + written
                tub.write({"cam/image_array": pool[i % 256],
                           "user/angle": float(np.sin(i / 50)), "user/throttle": 0.3,
                           "user/mode": "user"})
                written += 1


def make_tubs(root: Path, frames: int, tubs: int, sessions: int, size: tuple[int, int]
              ) -> list[Path]:
    paths = [root / f"tub{k:03d}" for k in range(tubs)]
    if all((p / ".done").exists() for p in paths):
        return paths
    shutil.rmtree(root, ignore_errors=True)
    per = frames // tubs
    jobs = [(p, k * per, per, sessions, *size) for k, p in enumerate(paths)]
    with multiprocessing.Pool(os.cpu_count()) as pool:
        pool.map(write_tub, jobs)
    for p in paths:
        (p / ".done").touch()
    return paths


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def train_rate(cache, data, preprocess, steps: int, batch: int, model_step: bool) -> float:
    """Samples per second over ``steps`` shuffled batches (with a linear model step)."""
    import torch

    from training.models import build_model
    from training.torch_data import FramesDataset, make_loader

    ends = np.arange(len(data))
    loader = make_loader(FramesDataset(cache, data, ends, 1, preprocess), batch, True, 0,
                         False, 0)
    model = build_model("linear", preprocess.input_shape)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    it = iter(loader)
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        x, y = next(it)
        if model_step:
            loss = torch.nn.functional.mse_loss(model(x)[:, :2], y)
            loss.backward()
            opt.step()
            opt.zero_grad()
        seen += len(x)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--tubs", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--size", default="128x96")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--sweep-frames", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the tubs and the cache")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_big_cache_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run(args, work, size)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, size: tuple[int, int]) -> None:
    from deploy.preprocess import Preprocess
    from training.cache import load_frames
    from training.records import load_records

    start = time.perf_counter()
    tubs = make_tubs(work / "tubs", args.frames, args.tubs, args.sessions, size)
    print(f"wrote {args.frames} records in {len(tubs)} tubs ({args.sessions} sessions each) "
          f"in {time.perf_counter() - start:.0f} s")
    width, height = size
    preprocess = Preprocess(source_width=width, source_height=height, crop_top=height // 3,
                            width=width, height=height - height // 3)
    rows = []
    sweep_tubs = tubs[:max(1, len(tubs) * args.sweep_frames // args.frames)]
    small = load_records(sweep_tubs)
    for workers in (int(w) for w in args.workers.split(",")):
        cache_dir = work / f"cache_sweep_{workers}"
        t = time.perf_counter()
        load_frames(small, preprocess, cache_dir, workers=workers, progress=False)
        rate = len(small) / (time.perf_counter() - t)
        rows.append(("cache build", f"{len(small):,} frames, {workers} thread(s)",
                     f"{rate:,.0f} frames/s", "", ""))
        if workers != int(args.workers.split(",")[-1]):
            shutil.rmtree(cache_dir)
    small_dir = work / f"cache_sweep_{args.workers.split(',')[-1]}"

    with MemoryWatch() as mem_load:
        t = time.perf_counter()
        data = load_records(tubs)
        load_s = time.perf_counter() - t
    rows.append(("record index", f"{len(data):,} records", f"{load_s:.0f} s",
                 mb(mem_load.peak["RssAnon"]), "-"))
    with MemoryWatch() as mem_build:
        t = time.perf_counter()
        cache = load_frames(data, preprocess, work / "cache", workers=2, progress=False)
        build_s = time.perf_counter() - t
    disk = sum(s.path.stat().st_size for s in cache.shards)
    rows.append(("cache build", f"{len(data):,} frames, 2 threads, {len(cache.shards)} shards, "
                 f"{disk / 1e9:.1f} GB", f"{len(data) / build_s:,.0f} frames/s",
                 mb(mem_build.peak["RssAnon"]), mb(mem_build.peak["RssFile"])))

    small_cache = load_frames(small, preprocess, small_dir, progress=False)
    for label, c, d in ((f"{len(small):,}-frame set (baseline)", small_cache, small),
                        (f"{len(data):,}-frame set", cache, data)):
        runs = [("loader only, cold page cache", False, True)] if os.geteuid() == 0 else []
        runs += [("loader only, page cache warm", False, False),
                 ("train step (linear), warm", True, False)]
        for what, model_step, cold in runs:
            if cold:
                drop_page_cache()
            with MemoryWatch() as mem:
                rate = train_rate(c, d, preprocess, args.steps, args.batch, model_step)
            rows.append((what, label, f"{rate:,.0f} samples/s", mb(mem.peak["RssAnon"]),
                         mb(mem.peak["RssFile"])))
    print(f"{args.size} frames cached as {preprocess.width}x{preprocess.height}x3 "
          f"({preprocess.width * preprocess.height * 3 / 1e3:.1f} kB each); batch {args.batch}; "
          f"{args.steps} steps; {os.cpu_count()} CPU cores; peak memory per stage")
    print("| stage | data | speed | peak RssAnon | peak RssFile (cache pages) |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def mb(value: int) -> str:
    return f"{value / 1e6:,.0f} MB"


if __name__ == "__main__":
    main()
