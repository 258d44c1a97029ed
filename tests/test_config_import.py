"""`car config import myconfig.py`: a donkeycar config read without running it, its PWM
ticks turned into µs at the frequency the PCA9685 really runs at, written into car.toml with
its comments kept; and the one-line refusals."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from car.cli import main
from car.config import load_config
from car.config.donkey_import import map_donkey_config, read_myconfig, ticks_to_us
from car.pwm.pca9685 import Pca9685

MYCONFIG_5 = '''
import os
DRIVE_LOOP_HZ = 15
CAMERA_TYPE = "CSIC"
IMAGE_W = 224
IMAGE_H = 224
CAMERA_FRAMERATE = DRIVE_LOOP_HZ
CAR_PATH = os.path.dirname(os.path.realpath(__file__))
PWNED = open(%r, "w").write("ran")
PWM_STEERING_THROTTLE = {
    "PWM_STEERING_PIN": "PCA9685.7:41.3",
    "PWM_STEERING_SCALE": 1.0,
    "PWM_STEERING_INVERTED": False,
    "PWM_THROTTLE_PIN": "PCA9685.7:41.2",
    "PWM_THROTTLE_SCALE": 1.0,
    "PWM_THROTTLE_INVERTED": False,
    "STEERING_LEFT_PWM": 540,
    "STEERING_RIGHT_PWM": 250,
    "THROTTLE_FORWARD_PWM": 480,
    "THROTTLE_STOPPED_PWM": 370,
    "THROTTLE_REVERSE_PWM": 250,
}
'''

MYCONFIG_4 = '''
DRIVE_TRAIN_TYPE = "SERVO_ESC"
PCA9685_I2C_ADDR = 0x40
PCA9685_I2C_BUSNUM = 1
STEERING_CHANNEL = 0
STEERING_LEFT_PWM = 260
STEERING_RIGHT_PWM = 500
THROTTLE_CHANNEL = 4
THROTTLE_FORWARD_PWM = 400 + 100
THROTTLE_STOPPED_PWM = 370
THROTTLE_REVERSE_PWM = 220
'''


def test_ticks_are_the_pulse_the_board_really_makes() -> None:
    board = Pca9685(None, 0x40, 60.0)  # type: ignore[arg-type]  # donkeycar's 60 Hz
    for ticks in (220, 290, 370, 460, 500):
        assert ticks_to_us(ticks) == round(board.us_for(ticks))  # 59.84 Hz, not 60
    assert ticks_to_us(460) == 1877 and ticks_to_us(370) == 1510


def test_a_donkeycar_5_config_is_read_without_running_it(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    path = tmp_path / "myconfig.py"
    path.write_text(MYCONFIG_5 % str(canary))
    given, skipped = read_myconfig(path)
    assert not canary.exists()  # never executed
    assert skipped == ["CAR_PATH", "PWNED"]
    assert given["CAMERA_FRAMERATE"] == 15  # a name assigned before is followed
    mapped = map_donkey_config(given)
    assert mapped.changes["pca9685"] == {"bus": 7, "address": 0x41, "steering_channel": 3,
                                         "throttle_channel": 2, "frequency_hz": 60.0}
    assert mapped.changes["steering"] == {"left_us": 2203, "right_us": 1020,
                                          "center_us": 1612}
    assert mapped.changes["throttle"] == {"forward_us": 1958, "neutral_us": 1510,
                                          "reverse_us": 1020}
    assert mapped.changes["camera"] == {"width": 224, "height": 224, "fps": 15.0,
                                        "source": "csi"}
    assert mapped.changes["drive"]["rate_hz"] == 15.0
    assert mapped.changes["actuator"] == {"driver": "pca9685"}


def test_a_donkeycar_4_servo_esc_config(tmp_path: Path) -> None:
    path = tmp_path / "myconfig.py"
    path.write_text(MYCONFIG_4)
    mapped = map_donkey_config(read_myconfig(path)[0])
    assert mapped.changes["pca9685"]["steering_channel"] == 0
    assert mapped.changes["pca9685"]["throttle_channel"] == 4
    assert mapped.changes["throttle"]["forward_us"] == ticks_to_us(500)
    assert mapped.changes["steering"]["left_us"] < mapped.changes["steering"]["right_us"]
    assert "camera.source" not in mapped.why  # PICAM, the default: no direct match
    assert any("CAMERA_TYPE = 'PICAM'" in note for note in mapped.notes)


def test_import_writes_car_toml_and_keeps_its_comments(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAR_CONFIG", raising=False)
    (tmp_path / "myconfig.py").write_text(MYCONFIG_4)
    toml = tmp_path / "car.toml"
    toml.write_text("# my car, my notes\n[web]\nport = 8890\n")
    assert main(["config", "import", "myconfig.py", "--dry-run"]) == 0
    assert "dry run: nothing written" in capsys.readouterr().out
    assert "pca9685" not in toml.read_text()
    assert main(["config", "import", "myconfig.py"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"throttle.forward_us = 2040 +# THROTTLE_FORWARD_PWM 500 ticks at 59.84 Hz",
                     out)
    assert "pca9685.address = 0x40" in out
    config = load_config(toml)
    assert config.actuator.driver == "pca9685" and config.pca9685.throttle_channel == 4
    assert config.web.port == 8890 and "# my car, my notes" in toml.read_text()


@pytest.mark.parametrize("text, message", [
    ('DRIVE_TRAIN_TYPE = "MM1"\n', "DRIVE_TRAIN_TYPE = 'MM1': car imports a PCA9685 servo "
                                  "and ESC build"),
    ('PWM_STEERING_THROTTLE = {"PWM_STEERING_PIN": "RPI_GPIO.BOARD.33"}\n',
     "PWM_STEERING_PIN = 'RPI_GPIO.BOARD.33' is not a PCA9685 pin"),
    ('PWM_STEERING_THROTTLE = {"PWM_THROTTLE_PIN": "PCA9685.1:41.0"}\n',
     "car drives both from one board"),
    ("IMAGE_W = (\n", "line 1: not valid Python"),
    ('PWM_STEERING_THROTTLE = {"STEERING_LEFT_PWM": 900}\n',
     "steering.left_us must be at most 2500, got 3672"),
])
def test_what_cannot_be_imported_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str], text: str,
                                             message: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAR_CONFIG", raising=False)
    (tmp_path / "myconfig.py").write_text(text)
    assert main(["config", "import", "myconfig.py"]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "car.toml").exists()  # nothing half-made
