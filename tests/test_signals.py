"""`kill` (SIGTERM) and a dropped SSH session (SIGHUP) stop `car drive` as Ctrl-C does: the
loop stops at a safe point, the outputs go neutral, the summary is printed and the tub is
whole. Python's default would kill the process on the spot, leaving a PCA9685 board, which
has no watchdog, on its last pulse."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from car.tub.check import check_tub
from car.tub.reader import Tub

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "pilot_linear.onnx"
ENTRY = [sys.executable, "-c", "import sys; from car.entry import main; sys.exit(main())"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_the_drive_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    tub = tmp_path / "tub"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # As from a terminal: SIGHUP at its default even when the test run itself is under
    # nohup (which `car`, rightly, leaves ignored: see the next test).
    proc = subprocess.Popen([*ENTRY, "drive", "--model", str(FIXTURE), "--sim", "oval",
                             "--duration", "120", "--json", "--record", str(tub)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(tub.glob("images/*.jpg"))) < 3:
        time.sleep(0.1)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr  # as after Ctrl-C
    summary = json.loads(stdout)
    assert summary["stop_reason"] == "interrupted"
    assert summary["elapsed_s"] < 100  # it stopped at the signal, not at --duration
    assert check_tub(tub).problems == []
    assert len(Tub(tub)) >= 3


def test_an_ignored_hangup_stays_ignored(tmp_path: Path) -> None:
    """Under `nohup` SIGHUP is ignored on purpose; `car` must not undo that."""
    code = ("import signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
            "from car.entry import stop_on_term_and_hangup as s; s(); "
            "sys.exit(0 if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN and "
            "signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL else 1)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
