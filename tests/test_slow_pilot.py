"""A pilot slower than the loop allows never moves the car: refused at load and at hot
reload with the rate it can hold, and, if it slows down mid-run, its late answers are never
sent (the frame's age when the command goes out decides)."""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import car.pilot
from car.config import Config
from car.errors import CarError
from car.frames import Mode
from car.loop import Ratekeeper
from car.pilot import check_pilot_rate, open_pilot
from car.run import Run, RunSpec, drive
from tests.loop_fakes import FakeEngine
from tests.test_loop import make_loop

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pilot_linear.onnx"
SLOW_S = 0.25  # the attack: a 250 ms model at 20 Hz (stale limit 150 ms)


class SlowEngine:
    """A real engine that takes SLOW_S per inference (``sleep``) and asks for full
    throttle, so anything it gets through would move the car."""

    def __init__(self, inner: Any, sleep: Any = time.sleep):
        self.inner = inner
        self.sleep = sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def infer(self, x: np.ndarray) -> tuple[float, float]:
        self.sleep(SLOW_S)
        self.inner.infer(x)
        return 0.0, 1.0


def slow_load(real: Any) -> Any:
    return lambda *args, **kwargs: SlowEngine(real(*args, **kwargs))


def test_a_slow_pilot_is_refused_at_load_with_the_rate_it_can_hold(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(car.pilot, "load_engine", slow_load(car.pilot.load_engine))
    with pytest.raises(CarError, match=r"^pilot_linear\.onnx takes 2\d\d ms per frame on .*, "
                       r"more than the 40 ms a 20 Hz loop allows it: drive at --hz 3 or "
                       r"less, or use a faster model or provider$"):
        open_pilot(FIXTURE, rate_hz=20)
    with pytest.raises(CarError, match="cannot hold even 1 Hz here"):
        check_pilot_rate(SlowEngine(open_pilot(FIXTURE), sleep=lambda s: time.sleep(1.0)), 1)


def test_a_run_with_a_slow_pilot_opens_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(car.pilot, "load_engine", slow_load(car.pilot.load_engine))
    opened = []
    monkeypatch.setattr("car.run.open_world", lambda *a, **k: opened.append(a))
    with pytest.raises(CarError, match="allows it: drive at --hz 3 or less"):
        drive(RunSpec(sim="oval", model=str(FIXTURE), mode="local", duration_s=1))
    assert not opened


def test_a_fast_pilot_passes_and_a_slow_reload_keeps_the_old_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    model = tmp_path / "pilot.onnx"
    shutil.copy(FIXTURE, model)
    shutil.copy(FIXTURE.with_suffix(".json"), tmp_path / "pilot.json")
    spec = RunSpec(sim="oval", model=str(model), mode="local", rate_hz=20, hot_reload=True)
    with Run(spec, Config()) as run, caplog.at_level(logging.ERROR):
        monkeypatch.setattr(car.pilot, "load_engine", slow_load(car.pilot.load_engine))
        model.write_bytes(model.read_bytes())  # "a new model": same bytes, new mtime
        shutil.copy(FIXTURE.with_suffix(".json"), tmp_path / "pilot.json")
        deadline = time.monotonic() + 20
        summary = run.drive(lambda: "keeping the old one" in caplog.text or
                            time.monotonic() > deadline)
    assert "allows it: drive at --hz 3 or less" in caplog.text
    assert summary["model_swaps"] == 0 and summary["safety"]["late_outputs"] == 0


def test_late_answers_are_never_sent() -> None:
    """Fake time: every inference takes SLOW_S; the frame was fresh when it was read."""
    loop, actuator, clock = make_loop(FakeEngine(lambda n: (0.2, 1.0)))
    loop.engine = SlowEngine(loop.engine, sleep=clock.sleep)
    keeper = Ratekeeper(20.0, clock=clock, sleep=clock.sleep)
    loop.run(keeper, max_ticks=20)
    assert all(c.throttle == 0.0 and c.steering == 0.0 for c in actuator.history)
    assert loop.late_outputs == 20 and loop.arbiter.counts.stale_frames == 20


def test_a_pilot_that_slows_mid_run_never_moves_the_car(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Real time, in the embedded simulator: it loads fast, then (thermal throttling, say)
    takes 250 ms a frame and asks for full throttle. The car must not move."""
    real = car.pilot.open_pilot

    def fast_then_slow(*args: Any, **kwargs: Any) -> Any:
        return SlowEngine(real(*args, **kwargs))

    monkeypatch.setattr("car.run.open_pilot", fast_then_slow)
    spec = RunSpec(sim="oval", model=str(FIXTURE), mode="local", rate_hz=20, duration_s=3.0,
                   hot_reload=False)
    with Run(spec, Config()) as run:
        assert run.world is not None and run.loop.arbiter.mode is Mode.LOCAL
        start = run.world.status
        summary = run.drive()
        end = run.world.status
    moved_m = math.hypot(end.x - start.x, end.y - start.y)
    assert moved_m < 0.01 and end.speed_mps < 0.01, (moved_m, end.speed_mps)
    assert summary["safety"]["late_outputs"] >= 5
