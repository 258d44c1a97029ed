"""CRC-16/CCITT-FALSE on the host: ``car.mcu.protocol.crc16_ccitt_false`` (the stdlib's
``binascii.crc_hqx``, in C) against the bit-by-bit Python loop the host used before (the
baseline, measured in the same run), on a DRIVE-sized frame and on 1 KiB.

    python benchmarks/bench_crc.py [--seconds 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from car.mcu.protocol import crc16_bitwise, crc16_ccitt_false


def rate(fn: Callable[[bytes], int], data: bytes, seconds: float) -> float:
    """Calls per second over about ``seconds``."""
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            fn(data)
        calls += 100
    return calls / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per cell")
    args = parser.parse_args()
    print("| data | baseline: bit by bit, calls/s | binascii.crc_hqx, calls/s | speed-up |")
    print("|---|---:|---:|---:|")
    for name, data in (("12-byte frame", bytes(range(12))), ("1 KiB", bytes(1024))):
        assert crc16_ccitt_false(data) == crc16_bitwise(data)
        base = rate(crc16_bitwise, data, args.seconds)
        fast = rate(crc16_ccitt_false, data, args.seconds)
        print(f"| {name} | {base:,.0f} | {fast:,.0f} | {fast / base:.0f}x |")


if __name__ == "__main__":
    main()
