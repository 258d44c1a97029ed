"""The host driver against a real board running firmware/car_mcu, on the bench with the
wheels off the ground, at the default calibration (1000/1500/2000 µs). Skipped unless
CAR_MCU_PORT names a port where an MCU answers PING:

    CAR_MCU_PORT=/dev/ttyACM0 pytest -m hardware tests/test_mcu_hardware.py
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from car.actuator import ActuatorError
from car.config import Config
from car.frames import ESTOP, Command
from car.mcu.actuator import SerialActuator
from tests.waiting import wait_for

pytestmark = pytest.mark.hardware
PORT = os.environ.get("CAR_MCU_PORT", "")


def _probe() -> str | None:
    """None if a board answers on CAR_MCU_PORT, else why not."""
    if not PORT:
        return "set CAR_MCU_PORT to a port with firmware/car_mcu flashed"
    try:
        SerialActuator.connect(Config(), PORT).link.close()
    except ActuatorError as exc:
        return f"probe: {exc}"
    return None


WHY = _probe()


@pytest.fixture
def board() -> Iterator[SerialActuator]:
    if WHY is not None:
        pytest.skip(WHY)
    actuator = SerialActuator.connect(Config(), PORT)
    yield actuator
    actuator.close()


def test_the_board_applies_clamps_and_fails_safe(board: SerialActuator) -> None:
    for _ in range(10):
        board.send(Command(0.5, 0.0))
        time.sleep(0.02)
    assert wait_for(lambda: board.telemetry is not None
                    and board.telemetry.applied_steering_us == 1750, 2.0)
    t = board.telemetry
    assert t is not None and t.configured and not t.failsafe and t.battery_mv > 0
    stopped = time.monotonic()  # no more DRIVE: the board's watchdog must trip at 250 ms
    assert wait_for(lambda: board.telemetry is not None and board.telemetry.failsafe, 1.0)
    assert 0.2 < time.monotonic() - stopped < 0.5
    assert board.telemetry.applied_steering_us == 1500  # type: ignore[union-attr]


def test_the_board_latches_an_estop(board: SerialActuator) -> None:
    board.send(ESTOP)
    assert wait_for(lambda: board.telemetry is not None and board.telemetry.estop, 2.0)
    board.send(Command(0.0, 0.0))  # the release
    board.send(Command(0.0, 0.0))
    assert wait_for(lambda: board.telemetry is not None and not board.telemetry.estop, 2.0)
