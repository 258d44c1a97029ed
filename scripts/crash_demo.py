"""Crash-safety demo: record into a tub, kill -9 the recorder at random moments, reopen.

    python scripts/crash_demo.py TUB [--rounds 5] [--seed 0] [--max-len 60]

Each round starts a recorder process (this script with ``--child``) that writes 160x120
frames as fast as it can, and kills it with SIGKILL at a random moment. Between rounds it
checks that every image that ever existed is byte-for-byte unchanged. At the end it reopens
the tub for writing (which repairs crash damage) and checks there is no duplicate index.
The tests run the same recorder (tests/test_tub_crash.py).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from car.tub import Tub, TubWriter
from car.tub.check import structure_problems

INPUTS = ["cam/image_array", "user/angle", "user/throttle", "user/mode"]
TYPES = ["image_array", "float", "float", "str"]


def synthetic_record(i: int) -> dict:
    y, x = np.mgrid[0:120, 0:160]
    image = np.stack([x + i % 90, y + 60, np.full_like(x, 40 + i % 60)], axis=-1)
    return {"cam/image_array": image.astype(np.uint8), "user/angle": ((i % 21) - 10) / 10,
            "user/throttle": 0.3, "user/mode": "user"}


def child(path: str, max_len: int) -> None:
    """Record flat out until killed; every 40 records, erase the last 2 (soft delete)."""
    writer = TubWriter(path, INPUTS, TYPES, queue_size=1000, checkpoint_interval_s=0.03,
                       max_len=max_len)
    print("ready", flush=True)
    i = 0
    while True:
        if not writer.write(synthetic_record(i), capture_time=time.monotonic()):
            time.sleep(0.001)
        i += 1
        if i % 40 == 0:
            writer.delete_last(2)
        if i % 5 == 0:
            time.sleep(0.0005)  # let the writer thread run, so kills land anywhere in it


def image_hashes(tub: Path) -> dict[str, str]:
    folder = tub / "images"
    if not folder.is_dir():
        return {}
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def kill_rounds(tub: Path, rounds: int, seed: int, max_len: int, log: bool = True,
                after_kill: Callable[[Path], None] | None = None) -> dict[str, str]:
    """Run the recorder ``rounds`` times, SIGKILL each; returns every image's hash seen.

    Raises AssertionError if an image that existed before a kill was changed or removed.
    ``after_kill(tub)`` runs after each kill, before the tub is opened again.
    """
    rng = random.Random(seed)
    seen: dict[str, str] = {}
    for number in range(1, rounds + 1):
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(tub), str(max_len)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stderr is not None
        if proc.stdout.readline().strip() != "ready":
            raise AssertionError(f"the recorder did not start:\n{proc.stderr.read()}")
        delay = rng.uniform(0.05, 0.5)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        current = image_hashes(tub)
        changed = [name for name, digest in seen.items() if current.get(name) != digest]
        assert not changed, f"images overwritten or removed: {changed[:5]}"
        seen.update(current)
        if after_kill is not None:
            after_kill(tub)
        reader = Tub(tub)  # a crashed tub always opens for reading
        if log:
            kinds = sorted({p.kind for p in structure_problems(reader.scan)}) or ["none"]
            print(f"round {number}: killed after {delay:.2f} s; {len(reader)} live records "
                  f"readable; crash damage seen: {', '.join(kinds)}")
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tub", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-len", type=int, default=60,
                        help="records per catalog (small, so kills also hit rollovers)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # repairs are printed below
    seen = kill_rounds(args.tub, args.rounds, args.seed, args.max_len)
    with TubWriter(args.tub) as writer:  # reopening for writing repairs crash damage
        for line in writer.repairs:
            print(f"repaired on reopen: {line}")
        writer.write(synthetic_record(0))
    reader = Tub(args.tub)
    unchanged = sum(image_hashes(args.tub).get(k) == v for k, v in seen.items())
    print(f"after {args.rounds} kills: {len(reader)} live records, "
          f"{len(reader.duplicates)} duplicate indexes, {unchanged}/{len(seen)} images "
          "unchanged, appending works")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
