"""The serial MCU link, host and emulator over a real pseudo-terminal.

    python benchmarks/bench_mcu.py [--trials 5]

Tables:

1. **Failsafe after the host dies.** A host process drives the emulator at 20 Hz and is
   killed with SIGKILL at a random moment; the delay until the emulator is in FAILSAFE
   (outputs neutral) is measured from the kill and from the last DRIVE it received. The
   baseline is the configured watchdog timeout: the last-DRIVE figure should equal it
   (plus the emulator's 1 ms poll); the from-kill figure is shorter by however long ago
   the last DRIVE was sent.
2. **Command to applied.** The host sends a DRIVE and waits until TELEMETRY reports it
   applied; at 50 Hz and 200 Hz telemetry. Baseline, same run: a bare pty round trip (one
   byte written, echoed by a thread) - the floor any reply over this pty can reach.
3. **Parser.** Frames parsed per second by ``FrameParser``; baseline: ``struct.unpack`` of
   the same payloads with no framing or CRC.
"""

from __future__ import annotations

import argparse
import os
import random
import select
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from car.config import load_config  # noqa: E402
from car.frames import Command  # noqa: E402
from car.mcu import protocol as p  # noqa: E402
from car.mcu.actuator import SerialActuator  # noqa: E402
from car.mcu.emulator import Emulator, PtyEmulator  # noqa: E402

HOST = """
import sys, time
from car.config import load_config
from car.frames import Command
from car.mcu.actuator import SerialActuator
act = SerialActuator.connect(load_config(None, ["actuator.timeout_ms=" + sys.argv[2]]),
                             sys.argv[1])
print("driving", flush=True)
while True:
    act.send(Command(0.3, 0.4))
    time.sleep(0.05)
"""


def failsafe_trial(timeout_ms: int, rng: random.Random) -> tuple[float, float]:
    """(ms from the kill, ms from the last DRIVE) until FAILSAFE."""
    with PtyEmulator(Emulator(start_s=time.monotonic())) as emu:
        host = subprocess.Popen([sys.executable, "-c", HOST, emu.path, str(timeout_ms)],
                                stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert host.stdout is not None and host.stdout.readline().strip() == "driving"
        time.sleep(0.3 + rng.random() * 0.1)
        os.kill(host.pid, signal.SIGKILL)
        killed = time.monotonic()
        host.wait()
        while not emu.core.failsafe:
            time.sleep(0.0005)
        seen = time.monotonic()
        failsafe_s = next(t for t, what in reversed(emu.emulator.events) if what == "FAILSAFE on")
        last_drive_s = emu.emulator.start_s + emu.core.last_drive_ms / 1000.0
        assert seen - killed < 5.0
        return (failsafe_s - killed) * 1000.0, (failsafe_s - last_drive_s) * 1000.0


def command_latency(telemetry_hz: float, n: int) -> list[float]:
    with PtyEmulator(Emulator(start_s=time.monotonic(), telemetry_hz=telemetry_hz)) as emu:
        act = SerialActuator.connect(load_config(None, []), emu.path)
        out = []
        try:
            for i in range(n):
                steering = 0.5 if i % 2 else -0.5
                want = act.pulses.steering.to_us(steering)
                start = time.perf_counter()
                act.send(Command(steering, 0.0))
                while (t := act.telemetry) is None or t.applied_steering_us != want:
                    time.sleep(0.0002)
                out.append((time.perf_counter() - start) * 1000.0)
                time.sleep(0.01)
        finally:
            act.close()
        return out


def pty_round_trip(n: int) -> list[float]:
    master, slave = os.openpty()
    import tty

    tty.setraw(slave)
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            if select.select([master], [], [], 0.05)[0]:
                os.write(master, os.read(master, 64))

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    out = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            os.write(slave, b"x")
            os.read(slave, 1)
            out.append((time.perf_counter() - start) * 1000.0)
    finally:
        stop.set()
        thread.join()
        os.close(master)
        os.close(slave)
    return out


def parser_rates(n: int) -> tuple[float, float]:
    frames = [p.encode(p.Drive(1000 + i % 1000, 1500, p.ENGAGE), i & 0xFF) for i in range(n)]
    data = b"".join(frames)
    parser = p.FrameParser(dict(p.HOST_TO_MCU))
    start = time.perf_counter()
    for k in range(0, len(data), 1024):
        parser.feed(data[k:k + 1024])
    parsed = n / (time.perf_counter() - start)
    payloads = [f[5:10] for f in frames]
    start = time.perf_counter()
    for payload in payloads:
        struct.unpack("<HHB", payload)
    unpacked = n / (time.perf_counter() - start)
    return parsed, unpacked


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5, help="host kills per timeout")
    parser.add_argument("--samples", type=int, default=200, help="commands per latency row")
    args = parser.parse_args()
    rng = random.Random(0)

    print("## Failsafe after the host is killed (SIGKILL), over a pty\n")
    print("| watchdog (baseline) | trials | kill → failsafe ms (p50 / max) | "
          "last DRIVE → failsafe ms (min / max) |")
    print("|---|---|---|---|")
    for timeout_ms in (100, 250, 1000):
        trials = [failsafe_trial(timeout_ms, rng) for _ in range(args.trials)]
        kill = [t[0] for t in trials]
        last = [t[1] for t in trials]
        print(f"| {timeout_ms} ms | {len(trials)} | {statistics.median(kill):.0f} / "
              f"{max(kill):.0f} | {min(last):.0f} / {max(last):.0f} |")

    print("\n## Command → applied (DRIVE sent → TELEMETRY shows it), over a pty\n")
    print("| path | p50 ms | p99 ms |")
    print("|---|---|---|")
    base = pty_round_trip(args.samples)
    print(f"| baseline: bare pty round trip | {pct(base, 0.5):.3f} | {pct(base, 0.99):.3f} |")
    for hz in (50, 200):
        lat = command_latency(hz, args.samples)
        print(f"| DRIVE → TELEMETRY at {hz} Hz | {pct(lat, 0.5):.2f} | {pct(lat, 0.99):.2f} |")

    print("\n## Parser\n")
    parsed, unpacked = parser_rates(50_000)
    print("| path | frames/s |")
    print("|---|---|")
    print(f"| baseline: struct.unpack of the payloads | {unpacked:,.0f} |")
    print(f"| FrameParser (sync, CRC, checks), 1 KiB chunks | {parsed:,.0f} |")


if __name__ == "__main__":
    main()
