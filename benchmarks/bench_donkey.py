"""The donkey protocol's cost over loopback, against the embedded simulator driven directly,
measured in the same run.

    python benchmarks/bench_donkey.py [--steps 600]

Rows:

- lock-step steps/s: our client sends ``control`` and waits for the telemetry that
  `car sim serve` (its own process) answers with: render, JPEG, base64, JSON, TCP, and the
  client's parse and decode. The baseline is ``Simulator.step`` + ``render`` in one
  process, the same simulation with no protocol;
- the protocol's overhead per step, and its share;
- real time: telemetry rate at the client, and each frame's age when the loop takes it
  (arrival to read, with a 20 Hz loop not phase-locked to the simulator).

No target in the issue; the Unity simulator sends 20 frames/s.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from car.config import Config  # noqa: E402
from car.sim.donkey import messages as m  # noqa: E402
from car.sim.donkey.client import DonkeyClient  # noqa: E402
from car.sim.tracks import load_track  # noqa: E402
from car.sim.world import Simulator  # noqa: E402

TRACK = "diyrobocars"


def direct(steps: int) -> float:
    config = Config()
    sim = Simulator(load_track(TRACK, 0.39), config.sim)
    sim.render()
    start = time.perf_counter()
    for i in range(steps):
        sim.step(0.1 * np.sin(i / 20), 0.3, 0.05)
        sim.render()
    return steps / (time.perf_counter() - start)


def served(steps: int, lockstep: bool) -> tuple[float, list[float]]:
    """Our client against `car sim serve` in its own process, as it runs for real."""
    cmd = [sys.executable, "-m", "car.cli", "sim", "serve", "--port", "0", "--track", TRACK]
    server = subprocess.Popen(cmd + (["--lockstep"] if lockstep else []), cwd=ROOT,
                              stderr=subprocess.PIPE, text=True)
    assert server.stderr is not None
    line = server.stderr.readline()
    address = re.search(r"donkey://([\d.]+):(\d+)", line)
    assert address, line
    client = DonkeyClient(address.group(1), int(address.group(2)), scene=TRACK,
                          lockstep=lockstep).connect()
    ages: list[float] = []
    try:
        seq = client.frame.seq if client.frame else -1
        start = time.perf_counter()
        if lockstep:
            for i in range(steps):
                client.send(m.control(0.1 * np.sin(i / 20), 0.3))
                seq = client.wait_frame(seq, 5.0).seq
            return steps / (time.perf_counter() - start), ages
        first = client.counts.telemetry
        next_s = time.monotonic()
        for i in range(steps):
            next_s += 0.05
            time.sleep(max(0.0, next_s - time.monotonic()))
            frame = client.wait_frame(seq, 0.05)
            ages.append(time.monotonic() - frame.time_s)
            seq = frame.seq
            client.send(m.control(0.1 * np.sin(i / 20), 0.3))
        return (client.counts.telemetry - first) / (time.perf_counter() - start), ages
    finally:
        client.close()
        server.send_signal(signal.SIGINT)
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    base = direct(args.steps)
    lock, _ = served(args.steps, lockstep=True)
    real, ages = served(min(args.steps, 200), lockstep=False)
    overhead_ms = 1000.0 / lock - 1000.0 / base
    print(f"{'measure':<52}{'value':>12}")
    print(f"{'baseline: Simulator.step + render, in process':<52}{base:>10.0f}/s")
    print(f"{'lock-step over loopback (control → telemetry)':<52}{lock:>10.0f}/s")
    print(f"{'protocol overhead per step':<52}{overhead_ms:>9.2f} ms "
          f"({100.0 * (1 - lock / base):.0f} % of the step)")
    print(f"{'real time: telemetry at the client':<52}{real:>10.1f}/s")
    a = np.array(ages) * 1000.0
    print(f"{'real time: frame age when read, p50 / p99':<52}{np.percentile(a, 50):>6.1f} / "
          f"{np.percentile(a, 99):.1f} ms")


if __name__ == "__main__":
    main()
