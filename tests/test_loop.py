"""The drive loop with fake devices: safety (NaN, stale frames, e-stop, a dead camera),
mode arbitration, limits, the ratekeeper, hot reload and the latency histograms."""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time

import numpy as np
import pytest

from car.actuator import DryRunActuator
from car.config import DriveConfig, RecordConfig
from car.controllers import ScriptedController
from car.frames import ESTOP, NEUTRAL, Command, Mode, UserInput
from car.latency import LatencyHistogram
from car.loop import DriveLoop, Ratekeeper, TickWatchdog
from car.modes import Arbiter
from car.recorder import DriveRecorder
from car.reload import ModelWatcher
from car.tub.reader import Tub
from tests.loop_fakes import FakeCamera, FakeClock, FakeEngine

HZ = 20.0
PERIOD = 1.0 / HZ
FAST = DriveConfig(max_throttle=1.0, steering_rate_per_s=1000.0, throttle_rate_per_s=1000.0)


def make_loop(engine=None, *, mode=Mode.LOCAL, drive=FAST, controller=None, camera=None,
              clock=None, recorder=None):
    clock = clock or FakeClock()
    camera = camera or FakeCamera(clock)
    actuator = DryRunActuator()
    actuator.history = []
    loop = DriveLoop(camera, actuator, controller or ScriptedController(mode),
                     Arbiter(drive, HZ, mode), engine or FakeEngine(), clock=clock,
                     recorder=recorder)
    return loop, actuator, clock


def run_ticks(loop, clock, n):
    keeper = Ratekeeper(HZ, clock=clock, sleep=clock.sleep)
    return loop.run(keeper, max_ticks=n), keeper


def test_local_mode_drives_with_the_pilot():
    loop, act, clock = make_loop(FakeEngine(lambda n: (0.25, 0.4)))
    reason, keeper = run_ticks(loop, clock, 5)
    assert reason == "done" and loop.ticks == 5
    assert act.history[:5] == [Command(0.25, 0.4)] * 5
    assert act.last == NEUTRAL  # the loop always ends neutral
    assert keeper.overruns == 0


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_output_goes_neutral_logs_and_resets_the_pilot(value, caplog):
    engine = FakeEngine(lambda n: (value, 0.4) if n == 2 else (0.2, 0.4))
    loop, act, clock = make_loop(engine)
    with caplog.at_level(logging.WARNING):
        run_ticks(loop, clock, 4)
    assert act.history[2] == NEUTRAL
    assert act.history[3] == Command(0.2, 0.4)  # back to driving on the next good output
    assert loop.arbiter.counts.bad_outputs == 1
    assert engine.resets >= 1
    assert "not two finite numbers" in caplog.text


def test_a_pilot_that_raises_goes_neutral_and_the_loop_goes_on(caplog):
    def outputs(n):
        if n == 1:
            raise RuntimeError("CUDA error: an illegal memory access")
        return (0.1, 0.2)

    loop, act, clock = make_loop(FakeEngine(outputs))
    with caplog.at_level(logging.ERROR):
        run_ticks(loop, clock, 3)
    assert act.history[1] == NEUTRAL and act.history[2] == Command(0.1, 0.2)
    assert loop.pilot_errors == 1
    assert "illegal memory access" in caplog.text


def test_a_stale_frame_goes_neutral_with_a_warning(caplog):
    clock = FakeClock()
    # Frame 1 is 3.5 periods old (stale); frame 2 is 2.9 periods old (still allowed).
    ages = {1: 3.5 * PERIOD, 2: 2.9 * PERIOD}
    camera = FakeCamera(clock, age_s=lambda seq: ages.get(seq, 0.0))
    engine = FakeEngine(lambda n: (0.3, 0.3))
    loop, act, _ = make_loop(engine, camera=camera, clock=clock)
    with caplog.at_level(logging.WARNING):
        run_ticks(loop, clock, 3)
    assert act.history[:3] == [Command(0.3, 0.3), NEUTRAL, Command(0.3, 0.3)]
    assert loop.arbiter.counts.stale_frames == 1
    assert engine.calls == 2  # the pilot does not run on a stale frame
    assert "175 ms old (limit 150 ms)" in caplog.text


def test_estop_latches_neutral_until_cleared():
    script = {2: UserInput(estop=True), 5: UserInput(clear_estop=True)}
    clock = FakeClock()
    ticks = iter(range(100))
    controller = ScriptedController(script=lambda now: script.get(next(ticks), UserInput()))
    loop, act, _ = make_loop(FakeEngine(lambda n: (0.5, 0.5)), controller=controller,
                             clock=clock)
    run_ticks(loop, clock, 7)
    assert act.history[:7] == [Command(0.5, 0.5)] * 2 + [ESTOP] * 3 + [Command(0.5, 0.5)] * 2
    assert loop.arbiter.counts.estop_ticks == 3


def test_estop_also_holds_in_user_mode():
    arbiter = Arbiter(FAST, HZ, Mode.USER)
    arbiter.estop()
    d = arbiter.decide(UserInput(0.5, 0.5), None, stale=False, now_s=0.0)
    assert d.command == ESTOP and d.reason == "estop"


def test_mode_arbitration_and_the_ai_throttle_limits():
    drive = dataclasses.replace(FAST, ai_throttle_mult=0.5, max_throttle=0.3)
    user = UserInput(steering=-0.4, throttle=0.2)
    pilot = (0.7, 0.8)
    arbiter = Arbiter(drive, HZ, Mode.USER)
    assert arbiter.decide(user, pilot, stale=False, now_s=0).command == Command(-0.4, 0.2)
    arbiter.set_mode(Mode.LOCAL_ANGLE)
    assert arbiter.decide(user, pilot, stale=False, now_s=0).command == Command(0.7, 0.2)
    arbiter.set_mode(Mode.LOCAL)
    assert arbiter.decide(user, pilot, stale=False, now_s=0).command == Command(0.7, 0.3)
    assert arbiter.counts.throttle_capped == 1  # 0.8 × 0.5 = 0.4, capped at 0.3
    assert arbiter.counts.mode_changes == 2


def test_user_mode_needs_no_pilot_and_stale_frames_do_not_stop_the_user():
    arbiter = Arbiter(FAST, HZ, Mode.USER)
    d = arbiter.decide(UserInput(0.1, 0.2), None, stale=True, now_s=0)
    assert d.command == Command(0.1, 0.2) and d.reason == "ok"


def test_a_mode_change_resets_the_pilots_temporal_state():
    ticks = iter(range(100))
    controller = ScriptedController(script=lambda now: UserInput(
        mode=Mode.LOCAL_ANGLE if next(ticks) == 2 else None))
    engine = FakeEngine()
    loop, _, clock = make_loop(engine, controller=controller)
    run_ticks(loop, clock, 4)
    assert loop.arbiter.mode is Mode.LOCAL_ANGLE
    assert engine.resets == 1


def test_outputs_are_clamped_and_rate_limited():
    drive = DriveConfig(max_throttle=1.0, steering_rate_per_s=4.0, throttle_rate_per_s=2.0)
    arbiter = Arbiter(drive, HZ, Mode.LOCAL)
    steps = [arbiter.decide(UserInput(), (5.0, 5.0), stale=False, now_s=0).command
             for _ in range(3)]
    # Steering moves 4/s × 0.05 s = 0.2 per tick; throttle rises 0.1 per tick.
    assert [round(c.steering, 6) for c in steps] == [0.2, 0.4, 0.6]
    assert [round(c.throttle, 6) for c in steps] == [0.1, 0.2, 0.3]
    # Cutting throttle is immediate; a reversal cuts to neutral, then rises.
    cut = arbiter.decide(UserInput(), (0.6, 0.0), stale=False, now_s=0).command
    assert cut.throttle == 0.0
    rev = arbiter.decide(UserInput(), (0.6, -1.0), stale=False, now_s=0).command
    assert round(rev.throttle, 6) == -0.1


def test_the_ratekeeper_sleeps_to_the_slot_and_counts_overruns():
    clock = FakeClock(0.0)
    keeper = Ratekeeper(HZ, clock=clock, sleep=clock.sleep)
    clock.now_s += 0.01  # a quick tick: sleep to the end of the slot
    assert keeper.wait() is False and clock.now_s == pytest.approx(PERIOD)
    clock.now_s += 0.08  # a slow tick: overrun, and the schedule restarts from now
    assert keeper.wait() is True and keeper.overruns == 1
    start = clock.now_s
    clock.now_s += 0.01
    assert keeper.wait() is False and clock.now_s == pytest.approx(start + PERIOD)
    with pytest.raises(ValueError):
        Ratekeeper(0.0)


def test_a_dead_camera_goes_neutral_stops_cleanly_and_keeps_the_recording(tmp_path):
    clock = FakeClock()
    camera = FakeCamera(clock, fail_at=6)
    recorder = DriveRecorder(tmp_path / "tub", RecordConfig())
    loop, act, _ = make_loop(FakeEngine(lambda n: (0.2, 0.3)), camera=camera, clock=clock,
                             recorder=recorder)
    reason, _ = run_ticks(loop, clock, 100)
    stats = recorder.close()
    assert reason.startswith("device failed") and "unplugged" in reason
    assert act.last == NEUTRAL
    assert stats.written == 6
    tub = Tub(tmp_path / "tub")
    records = list(tub.records())
    assert len(records) == 6
    assert records[0]["pilot/angle"] == pytest.approx(0.2)
    assert records[0]["car/throttle"] == pytest.approx(0.3)
    assert records[0]["user/mode"] == "local"
    assert tub.load_image(records[5]).shape == (120, 160, 3)


def test_a_nan_output_is_recorded_without_the_nan(tmp_path):
    clock = FakeClock()
    recorder = DriveRecorder(tmp_path / "tub", RecordConfig())
    loop, _, _ = make_loop(FakeEngine(lambda n: (math.nan, 0.1)), clock=clock,
                           recorder=recorder)
    run_ticks(loop, clock, 2)
    recorder.close()
    rec = next(Tub(tmp_path / "tub").records())
    assert "pilot/angle" not in rec and rec["car/reason"] == "bad_output"


def test_hot_reload_swaps_between_ticks_without_missing_one(tmp_path):
    model = tmp_path / "pilot.onnx"
    model.write_bytes(b"v1")
    (tmp_path / "pilot.json").write_text("{}")
    old, new = FakeEngine(lambda n: (0.1, 0.1), "old"), FakeEngine(lambda n: (0.9, 0.1), "new")
    loading = threading.Event()
    release = threading.Event()

    def slow_load(path):
        loading.set()
        assert release.wait(10)  # the loop keeps ticking while this "loads"
        return new

    loop, act, clock = make_loop(old)
    watcher = ModelWatcher(model, slow_load, loop.swap_engine, poll_s=0.0)
    keeper = Ratekeeper(HZ, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        loop.tick()
        keeper.wait()
    model.write_bytes(b"version 2")
    worker = threading.Thread(target=watcher.check)
    worker.start()
    assert loading.wait(10)
    for _ in range(3):  # ticks during the load: still the old model, none missed
        loop.tick()
        keeper.wait()
    release.set()
    worker.join(10)
    assert watcher.reloads == 1
    for _ in range(2):
        loop.tick()
        keeper.wait()
    steering = [c.steering for c in act.history]
    assert steering == [0.1] * 6 + [0.9] * 2
    assert loop.ticks == 8 and keeper.overruns == 0 and loop.swaps == 1


def test_a_model_that_fails_to_reload_keeps_the_old_one(tmp_path, caplog):
    model = tmp_path / "pilot.onnx"
    model.write_bytes(b"v1")
    (tmp_path / "pilot.json").write_text("{}")

    def broken(path):
        raise RuntimeError("truncated file")

    swapped = []
    watcher = ModelWatcher(model, broken, swapped.append, poll_s=0.0)
    model.write_bytes(b"v2!")
    with caplog.at_level(logging.ERROR):
        assert watcher.check() is False
    assert watcher.failures == 1 and not swapped
    assert "keeping the old one" in caplog.text


def test_the_latency_histogram_percentiles_are_within_two_percent():
    rng = np.random.default_rng(0)
    samples = rng.lognormal(np.log(2e-3), 0.5, 20_000)
    h = LatencyHistogram()
    for s in samples:
        h.add(float(s))
    for p in (50, 99):
        exact = np.percentile(samples, p) * 1000
        assert h.percentile_ms(p) == pytest.approx(exact, rel=0.02)
    assert h.summary()["max"] == pytest.approx(samples.max() * 1000, abs=1e-3)
    assert LatencyHistogram().summary()["p50"] is None


def test_the_watchdog_sends_neutral_while_a_tick_hangs():
    hang = threading.Event()
    release = threading.Event()

    def outputs(n):
        if n == 5:
            hang.set()
            assert release.wait(10)
        return (0.3, 0.5)

    actuator = DryRunActuator()
    loop = DriveLoop(FakeCamera(time.monotonic), actuator, ScriptedController(Mode.LOCAL),
                     Arbiter(FAST, 50.0, Mode.LOCAL), FakeEngine(outputs))
    worker = threading.Thread(target=lambda: loop.run(Ratekeeper(50.0), max_ticks=8,
                                                      watchdog_s=0.06))
    worker.start()
    assert hang.wait(10)
    deadline = time.monotonic() + 10
    while actuator.last != NEUTRAL and time.monotonic() < deadline:
        time.sleep(0.01)
    assert actuator.last == NEUTRAL  # the hung tick's car is not left on its last command
    release.set()
    worker.join(10)
    assert loop.ticks == 8


def test_a_repeated_frame_is_not_fed_to_the_pilot_twice():
    clock = FakeClock()
    camera = FakeCamera(clock)
    frames = [camera.read(), camera.read()]
    sequence = iter([frames[0], frames[0], frames[1]])
    camera.read = lambda: next(sequence)  # type: ignore[method-assign]
    engine = FakeEngine(lambda n: (0.1 * (n + 1), 0.2))
    loop, act, _ = make_loop(engine, camera=camera, clock=clock)
    for _ in range(3):
        loop.tick()
    assert engine.calls == 2 and loop.repeated_frames == 1
    assert [round(c.steering, 6) for c in act.history] == [0.1, 0.1, 0.2]


def test_reverse_throttle_from_the_pilot_is_capped_too():
    drive = dataclasses.replace(FAST, max_throttle=0.3, ai_throttle_mult=2.0)
    arbiter = Arbiter(drive, HZ, Mode.LOCAL)
    assert arbiter.decide(UserInput(), (0.0, -0.6), stale=False, now_s=0).command == \
        Command(0.0, -0.3)


def test_a_camera_that_goes_silent_fails_instead_of_serving_an_old_frame(monkeypatch):
    from car import camera as camera_module

    class SilentCapture:
        """Gives three frames, then blocks in read() like an unplugged USB camera."""

        def __init__(self, *args):
            self.count = 0
            self.stop = threading.Event()

        def isOpened(self):
            return True

        def set(self, *args):
            return True

        def read(self):
            self.count += 1
            if self.count > 3:
                self.stop.wait(30)
                return False, None
            return True, np.zeros((120, 160, 3), np.uint8)

        def release(self):
            self.stop.set()

    monkeypatch.setattr(camera_module.cv2, "VideoCapture", SilentCapture)
    cam = camera_module.OpenCVCamera(0, 160, 120, 30)
    cam.read()
    with pytest.raises(camera_module.CameraError, match="gave no frame for"):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            cam.read()
    cam._cap.release()
    cam.close()


def test_an_actuator_fault_commands_neutral_until_it_clears(caplog):
    loop, act, clock = make_loop(FakeEngine(lambda n: (0.3, 0.3)))
    faults = {2: "MCU link on /dev/ttyACM0 lost: no telemetry for 760 ms; reconnecting",
              3: "same"}

    def on_tick(result):
        act.fault = faults.get(loop.ticks)  # what the actuator reports for the next tick
        return False

    keeper = Ratekeeper(HZ, clock=clock, sleep=clock.sleep)
    with caplog.at_level(logging.WARNING):
        loop.run(keeper, max_ticks=6, on_tick=on_tick)
    assert act.history[:6] == [Command(0.3, 0.3)] * 2 + [NEUTRAL] * 2 + [Command(0.3, 0.3)] * 2
    assert loop.arbiter.counts.actuator_faults == 2
    assert loop.summary(keeper)["safety"]["actuator_faults"] == 2
    assert "no telemetry for 760 ms; reconnecting: outputs neutral while it lasts" in caplog.text


def test_an_estopped_loop_ends_and_watchdogs_with_the_estop_kept():
    ticks = iter(range(100))
    loop, act, clock = make_loop(controller=ScriptedController(
        script=lambda now: UserInput(estop=next(ticks) == 1)))
    run_ticks(loop, clock, 3)
    assert act.last == ESTOP  # the final command keeps the MCU's latch
    assert loop.safe_command() == ESTOP
    loop.arbiter.clear_estop()
    assert loop.safe_command() == NEUTRAL
    watchdog = TickWatchdog(act, 0.01, safe=lambda: ESTOP)
    watchdog.start()
    deadline = time.monotonic() + 2
    act.last = NEUTRAL
    while act.last != ESTOP and time.monotonic() < deadline:
        time.sleep(0.005)
    watchdog.stop()
    assert act.last == ESTOP and watchdog.trips == 1


@pytest.mark.parametrize(("threshold", "kept"), [(0.0, 6), (0.05, 3)])
def test_auto_record_at_zero_keeps_every_tick(tmp_path, threshold, kept):
    """``record.auto_record_throttle = 0`` keeps standing-still ticks too, as documented."""
    clock = FakeClock()
    recorder = DriveRecorder(tmp_path / "tub", RecordConfig())
    throttles = iter([0.0, 0.3, 0.0, 0.3, 0.0, 0.3])

    class Person(ScriptedController):
        def poll(self, now_s):
            return UserInput(0.0, next(throttles))

    loop, _, _ = make_loop(mode=Mode.USER, controller=Person(Mode.USER), clock=clock,
                           recorder=recorder)
    loop.auto_record_throttle = threshold
    run_ticks(loop, clock, 6)
    recorder.close()
    assert loop.recorded == kept and len(list(Tub(tmp_path / "tub").records())) == kept


def test_the_limited_log_counts_what_it_held_back_when_asked(caplog):
    from car.modes import LimitedLog

    for count_held, last in ((False, "fault 3"), (True, "fault 3 (2 more like it)")):
        caplog.clear()
        limited = LimitedLog(logging.getLogger("test.limited"), 1.0, count_held=count_held)
        with caplog.at_level(logging.WARNING, "test.limited"):
            for n, now in enumerate((0.0, 0.4, 0.9, 1.0)):
                limited.warning("kind", now, "fault %d", n)
        assert [r.getMessage() for r in caplog.records] == ["fault 0", last]
