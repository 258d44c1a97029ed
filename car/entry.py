"""The `car` console script. A Ctrl-C while the program is still starting (importing numpy
and OpenCV takes a moment) exits quietly with 130 instead of printing an import traceback.

SIGTERM (`kill`, systemd stopping a service) and SIGHUP (the SSH session to the car dropped)
are turned into a Ctrl-C: the run stops at a safe point, the outputs go neutral and the tub
is closed. Python's default for both is to die on the spot, which would leave a PCA9685
repeating the last throttle pulse. A signal already ignored (`nohup`) stays ignored."""

from __future__ import annotations

import signal
import sys


def _interrupted_while_starting(signum: int, frame: object) -> None:
    print("car: interrupted", file=sys.stderr)
    raise SystemExit(130)


def _as_ctrl_c(signum: int, frame: object) -> None:
    signal.raise_signal(signal.SIGINT)  # whatever handles Ctrl-C now handles this too


def stop_on_term_and_hangup() -> None:
    """SIGTERM and SIGHUP act as Ctrl-C, unless the process was told to ignore them."""
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _as_ctrl_c)


def main() -> int:
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    stop_on_term_and_hangup()
    from car.cli import main as cli_main

    signal.signal(signal.SIGINT, signal.default_int_handler)
    return cli_main()


if __name__ == "__main__":  # `python -m car.entry`: how torchrun starts `car train` workers
    sys.exit(main())
