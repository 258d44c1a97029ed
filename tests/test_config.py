"""car.toml: defaults, the commented file, errors that name the key and the file, overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from car.cli import main
from car.config import MAX_LOOP_HZ, Config, load_config, render_toml, write_default_config
from car.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CAR_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "car.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    config = load_config()
    assert config == Config() and config.source == "defaults"
    assert config.drive.rate_hz == 20.0 and config.steering.center_us == 1500


def test_init_writes_a_commented_file_that_reads_back(tmp_path: Path) -> None:
    path = write_default_config(tmp_path / "car.toml")
    text = path.read_text()
    assert text.count("\n# ") > 20 and "[actuator]" in text and "steering +1 is full right" in text
    assert load_config(path) == Config()
    with pytest.raises(ConfigError, match="already exists; pass --force"):
        write_default_config(path)
    path.write_text("[drive]\nrate_hz = 30\n")
    write_default_config(path, force=True)
    assert load_config(path).drive.rate_hz == 20.0


def test_the_file_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, "[drive]\nrate_hz = 30\n[camera]\nsource = 'usb:0'\n")
    config = load_config(path)
    assert config.drive.rate_hz == 30.0 and isinstance(config.drive.rate_hz, float)
    assert config.camera.source == "usb:0" and config.source == str(path)
    assert load_config().drive.rate_hz == 30.0  # ./car.toml is found by itself


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        load_config().drive.rate_hz = 5  # type: ignore[misc]


@pytest.mark.parametrize(("text", "message"), [
    ("[drive]\nrate_hzz = 30\n", "car.toml: unknown key 'drive.rate_hzz' (did you mean "
                                 "'drive.rate_hz'?)"),
    ("[drives]\nrate_hz = 30\n", "car.toml: unknown section [drives] (did you mean 'drive'?)"),
    ("[drive]\nrate_hz = 'fast'\n", "car.toml: drive.rate_hz must be a number, got \"fast\""),
    ("[actuator]\nbaud = 9600.5\n", "car.toml: actuator.baud must be an integer, got 9600.5"),
    ("[drive]\nmax_throttle = 1.5\n", "car.toml: drive.max_throttle must be at most 1"),
    ("[drive]\nstart_mode = 'auto'\n", "drive.start_mode must be one of user, local_angle, "
                                       "local"),
    ("[steering]\nleft_us = 1600\n", "steering.center_us must lie strictly between"),
    ("[drive\nrate_hz = 3\n", "car.toml: not valid TOML"),
    ("rate_hz = 3\n", "car.toml: unknown section [rate_hz]"),
    ("[drive]\nrate_hz = " + "1" * 5000 + "\n",
     "car.toml: line 2 (drive.rate_hz): a number of 5000 digits is too long"),
    ("[drive]\nrate_hz = " + "[" * 5000 + "]" * 5000 + "\n",
     "car.toml: line 2 (drive.rate_hz): arrays or tables nested too deeply"),
    ("[drive]\nrate_hz = 1e999\n", "car.toml: drive.rate_hz must be a finite number, got inf"),
])
def test_errors_name_the_key_and_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in str(error.value) and str(tmp_path) in str(error.value)


def test_overrides_beat_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[drive]\nrate_hz = 30\n")
    config = load_config(path, ["drive.rate_hz=45", "camera.source=csi", "record.jpeg_quality=80"])
    assert config.drive.rate_hz == 45.0 and config.camera.source == "csi"
    assert config.record.jpeg_quality == 80
    assert config.source == f"{path} + 3 override(s)"


@pytest.mark.parametrize(("item", "message"), [
    ("drive.rate_hz", "expected SECTION.KEY=VALUE"),
    ("drive.speed=3", "--set 'drive.speed=3': unknown key 'drive.speed'"),
    ("drive.rate_hz=fast", "--set 'drive.rate_hz=fast': drive.rate_hz must be a number"),
    ("drive.rate_hz=" + "1" * 5000, "--set 'drive.rate_hz=1111"),
    ("drive.rate_hz=" + "1" * 5000, "...: a number of 5000 digits is too long"),
    ("drive.rate_hz=" + "[" * 5000, "...: arrays or tables nested too deeply"),
])
def test_bad_overrides_name_the_flag(item: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(None, [item])


def test_rate_hz_is_bounded_like_the_loop(capsys: pytest.CaptureFixture[str]) -> None:
    """drive.rate_hz takes what the drive loop runs (1 to 200 Hz), no more."""
    assert load_config(None, [f"drive.rate_hz={MAX_LOOP_HZ}"]).drive.rate_hz == MAX_LOOP_HZ == 200
    refused = "--set 'drive.rate_hz=500': drive.rate_hz must be at most 200, got 500.0"
    with pytest.raises(ConfigError) as error:
        load_config(None, ["drive.rate_hz=500"])
    assert str(error.value) == refused
    assert main(["config", "show", "--set", "drive.rate_hz=500"]) == 1
    assert capsys.readouterr().err == f"car: error: {refused}\n"
    with pytest.raises(ConfigError, match=r"drive\.rate_hz must be at least 1, got 0\.5"):
        load_config(None, ["drive.rate_hz=0.5"])


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found; create one with"):
        load_config(tmp_path / "nope.toml")


def test_env_var_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text("[paths]\ndata_dir = '/data/tubs'\n")
    monkeypatch.setenv("CAR_CONFIG", str(path))
    assert load_config().paths.data_dir == "/data/tubs"


def test_cli_init_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "init"]) == 0
    assert "wrote car.toml" in capsys.readouterr().out
    assert main(["config", "init"]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(["config", "show", "--set", "drive.rate_hz=25"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# effective config, from car.toml + 1 override(s)")
    assert "rate_hz = 25.0" in out
    assert main(["config", "show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["actuator"]["baud"] == 115200
    (tmp_path / "car.toml").write_text("[drive]\nrate_hz = true\n")
    assert main(["config", "show"]) == 1
    err = capsys.readouterr().err
    assert err == "car: error: car.toml: drive.rate_hz must be a number, got True (bool)\n"


def test_render_without_comments_round_trips(tmp_path: Path) -> None:
    config = load_config(None, ["drive.rate_hz=33", "camera.source=gst:videotestsrc ! appsink"])
    path = write(tmp_path, render_toml(config, comments=False))
    assert load_config(path) == config


def test_a_string_setting_keeps_text_that_looks_like_toml() -> None:
    config = load_config(None, ["camera.source=true", "paths.data_dir=2024"])
    assert config.camera.source == "true" and config.paths.data_dir == "2024"


def test_update_config_file_keeps_comments_and_refuses_bad_values(tmp_path: Path) -> None:
    from car.config import update_config_file

    path = write(tmp_path, "# mine\n[drive]\nrate_hz = 30  # fast\n\n[steering]\n"
                           "# my servo\nleft_us = 1100\n")
    config = update_config_file(path, {"steering": {"left_us": 1900, "right_us": 1100},
                                       "throttle": {"neutral_us": 1510}})
    text = path.read_text()
    assert "# mine" in text and "# my servo" in text and "rate_hz = 30  # fast" in text
    assert config.steering.left_us == 1900 and config.steering.right_us == 1100
    assert config.throttle.neutral_us == 1510 and config.drive.rate_hz == 30
    assert load_config(path) == config
    assert "left_us = 1100" in (tmp_path / "car.toml.bak").read_text()
    with pytest.raises(ConfigError, match=r"steering\.center_us must lie strictly between"):
        update_config_file(path, {"steering": {"left_us": 1500}})
    with pytest.raises(ConfigError, match="at most 2500"):
        update_config_file(path, {"steering": {"right_us": 2600}})
    assert load_config(path) == config  # nothing written
    fresh = update_config_file(tmp_path / "new" / "car.toml", {"lens": {"fx": 100.5}})
    assert fresh.lens.fx == 100.5 and fresh.steering.center_us == 1500
    assert not (tmp_path / "new" / "car.toml.bak").exists()  # nothing to back up
    path.write_text("[steering]  # my servo\nleft_us = 1100\n")
    assert update_config_file(path, {"steering": {"left_us": 1000}}).steering.left_us == 1000
    assert path.read_text().count("[steering]") == 1


def test_an_edit_keeps_a_keys_own_comment_and_multi_line_values(tmp_path: Path) -> None:
    from car.config import update_config_file

    path = write(tmp_path, '[camera]\nsource = """\nsim"""  # the embedded one\n\n[steering]\n'
                           "left_us = 1100  # measured on the bench\n# keep me\n")
    config = update_config_file(path, {"steering": {"left_us": 1200},
                                       "camera": {"source": "usb:0"}})
    text = path.read_text()
    assert "left_us = 1200  # measured on the bench" in text and "# keep me" in text
    assert 'source = "usb:0"  # the embedded one' in text and '"""' not in text
    assert config.camera.source == "usb:0" and load_config(path) == config
