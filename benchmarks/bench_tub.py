"""Tub recording and reading speed, against baselines measured in the same run.

    python benchmarks/bench_tub.py [--seconds 10] [--flat-out 1500]

Frames are the shared real tub's 160x120 camera frames, so JPEG encoding costs what it
costs on a car. Rows:

- async TubWriter vs the same work done synchronously in the caller's loop (TubAppender),
  flat out (records/s) and paced at 60 Hz (the stall each write() causes the loop), also
  with the loop keeping both cores busy for 8 ms a tick, as inference would;
- donkeycar 5.3.0's own Tub.write_record, when the compatibility test's cached virtualenv
  (.cache/donkeycar-5.3.0) exists;
- reading: catalog records only, and records with every image decoded.

Target: 60 Hz with no drops on 2 cores, and write() p99 under 0.5 ms in the caller.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from car.tub import Tub, TubAppender, TubWriter  # noqa: E402
from car.tub.values import prepare_record  # noqa: E402

ARCHIVE = ROOT / "tests" / "fixtures" / "donkeycar_real_tub_2020.tar.gz"
DONKEY_PYTHON = ROOT / ".cache" / "donkeycar-5.3.0" / "bin" / "python"
INPUTS = ["cam/image_array", "user/angle", "user/throttle", "user/mode"]
TYPES = ["image_array", "float", "float", "str"]

DONKEY_SCRIPT = """
import json, sys, time
import numpy as np
from donkeycar.parts.tub_v2 import Tub
frames = np.load(sys.argv[2])
tub = Tub(sys.argv[1], inputs=INPUTS, types=TYPES)
count = int(sys.argv[3])
calls = []
start = time.perf_counter()
for i in range(count):
    t = time.perf_counter()
    tub.write_record({"cam/image_array": frames[i % len(frames)], "user/angle": 0.1,
                      "user/throttle": 0.3, "user/mode": "user"})
    calls.append(time.perf_counter() - t)
elapsed = time.perf_counter() - start
tub.close()
json.dump({"elapsed": elapsed, "calls": calls}, open(sys.argv[4], "w"))
""".replace("INPUTS", repr(INPUTS)).replace("TYPES", repr(TYPES))


def load_frames(work: Path) -> list[np.ndarray]:
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(work, filter="data")
    tub = Tub(work / "tub")
    return [tub.load_image(r) for r in tub.records()]


def record(frames: list[np.ndarray], i: int) -> dict:
    return {"cam/image_array": frames[i % len(frames)], "user/angle": 0.1, "user/throttle": 0.3,
            "user/mode": "user"}


def stats_ms(calls: list[float]) -> tuple[float, float, float]:
    a = np.asarray(calls) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def ticks(count: int, period_s: float | None) -> Iterator[int]:
    """0..count-1, paced to one per ``period_s`` when given, else as fast as asked."""
    next_tick = time.perf_counter()
    for i in range(count):
        if period_s:
            next_tick += period_s
            time.sleep(max(0.0, next_tick - time.perf_counter()))
        yield i


def busy(seconds: float) -> None:
    """Keep the CPUs busy the way inference would (BLAS on every core) for ``seconds``."""
    a = np.random.default_rng(0).random((256, 256), dtype=np.float32)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = np.tanh(a @ a)


def run_async(path: Path, frames: list[np.ndarray], count: int, period_s: float | None,
              busy_s: float = 0.0) -> dict:
    calls = []
    writer = TubWriter(path, INPUTS, TYPES, drop_when_full=period_s is not None)
    start = time.perf_counter()
    for i in ticks(count, period_s):
        t = time.perf_counter()
        writer.write(record(frames, i), capture_time=time.monotonic())
        calls.append(time.perf_counter() - t)
        busy(busy_s)
    writer.close()  # everything written and fsynced
    elapsed = time.perf_counter() - start
    assert len(Tub(path)) + writer.stats.dropped == count
    return {"elapsed": elapsed, "calls": calls, "dropped": writer.stats.dropped,
            "depth": writer.stats.max_queue_depth}


def run_sync(path: Path, frames: list[np.ndarray], count: int, period_s: float | None,
             busy_s: float = 0.0) -> dict:
    """The baseline: the same encode and write, done in the loop (checkpoint once a second)."""
    calls = []
    appender = TubAppender(path, INPUTS, TYPES)
    types = appender.input_types
    start = last_checkpoint = time.perf_counter()
    for i in ticks(count, period_s):
        t = time.perf_counter()
        appender.append(prepare_record(types, record(frames, i)))
        if t - last_checkpoint >= 1.0:
            appender.checkpoint()
            last_checkpoint = t
        calls.append(time.perf_counter() - t)
        busy(busy_s)
    appender.close()
    return {"elapsed": time.perf_counter() - start, "calls": calls, "dropped": 0, "depth": 0}


def run_donkeycar(path: Path, frames: list[np.ndarray], count: int, work: Path) -> dict | None:
    if not DONKEY_PYTHON.exists():
        return None
    np.save(work / "frames.npy", np.stack(frames[:200]))
    script = work / "donkey_bench.py"
    script.write_text(DONKEY_SCRIPT)
    out = work / "donkey.json"
    subprocess.run([str(DONKEY_PYTHON), str(script), str(path), str(work / "frames.npy"),
                    str(count), str(out)], check=True, capture_output=True,
                   env={**os.environ, "LOGLEVEL": "ERROR"})
    result = json.loads(out.read_text())
    return {**result, "dropped": 0, "depth": 0}


def read_speed(path: Path) -> tuple[float, float, int]:
    start = time.perf_counter()
    tub = Tub(path)
    records = list(tub.records())
    meta_s = time.perf_counter() - start
    start = time.perf_counter()
    for r in records:
        tub.load_image(r)
    image_s = time.perf_counter() - start
    return len(records) / meta_s, len(records) / (meta_s + image_s), len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the 60 Hz runs")
    parser.add_argument("--flat-out", type=int, default=1500, help="records in flat-out runs")
    args = parser.parse_args()
    paced = int(args.seconds * 60)
    work = Path(tempfile.mkdtemp(prefix="bench_tub_"))
    try:
        frames = load_frames(work)
        rows = [
            ("async TubWriter, flat out", run_async(work / "a1", frames, args.flat_out, None)),
            ("sync in loop (baseline), flat out",
             run_sync(work / "s1", frames, args.flat_out, None)),
            ("donkeycar 5.3.0 write_record, flat out",
             run_donkeycar(work / "d1", frames, args.flat_out, work)),
            ("async TubWriter, paced 60 Hz", run_async(work / "a2", frames, paced, 1 / 60)),
            ("sync in loop (baseline), paced 60 Hz",
             run_sync(work / "s2", frames, paced, 1 / 60)),
            ("async TubWriter, 60 Hz, loop busy 8 ms/tick",
             run_async(work / "a3", frames, paced, 1 / 60, busy_s=0.008)),
            ("sync in loop (baseline), 60 Hz, loop busy 8 ms/tick",
             run_sync(work / "s3", frames, paced, 1 / 60, busy_s=0.008)),
        ]
        print(f"Tub write, 160x120 RGB frames from the real tub, {os.cpu_count()} CPU(s); "
              f"flat out = {args.flat_out} records, paced = {paced} records at 60 Hz\n")
        print("| run | records/s | write() p50 ms | write() p99 ms | write() max ms | "
              "dropped | max queue |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        base = rows[1][1]["elapsed"] if rows[1][1] else None
        for name, r in rows:
            if r is None:
                print(f"| {name} | not run: no .cache/donkeycar-5.3.0 (run the compat test) "
                      "| | | | | |")
                continue
            p50, p99, worst = stats_ms(r["calls"])
            rate = len(r["calls"]) / r["elapsed"]
            ratio = f" ({base / r['elapsed']:.2f}x)" if "flat out" in name and base else ""
            print(f"| {name} | {rate:.0f}{ratio} | {p50:.3f} | {p99:.3f} | {worst:.2f} | "
                  f"{r['dropped']} | {r['depth']} |")
        meta_rate, image_rate, count = read_speed(work / "a1")
        print(f"\nTub read, {count} records\n")
        print("| read | records/s |\n|---|---:|")
        print(f"| open + catalog records | {meta_rate:.0f} |")
        print(f"| open + records + decode every JPEG | {image_rate:.0f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
