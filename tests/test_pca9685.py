"""The PCA9685 board: the register-level driver and the actuator against the emulator (real
register bytes, the chip's rules), `car drive --actuator pca9685` with the simulated car
following the board's pulses, neutral on every way out, and the one-line errors."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
from pathlib import Path

import pytest

from car.cli import main
from car.config import Config, Pca9685Config, load_config
from car.controllers import ScriptedController
from car.errors import CarError
from car.frames import NEUTRAL, Command, Mode
from car.loop import TickWatchdog
from car.pwm import actuator as pwm_actuator
from car.pwm.actuator import Pca9685Actuator, open_bus
from car.pwm.emulator import Pca9685Emulator
from car.pwm.pca9685 import (
    AI,
    MODE1,
    MODE2,
    OUTDRV,
    PRE_SCALE,
    SLEEP,
    Pca9685,
    prescale_for,
    real_frequency_hz,
)
from car.run import Run, RunSpec
from car.tub.reader import Tub

FIXTURE = Path(__file__).parent / "fixtures" / "pilot_linear.onnx"
TICK_US = 1e6 / (4096 * 59.84)  # one count at 60 Hz asked (prescale 101): 4.08 µs


def config(**pca: object) -> Config:
    return dataclasses.replace(Config(), pca9685=dataclasses.replace(Pca9685Config(), **pca))


@pytest.fixture
def board(monkeypatch: pytest.MonkeyPatch) -> Pca9685Emulator:
    """An emulated board at 0x40 that every `open_bus` in this process reaches."""
    emu = Pca9685Emulator()
    monkeypatch.setattr(pwm_actuator, "open_bus", lambda number: emu)
    return emu


def test_prescale_follows_the_datasheet_formula() -> None:
    assert prescale_for(60, 25_000_000) == 101  # round(25e6 / (4096 * 60)) - 1
    assert prescale_for(50, 25_000_000) == 121
    assert real_frequency_hz(101, 25_000_000) == pytest.approx(59.84, abs=0.01)
    assert prescale_for(2000, 25_000_000) == 3 and prescale_for(10, 25_000_000) == 255


def test_start_sets_the_frequency_while_asleep_then_wakes() -> None:
    emu = Pca9685Emulator()
    Pca9685(emu, 0x40, 60.0, sleep=lambda s: None).start()
    assert emu.regs[PRE_SCALE] == 101  # the emulator drops PRE_SCALE writes while awake
    assert not emu.regs[MODE1] & SLEEP and emu.regs[MODE1] & AI
    assert emu.regs[MODE2] == OUTDRV
    writes = [(reg, data) for op, reg, data in emu.log if op == "write"]
    sleep_at = writes.index((MODE1, (emu.regs[MODE1] & ~0x80 | SLEEP,)))
    assert writes[sleep_at + 1] == (PRE_SCALE, (101,))


def test_commands_become_the_calibrated_pulses_on_the_wire(board: Pca9685Emulator) -> None:
    actuator = Pca9685Actuator.connect(config())
    assert board.pulse_us(1) == pytest.approx(1500, abs=TICK_US)  # neutral from the start
    assert board.pulse_us(0) == pytest.approx(1500, abs=TICK_US)
    actuator.send(Command(1.0, 0.5))  # steering on output 1, throttle on output 0
    assert board.pulse_us(1) == pytest.approx(2000, abs=TICK_US)
    assert board.pulse_us(0) == pytest.approx(1750, abs=TICK_US)
    actuator.send(Command(-1.0, float("nan")))  # a NaN goes to the middle, not the end
    assert board.pulse_us(1) == pytest.approx(1000, abs=TICK_US)
    assert board.pulse_us(0) == pytest.approx(1500, abs=TICK_US)
    actuator.send(Command(0.3, 0.8, estop=True))
    assert board.pulse_us(0) == pytest.approx(1500, abs=TICK_US)
    actuator.close()
    assert board.pulse_us(0) == pytest.approx(1500, abs=TICK_US) and board.closed
    assert actuator.health().data["sent"] == 3


def test_a_fast_oscillator_is_trimmed_by_oscillator_hz(board: Pca9685Emulator) -> None:
    board.oscillator_hz = 26_500_000  # a real chip 6 % fast
    untrimmed = Pca9685Actuator.connect(config())
    untrimmed.send(Command(1.0, 0.0))
    assert board.pulse_us(1) < 2000 - 50  # every pulse short by the same ratio
    trimmed = Pca9685Actuator.connect(config(oscillator_hz=26_500_000))
    trimmed.send(Command(1.0, 0.0))
    assert board.pulse_us(1) == pytest.approx(2000, abs=5)


def test_a_failed_transfer_is_a_fault_until_the_board_answers(board: Pca9685Emulator) -> None:
    actuator = Pca9685Actuator.connect(config())
    board.fail(1)
    actuator.send(Command(0.0, 0.5))
    assert actuator.fault is not None and "Remote I/O error" in actuator.fault
    board.power_cycle()  # what lost the wires may have lost the board's power too
    actuator.send(Command(0.0, 0.5))
    assert actuator.fault is None and actuator.errors == 1
    assert board.regs[PRE_SCALE] == 101 and board.pulse_us(0) == pytest.approx(1750, abs=5)


def test_a_board_that_reset_itself_is_set_up_again(board: Pca9685Emulator) -> None:
    now = [0.0]
    actuator = Pca9685Actuator.connect(config())
    actuator.clock = lambda: now[0]
    actuator._checked_s = 0.0
    board.power_cycle()  # a brown-out: asleep, outputs off, and no transfer failed
    assert board.pulse_us(0) is None
    now[0] = 1.5
    actuator.send(Command(0.0, 0.2))
    assert actuator.resets == 1 and board.pulse_us(0) == pytest.approx(1600, abs=5)


def test_the_watchdog_sends_neutral_from_its_thread(board: Pca9685Emulator) -> None:
    actuator = Pca9685Actuator.connect(config())
    actuator.send(Command(0.5, 0.6))
    watchdog = TickWatchdog(actuator, 0.05)
    watchdog.start()  # no tick ever finishes: the loop hung
    try:
        deadline = time.monotonic() + 10
        while watchdog.trips == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        watchdog.stop()
    assert watchdog.trips >= 1
    assert board.pulse_us(0) == pytest.approx(1500, abs=TICK_US)
    assert board.pulse_us(1) == pytest.approx(1500, abs=TICK_US)


def test_sends_from_two_threads_never_mix(board: Pca9685Emulator) -> None:
    actuator = Pca9685Actuator.connect(config())

    def hammer(command: Command) -> None:
        for _ in range(300):
            actuator.send(command)

    threads = [threading.Thread(target=hammer, args=(c,)) for c in
               (Command(1.0, 1.0), NEUTRAL)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    steering, throttle = board.pulse_us(1), board.pulse_us(0)
    assert steering == throttle  # both from the last send, never one from each
    assert steering == pytest.approx(2000, abs=TICK_US) or \
        steering == pytest.approx(1500, abs=TICK_US)


def test_drive_with_the_board_in_the_loop(board: Pca9685Emulator, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["drive", "--model", str(FIXTURE), "--sim", "oval", "--actuator", "pca9685",
            "--duration", "2", "--json", "--record", str(tmp_path / "tub")]
    assert main(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["pca9685"]["sent"] >= summary["ticks"] > 20
    assert summary["pca9685"]["i2c_errors"] == 0
    assert "has no watchdog of its own" in captured.err
    records = list(Tub(tmp_path / "tub").records())
    assert max(r["sim/speed"] for r in records) > 0.3  # the board's pulses moved the car
    assert board.pulse_us(0) == pytest.approx(1500, abs=TICK_US)  # it ended neutral
    assert board.closed


def test_an_error_mid_run_still_ends_neutral(board: Pca9685Emulator) -> None:
    spec = RunSpec(sim="oval", actuator="pca9685", rate_hz=50,
                   controller=ScriptedController(Mode.USER, 0.4, 0.7))
    ticks = [0]

    def boom() -> bool:
        ticks[0] += 1
        if ticks[0] > 10:
            raise RuntimeError("a bug somewhere in the loop")
        return False

    with pytest.raises(RuntimeError), Run(spec, Config()) as run:
        run.drive(boom)
    assert board.pulse_us(0) == pytest.approx(1500, abs=TICK_US)
    assert board.pulse_us(1) == pytest.approx(1500, abs=TICK_US)


def test_no_board_at_the_address_is_one_line(board: Pca9685Emulator) -> None:
    with pytest.raises(CarError, match=r"no answer from the PCA9685 at 0x41 on I2C bus 1: "
                                       r"Remote I/O error; check its power") as info:
        Pca9685Actuator.connect(config(address=0x41))
    assert "\n" not in str(info.value) and board.closed


def test_a_missing_bus_is_reported_from_smbus2s_own_error() -> None:
    with pytest.raises(CarError, match=r"cannot open I2C bus 250 \(/dev/i2c-250\): No such "
                                       r"file or directory; enable I2C"):
        open_bus(250)


def test_the_same_output_twice_is_refused(board: Pca9685Emulator) -> None:
    with pytest.raises(CarError, match="both 3; wire the servo and the ESC to two outputs"):
        Pca9685Actuator.connect(config(steering_channel=3, throttle_channel=3))


def test_calibrate_steering_on_the_board(board: Pca9685Emulator, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CAR_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "car.toml").write_text("# my car\n[actuator]\ndriver = \"pca9685\"\n")
    seen: list[float | None] = []
    real_write = board.write_i2c_block_data

    def spy(addr: int, register: int, data: list[int]) -> None:
        real_write(addr, register, data)
        seen.append(board.pulse_us(1))

    board.write_i2c_block_data = spy  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stdin", io.StringIO("DDDDr\n0AAAAl\n0dc\nw\n"))
    assert main(["calibrate", "steering"]) == 0
    assert "wrote steering.left_us = 1300, steering.center_us = 1510, steering.right_us = " \
           "1700 into car.toml" in capsys.readouterr().out
    assert any(p is not None and abs(p - 1700) < TICK_US for p in seen)  # the servo had it
    assert board.pulse_us(1) == pytest.approx(1500, abs=TICK_US) and board.closed
    assert load_config(tmp_path / "car.toml").steering.right_us == 1700
    assert "# my car" in (tmp_path / "car.toml").read_text()
