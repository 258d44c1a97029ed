"""Recording a person's driving into a tub: the run `car record` assembles (``car.run``),
with a scripted person standing in (the web page, gamepad and RC controllers have their own
tests)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from car.cli import main
from car.config import Config
from car.controllers import ScriptedController
from car.frames import UserInput
from car.run import RunSpec, drive
from car.tub.check import check_tub
from car.tub.reader import Tub
from training.records import load_records


class Person(ScriptedController):
    """Drives a gentle left curve; erases the last 5 records at tick 20, stops recording at
    tick 30 and starts again at tick 35."""

    def __init__(self) -> None:
        super().__init__()
        self.ticks = 0

    def poll(self, now_s: float) -> UserInput:
        self.ticks += 1
        n = self.ticks
        throttle = 0.0 if n <= 3 else 0.4  # standing still first: not recorded
        return UserInput(-0.2 + 0.1 * math.sin(n / 5), throttle,
                         erase_last=5 if n == 20 else 0,
                         recording=False if n == 30 else True if n == 35 else None)


def recording(out: Path) -> RunSpec:
    """What `car record --sim oval --out OUT --duration 2.5 --hz 20` asks for, with a
    scripted person at the controls."""
    return RunSpec(sim="oval", record=str(out), duration_s=2.5, rate_hz=20, mode="user",
                   controller=Person(), auto_record=True)


def test_recording_in_the_simulator_writes_a_tub_car_train_accepts(tmp_path: Path) -> None:
    out = tmp_path / "tub"
    summary = drive(recording(out), Config())
    assert summary["stop_reason"] == "done"
    ticks = summary["ticks"]
    assert ticks >= 40 and summary["mode"] == "user"
    record = summary["record"]
    # Ticks 1-3 stand still (auto-record keeps none), 30-34 are paused.
    assert record["written"] == ticks - 3 - 5 and record["erased"] == 5
    tub = Tub(out)
    records = list(tub.records())
    assert len(records) == record["written"] - 5  # the soft-deleted ones are hidden
    assert all(r["user/throttle"] == pytest.approx(0.4) for r in records)
    assert all(r["user/mode"] == "user" for r in records)
    assert records[-1]["sim/speed"] > 0.5
    assert check_tub(out).problems == []
    assert len(load_records([out])) == len(records)  # what `car train` reads
    drive(recording(out), Config())  # again: a second session in the same tub
    assert len(Tub(out).manifest.sessions["all_full_ids"]) == 2  # a new session id


def test_car_record_refuses_rc_without_the_mcu(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    assert main(["record", "--sim", "--out", str(tmp_path / "t"), "--controller", "rc"]) == 1
    assert "--controller rc reads the transmitter through the MCU" in capsys.readouterr().err


def test_the_status_says_mcu_only_for_the_serial_mcu() -> None:
    from car.controllers import ScriptedController as Scripted
    from car.loop import DriveLoop
    from car.modes import Arbiter
    from car.sim.link import SimLink
    from car.sim.tracks import load_track
    from car.sim.world import Simulator
    from car.status import LoopStatus

    config = Config()
    link = SimLink(Simulator(load_track("oval", 0.39), config.sim), 0.05, lockstep=True)
    loop = DriveLoop(link.camera, link.actuator, Scripted(), Arbiter(config.drive, 20.0))
    status = LoopStatus(loop, link.actuator).snapshot(loop.tick())
    assert status["mcu"] is False and "battery_v" not in status
    assert status["mode"] == "user" and status["records"] is None


def test_erase_stays_in_this_session_and_counts_what_it_deleted(tmp_path: Path) -> None:
    import time

    import numpy as np

    from car.config import RecordConfig
    from car.frames import Command, Frame, Mode
    from car.modes import Decision
    from car.recorder import DriveRecorder

    def write(recorder: DriveRecorder, n: int) -> None:
        image = np.zeros((120, 160, 3), np.uint8)
        for i in range(n):
            recorder.write(Frame(image, float(i), i),
                           Decision(Command(0.0, 0.3), "ok", UserInput(0.0, 0.3), None),
                           Mode.USER)

    first = DriveRecorder(tmp_path / "tub", RecordConfig())
    write(first, 10)
    first.close()
    second = DriveRecorder(tmp_path / "tub", RecordConfig())
    write(second, 3)
    second.erase_last(100)  # more than this session has: only its 3 go
    deadline = time.monotonic() + 10
    while second.erased < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    second.close()
    assert second.erased == 3
    assert len(list(Tub(tmp_path / "tub").records())) == 10  # the first session is intact
