"""`car mcu emulate`, `car mcu status`, and `car drive --actuator serial`: hardware in the loop
with the emulator on a pty, the rc controller, and the errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from car.cli import main
from car.mcu.emulator import PtyEmulator, RcSignal
from car.tub.reader import Tub
from tests.waiting import wait_for

FIXTURE = Path(__file__).parent / "fixtures" / "pilot_linear.onnx"
CAR = [sys.executable, "-m", "car.cli"]


def test_hardware_in_the_loop_drives_the_sim_with_the_pulses_the_mcu_applied(
        emu: PtyEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["drive", "--model", str(FIXTURE), "--sim", "oval", "--actuator", "serial",
            "--port", emu.path, "--duration", "2", "--json", "--record", str(tmp_path / "tub")]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    mcu = summary["mcu"]
    assert mcu["firmware"] == "car-emulator" and mcu["losses"] == 0 and mcu["telemetry"] > 50
    assert summary["safety"]["actuator_faults"] == 0
    assert wait_for(lambda: emu.core.counts.drives >= summary["ticks"])
    assert emu.core.counts.duplicates == 0
    records = list(Tub(tmp_path / "tub").records())
    assert max(r["sim/speed"] for r in records) > 0.3  # the MCU's pulses moved the car
    assert wait_for(lambda: emu.core.outputs == (1500, 1500))  # the drive ended neutral


def test_the_rc_controller_records_the_transmitter(
        emu: PtyEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    emu.set_rc(RcSignal.parse("1700,1600"))
    argv = ["drive", "--model", str(FIXTURE), "--sim", "oval", "--actuator", "serial",
            "--port", emu.path, "--duration", "1.5", "--json", "--mode", "user",
            "--controller", "rc", "--record", str(tmp_path / "tub")]
    assert main(argv) == 0
    records = list(Tub(tmp_path / "tub").records())[5:]
    assert [r["user/angle"] for r in records] == pytest.approx([0.4] * len(records))
    assert [r["user/throttle"] for r in records] == pytest.approx([0.2] * len(records))
    assert records[-1]["sim/speed"] > 0.2


@pytest.mark.parametrize("argv, message", [
    (["--sim", "oval", "--controller", "rc"], "--controller rc reads the transmitter through "
                                              "the MCU: add --actuator serial"),
    (["--camera", "replay:x", "--actuator", "sim"], "--actuator sim needs --sim"),
    (["--sim", "oval", "--actuator", "serial", "--port", "/dev/ttyNOPE7"],
     "serial port /dev/ttyNOPE7 does not exist"),
    (["--sim", "oval", "--actuator", "serial", "--port", "/dev/ttyNOPE7", "--hz", "5"],
     "actuator.timeout_ms = 250 is shorter than 2.5 loop periods at 5 Hz (500 ms): the MCU "
     "would fail safe between ticks"),
])
def test_car_drive_actuator_errors(argv: list[str], message: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drive", "--model", str(FIXTURE), *argv]) == 1
    assert message in capsys.readouterr().err


def test_car_mcu_emulate_serves_until_terminated(capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.Popen([*CAR, "mcu", "emulate", "--rc", "sweep"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/")
        assert main(["mcu", "status", "--port", port, "--seconds", "0.3"]) == 0
        out = capsys.readouterr().out
        assert "firmware 'car-emulator', protocol v1" in out
        assert re.search(r"RC \d+/1560 µs, battery 8\.\d\d V, status FAILSAFE CONFIGURED", out)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "1 CONFIG, 1 PING" in err and "FAILSAFE on" in err


def test_car_mcu_emulate_detach_returns_the_port_at_once(tmp_path: Path) -> None:
    log = tmp_path / "emu.log"
    done = subprocess.run([*CAR, "mcu", "emulate", "--detach", "--log", str(log)],
                          capture_output=True, text=True, timeout=60)  # a hang, not a speed
    assert done.returncode == 0
    port = done.stdout.strip()
    pid = int(re.search(r"pid (\d+)", done.stderr).group(1))  # type: ignore[union-attr]
    try:  # the command has returned, and the emulator it left behind serves the port
        assert os.path.exists(port)
        assert main(["mcu", "status", "--port", port, "--seconds", "0"]) == 0
    finally:
        os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: "emulator stopped" in log.read_text(), 10)
    assert "CONFIGURED on" in log.read_text()


def test_car_mcu_emulate_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mcu", "emulate", "--rc", "loud"]) == 1
    assert "expected none, center, sweep or STEER_US,THROTTLE_US" in capsys.readouterr().err


def test_hardware_in_the_loop_when_the_mcu_hangs(emu: PtyEmulator, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    def hang_once_driving() -> None:  # the MCU stops answering after 1 s of driving
        wait_for(lambda: emu.core.outputs[1] > 1500, 20.0)
        drives = emu.core.counts.drives
        wait_for(lambda: emu.core.counts.drives >= drives + 20, 20.0)  # 20 ticks at 20 Hz
        emu.frozen.set()

    threading.Thread(target=hang_once_driving, daemon=True).start()
    argv = ["drive", "--model", str(FIXTURE), "--sim", "oval", "--actuator", "serial",
            "--port", emu.path, "--duration", "5", "--json", "--record", str(tmp_path / "t")]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["safety"]["actuator_faults"] > 5 and summary["mcu"]["losses"] == 1
    records = list(Tub(tmp_path / "t").records())
    assert records[-1]["car/throttle"] == 0.0 and records[-1]["car/steering"] == 0.0
    assert records[-1]["sim/speed"] < max(r["sim/speed"] for r in records) / 2  # stopping


def test_a_latched_mcu_starts_the_drive_estopped_until_cleared(
        emu: PtyEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    import serial

    from car.mcu import protocol as p

    with serial.Serial(emu.path, 115200, timeout=0.1) as port:  # a session that died stopped
        port.write(p.encode(p.Drive(1500, 1500, p.ESTOP), 40))
        assert wait_for(lambda: emu.core.estop)
    argv = ["drive", "--model", str(FIXTURE), "--sim", "oval", "--actuator", "serial",
            "--port", emu.path, "--duration", "1", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["safety"]["estop_ticks"] == summary["ticks"]
    assert "has an e-stop latched from an earlier session" in captured.err
    assert wait_for(lambda: emu.core.counts.drives > summary["ticks"]) and emu.core.estop
    assert main(["mcu", "status", "--port", emu.path, "--seconds", "0"]) == 0
    assert emu.core.estop  # looking changes nothing
    assert main(["mcu", "status", "--port", emu.path, "--seconds", "0", "--clear-estop"]) == 0
    assert "the e-stop latch is cleared" in capsys.readouterr().out
    assert wait_for(lambda: not emu.core.estop) and emu.core.outputs == (1500, 1500)
