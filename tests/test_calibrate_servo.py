"""`car calibrate steering|throttle`: scripted key presses against the MCU emulator on a pty,
and the non-interactive --set form; both write a car.toml that loads."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from calibration.servo import STEERING, ServoSession
from car.cli import main
from car.config import SteeringConfig, load_config
from car.mcu.emulator import PtyEmulator
from tests.waiting import wait_for


@pytest.fixture
def toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CAR_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "car.toml"
    path.write_text("# my car\n[actuator]\nconnect_timeout_s = 0.5\n")
    return path


def keys(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def test_steering_by_keys(emu: PtyEmulator, toml: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    # Right is 1500 + 4×50 + 2×10 = 1720; left 1500 - 7×50 = 1150; centre 1500 + 10 = 1510.
    keys(monkeypatch, "DDDDddr\n0AAAAAAAl\n0dc\nw\n")
    assert main(["calibrate", "steering", "--port", emu.path]) == 0
    out = capsys.readouterr().out
    assert "marked steering.right_us = 1720 µs (full right)" in out
    assert "wrote steering.left_us = 1150, steering.center_us = 1510, steering.right_us = " \
           "1720 into car.toml" in out
    config = load_config(toml)
    s = config.steering
    assert (s.left_us, s.center_us, s.right_us) == (1150, 1510, 1720)
    assert config.actuator.connect_timeout_s == 0.5 and "# my car" in toml.read_text()
    assert emu.core.limits.steer == (500, 1500, 2500)  # opened for the session
    assert emu.core.counts.drives > 5
    # ends neutral (the emulator's thread may take the last frame a moment after main returns)
    assert wait_for(lambda: emu.core.outputs == (1500, 1500)), emu.core.outputs


def test_throttle_by_keys_with_the_double_tap(emu: PtyEmulator, toml: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    keys(monkeypatch, "DDDDf0AAAxb0dn\nw\n")
    assert main(["calibrate", "throttle", "--port", emu.path]) == 0
    out = capsys.readouterr()
    assert "double tap: 1350 / 1500 / 1350 µs" in out.out
    throttle = [thr for _, (_, thr) in emu.emulator.outputs]
    assert _contains(throttle, [1350, 1500, 1350])  # on the wire, in that order
    assert "LIFT THE DRIVEN WHEELS" in out.err
    t = load_config(toml).throttle
    assert (t.reverse_us, t.neutral_us, t.forward_us) == (1350, 1510, 1700)


def test_bad_marks_are_refused_and_quit_writes_nothing(emu: PtyEmulator, toml: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    before = toml.read_text()
    keys(monkeypatch, "Dlr?wzq\n")  # left == right
    assert main(["calibrate", "steering", "--port", emu.path]) == 1
    out = capsys.readouterr().out
    assert "not written: steering.left_us and right_us are both 1550 µs" in out
    assert "unknown key 'z'" in out and "keys: a/d = -/+10 µs" in out
    assert "quit: nothing written" in out and toml.read_text() == before
    keys(monkeypatch, "DDD")  # input ends without `w`
    assert main(["calibrate", "steering", "--port", emu.path]) == 1
    assert "input ended without `w`: nothing written" in capsys.readouterr().out
    keys(monkeypatch, "A" * 30 + "l\nq\n")  # the pulse never goes below 500 µs
    assert main(["calibrate", "steering", "--port", emu.path]) == 1
    assert "marked steering.left_us = 500 µs" in capsys.readouterr().out


def test_non_interactive_set(toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "steering", "--set", "steering.left_us=1900", "--set",
                 "steering.right_us=1100", "--set", "steering.invert=true"]) == 0
    s = load_config(toml).steering
    assert (s.left_us, s.center_us, s.right_us, s.invert) == (1900, 1500, 1100, True)
    assert "wrote steering.left_us = 1900, steering.right_us = 1100, steering.invert = " \
           "True into car.toml" in capsys.readouterr().out
    before = toml.read_text()
    for argv, message in (
            (["steering", "--set", "steering.right_us=1900"], "are both 1900 µs; the two ends "
                                                              "must differ"),
            (["throttle", "--set", "throttle.forward_us=2600"], "must be at most 2500"),
            (["throttle", "--set", "throttle.reverse_us=400"], "must be at least 500"),
            (["throttle", "--set", "throttle.neutral_us=2100"], "throttle.neutral_us must lie "
                                                                "strictly between")):
        assert main(["calibrate", *argv]) == 1
        assert message in capsys.readouterr().err
    assert toml.read_text() == before


def test_a_missing_port_is_one_clear_line(toml: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    assert main(["calibrate", "steering", "--port", "/dev/ttyNOPE3"]) == 1
    assert "serial port /dev/ttyNOPE3 does not exist" in capsys.readouterr().err


def _contains(seq: list[int], run: list[int]) -> bool:
    return any(seq[i:i + len(run)] == run for i in range(len(seq)))


class _DownLink:
    """A link that is down: what a session sees while the MCU reconnects."""

    fault = "MCU link on /dev/ttyACM0 lost: no telemetry for 800 ms; reconnecting"
    heartbeat_s = 0.05

    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []

    def drive(self, steering_us: int, throttle_us: int) -> None:
        self.sent.append((steering_us, throttle_us))


def test_keys_wait_while_the_link_is_down() -> None:
    out = io.StringIO()
    session = ServoSession(_DownLink(), STEERING, SteeringConfig(), 1500, out)
    assert session.press("d") == (False, None) and session.pulse == 1500
    assert session.press("l") == (False, None) and session.values["left_us"] == 1000
    assert "ignored 'd': MCU link on /dev/ttyACM0 lost" in out.getvalue()
    assert session.press("q") == (True, None)  # quitting still works


def test_calibrate_refuses_the_other_channels_keys(toml: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "steering", "--set", "throttle.forward_us=1900"]) == 1
    assert "`car calibrate steering` writes [steering]; use `car calibrate throttle`" in \
        capsys.readouterr().err
