"""Hostile files and flags through the real CLI: a number of 5,000 digits, arrays nested 5,000
deep, 1e999, a 10 MB file, NUL bytes, bytes that are not UTF-8. Each is exit 1 and exactly
one `car: error:` line naming the file (and the key where it can be found), never a
traceback or an internal error."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from car.cli import main
from car.config import load_config, update_config_file
from car.errors import ConfigError

DIGITS = "1" * 5000
DEEP = "[" * 5000 + "]" * 5000


def one_error(capsys: pytest.CaptureFixture[str], code: int) -> str:
    """The single error line of a run that must have failed with exit 1."""
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 1, err
    assert len(lines) == 1 and lines[0].startswith("car: error: "), err
    assert "internal error" not in err and "Traceback" not in err and len(lines[0]) < 400
    return lines[0]


@pytest.mark.parametrize(("text", "message"), [
    (f"[drive]\nrate_hz = {DIGITS}\n", "line 2 (drive.rate_hz): a number of 5000 digits is "
                                       "too long"),
    (f"# mine\n[drive]\nmax_throttle = 0.5\nrate_hz = -{DIGITS}\n",
     "line 4 (drive.rate_hz): a number of 5000 digits is too long"),
    (f"[drive]\nrate_hz = {DEEP}\n", "line 2 (drive.rate_hz): arrays or tables nested too "
                                     "deeply"),
    ("[web]\ntoken = " + "{a=" * 5000 + "1" + "}" * 5000 + "\n",
     "line 2 (web.token): arrays or tables nested too deeply"),
    ("[drive]\nrate_hz = [[[[1]]]]\n", "drive.rate_hz must be a number, got [...] (list)"),
    ("[drive]\nrate_hz = 1e999\n", "drive.rate_hz must be a finite number, got inf"),
    ("[lens]\nfx = nan\n", "lens.fx must be a finite number, got nan"),
    ("[lens]\nfx = 0x" + "f" * 6000 + "\n", "lens.fx must be a finite number, got an "
                                            "integer of about 7225 digits"),
    ("[actuator]\nbaud = " + "9" * 4000 + "\n", "actuator.baud must be a 64-bit integer, got "
                                                "an integer of about 4001 digits"),
    ("[camera]\nsource = '" + "a" * 10_000 + "'\n", "camera.source is 10000 characters long"),
    ('[paths]\ndata_dir = "a\\u0000b"\n', "paths.data_dir must be one line of printable "
                                          "text; it holds '\\x00' at position 1"),
    ("[drive]\nrate_hz = 3\x00\n", "not valid TOML"),
    ('[drive]\n"rate\\nhz" = 3\n', "unknown key 'drive.rate\\nhz'"),
    ("[drive]\n" + "k" * 5000 + " = 3\n", "unknown key 'drive.kkkkkkkk"),
])
def test_hostile_car_toml_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            text: str, message: str) -> None:
    path = tmp_path / "car.toml"
    path.write_text(text, encoding="utf-8")
    line = one_error(capsys, main(["config", "show", "--config", str(path)]))
    assert line.startswith(f"car: error: {path}: ") and message in line


@pytest.mark.parametrize(("data", "message"), [
    (b"[drive]\nrate_hz = 3 # \xff\xfe\n", "not UTF-8 text (byte 0xff at line 2)"),
    (b"[camera]\nsource = '" + b"a" * 10_000_000 + b"'\n", "too large"),
])
def test_hostile_bytes_in_car_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch, data: bytes,
                                   message: str) -> None:
    path = tmp_path / "car.toml"
    path.write_bytes(data)
    monkeypatch.setenv("CAR_CONFIG", str(path))  # found through $CAR_CONFIG this time
    line = one_error(capsys, main(["config", "show"]))
    assert line.startswith(f"car: error: {path}: the config file is ") and message in line


@pytest.mark.parametrize(("value", "message"), [
    (DIGITS, "a number of 5000 digits is too long"),
    ("-" + DIGITS, "a number of 5000 digits is too long"),
    (DEEP, "arrays or tables nested too deeply"),
    ("[" * 5000, "arrays or tables nested too deeply"),
    ("0x" + "f" * 6000, "drive.rate_hz must be a finite number, got an integer of about"),
])
def test_hostile_set_values_name_the_flag(capsys: pytest.CaptureFixture[str], value: str,
                                          message: str) -> None:
    line = one_error(capsys, main(["config", "show", "--set", f"drive.rate_hz={value}"]))
    assert line.startswith(f"car: error: --set 'drive.rate_hz={value[:20]}") and message in line


def test_a_string_setting_takes_odd_text_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_config(None, ["camera.source=[[1]]"]).camera.source == "[[1]]"
    line = one_error(capsys, main(["config", "show", "--set", f"camera.source={DEEP}"]))
    assert "camera.source is 10000 characters long; at most 4096" in line


def test_a_hostile_key_in_set_is_clipped(capsys: pytest.CaptureFixture[str]) -> None:
    line = one_error(capsys, main(["config", "show", "--set", f"drive.{'x' * 5000}=1"]))
    assert "unknown key 'drive.xxxx" in line


def test_update_config_file_refuses_a_hostile_file_and_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "car.toml"
    text = f"[drive]\nrate_hz = {DIGITS}\n"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        update_config_file(path, {"steering": {"left_us": 1100}})
    assert str(error.value).startswith(f"{path}: line 2 (drive.rate_hz): a number of 5000 ")
    assert path.read_text() == text and not (tmp_path / "car.toml.tmp").exists()
    path.write_bytes(b"[drive]\nrate_hz = 30 # \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        update_config_file(path, {"steering": {"left_us": 1100}})


@pytest.mark.parametrize(("text", "message"), [
    ('{"name": "x", "width_m": ' + DIGITS + ', "centerline": []}',
     'line 1 (key "width_m"): a number of 5000 digits is too long'),
    ('{"name": "x",\n"centerline": ' + DEEP + "}",
     'line 2 (key "centerline"): arrays or objects nested too deeply'),
    ('{"name": "x", "width_m": 1e999, "centerline": [[0, 0], [9, 0], [9, 9], [0, 9]]}',
     "width_m = inf must be a number"),
    ('{"name": "x\u0000"}', "bad JSON at line 1"),
])
def test_hostile_track_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                             message: str) -> None:
    path = tmp_path / "track.json"
    path.write_text(text, encoding="utf-8")
    code = main(["sim", "view", "--track", str(path), "--out", str(tmp_path / "view.png")])
    line = one_error(capsys, code)
    assert line.startswith(f"car: error: {path}: ") and message in line


@pytest.mark.parametrize(("data", "message"), [
    (b'{"name": "\xff"}', "the track file is not UTF-8 text (byte 0xff at line 1)"),
    (b'{"name": "' + b"a" * 9_000_000 + b'"}', "the track file is too large"),
])
def test_hostile_track_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes,
                             message: str) -> None:
    path = tmp_path / "track.json"
    path.write_bytes(data)
    code = main(["sim", "view", "--track", str(path), "--out", str(tmp_path / "view.png")])
    assert message in one_error(capsys, code)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def test_hostile_calibration_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "views"
    folder.mkdir()
    (folder / "a_text.png").write_text("not an image")
    (folder / "b_bomb.png").write_bytes(png_header_only(50_000, 50_000))
    line = one_error(capsys, main(["calibrate", "camera", "--images", str(folder)]))
    assert line == (f"car: error: {folder}: none of its 2 images could be read (b_bomb.png: "
                    "too many pixels for a camera photo)")


def test_read_json_names_the_file_line_and_key(tmp_path: Path) -> None:
    from car.datafile import read_json
    from car.errors import CarError

    path = tmp_path / "ref.json"
    path.write_text('{"a": 1,\n "records": [1, 2, ' + DIGITS + "]}")
    with pytest.raises(CarError) as error:
        read_json(path, "replay reference")
    assert str(error.value) == (f'{path}: line 2 (key "records"): a number of 5000 digits is '
                                "too long (at most 100)")
    path.write_bytes(b"{}" + b" " * 100)
    with pytest.raises(CarError, match=r"the replay reference is too large \(over 100 bytes\)"):
        read_json(path, "replay reference", max_bytes=100)
    with pytest.raises(CarError, match="cannot read the replay reference: No such file"):
        read_json(tmp_path / "missing.json", "replay reference")
    assert read_json(path, "replay reference", max_bytes=200) == {}


@pytest.mark.parametrize(("text", "says"), [
    ('{"format": ' + "1" * 5000 + "}", 'line 1 (key "format"): a number of 5000 digits'),
    ("[" * 5000 + "]" * 5000, "nested too deeply")])
def test_a_hostile_replay_reference_is_one_error_line(tmp_path: Path, text: str,
                                                      says: str) -> None:
    from car.errors import CarError
    from car.replay import load_reference

    ref = tmp_path / "ref.json"
    ref.write_text(text)
    with pytest.raises(CarError) as info:
        load_reference(ref)
    assert str(info.value).startswith(f"{ref}: ") and says in str(info.value)
    assert "\n" not in str(info.value)
