"""A run assembled in Python (``car.run``): the README's example, the summary, devices
closed in reverse order whatever fails, and specs refused before anything opens."""

from __future__ import annotations

import dataclasses
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from car.config import Config, WebConfig
from car.controllers import ScriptedController
from car.errors import CarError
from car.frames import Mode
from car.run import Run, RunSpec, drive
from car.tub.reader import Tub

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "pilot_linear.onnx"


def readme_example() -> str:
    """The Python block that follows the ``python-example`` marker in README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- python-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its Python example (the block after <!-- python-example -->)"
    return match.group(1)


def test_the_readme_python_example_runs_as_written(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", readme_example()], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.search(r"\d+ ticks at [\d.]+ Hz", done.stdout), done.stdout


class Person(ScriptedController):
    """Drives straight at 0.3 and notes, when it is closed, whether the world is still open
    (it must be: the controller closes first)."""

    def __init__(self, run_box: list[Run]) -> None:
        super().__init__(Mode.USER, throttle=0.3)
        self.run_box = run_box
        self.world_open_at_close: bool | None = None

    def close(self) -> None:
        world = self.run_box[0].world
        assert world is not None
        self.world_open_at_close = world.camera._thread.is_alive()  # type: ignore[union-attr]


def test_a_run_in_python_records_and_closes_its_devices_in_reverse(tmp_path: Path) -> None:
    box: list[Run] = []
    person = Person(box)
    spec = RunSpec(sim="oval", controller=person, mode="user", record=str(tmp_path / "tub"),
                   duration_s=1.0, rate_hz=20)
    run = Run(spec, Config())
    box.append(run)
    with run:
        summary = run.drive()
        assert "record" not in summary  # the recorder's figures come when it closes
    assert summary["stop_reason"] == "done" and summary["ticks"] >= 15
    assert summary["sim"]["track"] == "oval" and summary["mode"] == "user"
    assert summary["record"]["written"] == len(list(Tub(tmp_path / "tub").records())) > 0
    assert person.world_open_at_close is True  # the controller closed before the world
    assert not run.world.camera._thread.is_alive()  # type: ignore[union-attr]


def test_a_device_that_fails_to_open_closes_everything_opened_before_it(tmp_path: Path
                                                                        ) -> None:
    with socket.socket() as busy:  # the web page's port is taken
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = dataclasses.replace(Config(), web=WebConfig(host="127.0.0.1", port=port))
        spec = RunSpec(sim="oval", model=str(FIXTURE), mode="local", controller="web",
                       record=str(tmp_path / "tub"), hot_reload=False)
        run = Run(spec, config, report=lambda line: None)
        with pytest.raises(CarError), run:
            pytest.fail("the run must not open")
    assert not run.world.camera._thread.is_alive()  # type: ignore[union-attr]
    # The recorder was closed too: the tub is released, and a new run records into it.
    summary = drive(RunSpec(sim="oval", record=str(tmp_path / "tub"), duration_s=0.3,
                            controller=ScriptedController(Mode.USER, throttle=0.3)), Config())
    assert summary["record"]["written"] > 0


@pytest.mark.parametrize("spec, message", [
    (RunSpec(sim="oval", rate_hz=500), "loop rate 500 Hz is out of range"),
    (RunSpec(sim="oval", scene="x"), "--scene picks a scene of a donkey simulator"),
    (RunSpec(sim="donkey://127.0.0.1:9", randomize=True), "a donkey simulator draws its own"),
    (RunSpec(camera="usb:0", laps=2), "--laps needs --sim"),
    (RunSpec(camera="usb:0", actuator="sim"), "--actuator sim needs --sim"),
    (RunSpec(sim="oval", controller="rc"), "--controller rc reads the transmitter"),
    (RunSpec(sim="oval", mode="local"), "mode local needs a model"),
    (RunSpec(sim="oval", mode="fast"), "mode 'fast'"),
    (RunSpec(sim="oval", actuator="can"), "unknown actuator 'can'"),
])
def test_a_spec_that_cannot_work_is_refused_before_anything_opens(spec: RunSpec,
                                                                  message: str) -> None:
    with pytest.raises(CarError, match=re.escape(message)):
        Run(spec, Config())


def test_the_engine_a_hot_reload_swapped_in_is_closed_with_the_run(tmp_path: Path) -> None:
    import os
    import shutil
    import time

    import numpy as np

    from deploy.engine import EngineError

    model = tmp_path / "pilot.onnx"
    for suffix in (".onnx", ".json"):
        shutil.copy(FIXTURE.with_suffix(suffix), model.with_suffix(suffix))
    run = Run(RunSpec(sim="oval", model=str(model), mode="local", hot_reload=True), Config())
    start = time.monotonic()
    touched: list[bool] = []

    def touched_then_swapped() -> bool:  # the file changes once; stop when the new one drives
        if time.monotonic() - start > 0.3 and not touched:
            os.utime(model, (time.time(), time.time() + 5))
            touched.append(True)
        return run.loop.swaps > 0 or time.monotonic() - start > 30

    with run:
        run.drive(should_stop=touched_then_swapped)
    assert run.loop.swaps == 1 and run.loop.engine is not run.engine
    blank = np.zeros((120, 160, 3), np.uint8)
    for engine in (run.engine, run.loop.engine):
        with pytest.raises(EngineError, match="closed"):
            engine.predict(blank)  # type: ignore[union-attr]
