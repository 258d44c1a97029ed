"""The `car` console script. A Ctrl-C while the program is still starting (importing numpy
and OpenCV takes a moment) exits quietly with 130 instead of printing an import traceback."""

from __future__ import annotations

import signal
import sys


def _interrupted_while_starting(signum: int, frame: object) -> None:
    print("car: interrupted", file=sys.stderr)
    raise SystemExit(130)


def main() -> int:
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    from car.cli import main as cli_main

    signal.signal(signal.SIGINT, signal.default_int_handler)
    return cli_main()
