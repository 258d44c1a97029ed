"""The status the loop publishes to the page (``car.status.LoopStatus``), without a browser:
why a mode request was refused, what the last erase really erased, and a simulator's laps,
speed and resets (absent on a real car)."""

from __future__ import annotations

import time
from pathlib import Path

from car.actuator import DryRunActuator
from car.config import DriveConfig, RecordConfig
from car.controllers import ScriptedController
from car.frames import Mode, UserInput
from car.loop import DriveLoop
from car.modes import Arbiter
from car.recorder import DriveRecorder
from car.status import LoopStatus
from car.world import SimStatus
from tests.loop_fakes import FakeCamera, FakeClock

HZ = 20.0
SIM_FIELDS = ("lap", "last_lap_s", "speed_mps", "resets")


class StubWorld:
    """Only what LoopStatus reads of a World: its status."""

    def __init__(self, laps: tuple[float, ...]):
        self.status = SimStatus(time_s=30.0, x=0.0, y=0.0, yaw=0.0, speed_mps=1.8371,
                                steering=0.0, throttle=0.3, cte_m=0.1, s_m=4.0,
                                lap=len(laps), lap_times_s=laps, off_track=False,
                                off_track_events=4)


def make_loop(script, recorder=None) -> tuple[DriveLoop, FakeClock]:
    clock = FakeClock()
    loop = DriveLoop(FakeCamera(clock), DryRunActuator(), ScriptedController(script=script),
                     Arbiter(DriveConfig(), HZ, Mode.USER), None, recorder=recorder,
                     clock=clock)
    return loop, clock


def test_a_refused_mode_is_counted_and_said(caplog) -> None:
    asks = {1: Mode.LOCAL, 3: Mode.LOCAL_ANGLE}
    ticks = iter(range(100))
    loop, clock = make_loop(lambda now_s: UserInput(mode=asks.get(next(ticks))))
    status = LoopStatus(loop, loop.actuator, clock=clock)
    snapshots = []
    for _ in range(5):
        snapshots.append(status.snapshot(loop.tick()))
        clock.sleep(1 / HZ)
    assert [s["mode_refusals"] for s in snapshots] == [0, 1, 1, 2, 2]
    assert snapshots[1]["mode_refused"] == \
        "mode local needs a model and this run has none: staying in user"
    assert snapshots[3]["mode_refused"].startswith("mode local_angle needs a model")
    assert all(s["mode"] == "user" for s in snapshots)
    assert "start with --model" in caplog.text
    assert not any(key in snapshots[-1] for key in SIM_FIELDS)  # a real car: no such rows
    assert "erases" not in snapshots[-1]  # no recorder: nothing to erase


def test_the_last_erase_is_what_the_recorder_deleted(tmp_path: Path) -> None:
    recorder = DriveRecorder(tmp_path / "tub", RecordConfig())
    erase = {7: 100, 12: 3}  # tick 7: 100 asked with 7 or 8 recorded; tick 12: 3 of more
    ticks = iter(range(100))
    loop, clock = make_loop(lambda now_s: UserInput(erase_last=erase.get(next(ticks), 0)),
                            recorder)
    status = LoopStatus(loop, loop.actuator, clock=clock)

    def tick() -> dict:
        clock.sleep(1 / HZ)
        return status.snapshot(loop.tick())

    try:
        snaps = [tick() for _ in range(7)]
        assert snaps[-1]["erases"] == 0 and snaps[-1]["erased_last"] == 0
        tick()  # tick 7 asks; the recorder deletes on its own thread (with this tick's
        wait_for(lambda: recorder.last_erase.done == 1)  # record, if it came first)
        snap = tick()
        assert snap["erases"] == 1 and snap["erase_error"] is None
        assert snap["erased_last"] in (7, 8) and snap["erased_last"] == recorder.erased
        first = snap["erased_last"]
        while loop.ticks <= 12:
            tick()
        wait_for(lambda: recorder.last_erase.done == 2)
        snap = tick()
        assert (snap["erases"], snap["erased_last"]) == (2, 3)  # 3 asked, more there
        assert snap["records"] == loop.recorded - first - 3
    finally:
        recorder.close()


def wait_for(test, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not test():
        assert time.monotonic() < deadline, "the erase did not finish"
        time.sleep(0.01)


def test_a_simulator_adds_laps_speed_and_resets() -> None:
    loop, clock = make_loop(lambda now_s: UserInput())
    status = LoopStatus(loop, loop.actuator, clock=clock, world=StubWorld((14.123, 12.4567)),
                        resets=lambda: 2)
    snap = status.snapshot(loop.tick())
    assert {k: snap[k] for k in SIM_FIELDS} == \
        {"lap": 2, "last_lap_s": 12.46, "speed_mps": 1.84, "resets": 2}
    status = LoopStatus(loop, loop.actuator, clock=clock, world=StubWorld(()))
    snap = status.snapshot(loop.tick())
    assert snap["lap"] == 0 and snap["last_lap_s"] is None  # before the first lap
