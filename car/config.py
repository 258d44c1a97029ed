"""The one config file, `car.toml`, read into frozen dataclasses (one per concern).

Every field carries its help text, so `car config init` writes a fully commented file that
can never drift from the code. An unknown key or a value of the wrong type is a ConfigError
naming the key and the file. Flags override the file through ``--set section.key=value``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import sys
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from car.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_FILE = "car.toml"
ENV_VAR = "CAR_CONFIG"


def _field(default: Any, help: str, *, min: float | None = None, max: float | None = None,
           choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with its help text and bounds, checked on load."""
    meta = {"help": help, "min": min, "max": max, "choices": choices}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class CameraConfig:
    """The camera that feeds the drive loop."""

    source: str = _field(
        "sim",
        "Frame source: 'sim' (embedded simulator), 'usb:INDEX', 'csi' (Jetson CSI camera "
        "through GStreamer), 'gst:PIPELINE' or 'replay:TUB_PATH'.",
    )
    width: int = _field(160, "Frame width in pixels.", min=16, max=4096)
    height: int = _field(120, "Frame height in pixels.", min=16, max=4096)
    fps: float = _field(60.0, "Frames per second asked of the camera.", min=1, max=1000)


@dataclass(frozen=True)
class DriveConfig:
    """The drive loop."""

    rate_hz: float = _field(20.0, "Loop rate in Hz (donkeycar's default is 20).", min=1, max=1000)
    max_throttle: float = _field(
        0.5, "Largest throttle the autopilot may command, forward or reverse, in [0, 1].",
        min=0, max=1
    )
    start_mode: str = _field(
        "user", "Mode at start: 'user', 'local_angle' (pilot steers) or 'local' (pilot drives).",
        choices=("user", "local_angle", "local"),
    )
    ai_throttle_mult: float = _field(
        1.0, "The pilot's throttle is multiplied by this before the max_throttle limit.",
        min=0, max=2)
    steering_rate_per_s: float = _field(
        10.0, "Largest change of the commanded steering per second (2 = lock to lock in 1 s); "
        "a limit against a jerking model, not the servo's own speed.", min=0.5, max=1000)
    throttle_rate_per_s: float = _field(
        5.0, "Largest increase of the commanded throttle per second; cutting throttle toward "
        "neutral is never limited.", min=0.1, max=1000)
    hot_reload: bool = _field(
        True, "Reload the model when its file changes, loading it in the background and "
        "swapping it in between two ticks.")


@dataclass(frozen=True)
class ActuatorConfig:
    """The serial microcontroller (MCU) that drives the steering servo and the ESC."""

    driver: str = _field(
        "serial", "What `car drive` sends commands to off the simulator: 'serial' (the MCU) or "
        "'dry' (nothing: commands are computed and timed only).", choices=("serial", "dry"))
    port: str = _field("/dev/ttyACM0", "Serial port of the microcontroller.")
    baud: int = _field(115200, "Serial baud rate (8N1).", min=1200, max=4_000_000)
    timeout_ms: int = _field(
        250, "MCU watchdog: outputs go neutral when no command arrives for this long. The "
        "link counts as lost after 3x this without telemetry.", min=20, max=5000)
    rc_passthrough: bool = _field(
        False, "While the MCU is in failsafe (no command from this computer), pass the RC "
        "receiver's pulses through to the servo and ESC instead of neutral.")
    connect_timeout_s: float = _field(
        3.0, "How long to wait for the MCU to answer PING at connect (an Arduino that resets "
        "when the port opens needs about 2 s).", min=0.1, max=30)


@dataclass(frozen=True)
class SteeringConfig:
    """Steering servo calibration (`car calibrate steering` writes it)."""

    left_us: int = _field(1000, "Servo pulse at full left (steering -1), in µs; may be above "
                          "right_us on a servo mounted the other way.", min=500, max=2500)
    center_us: int = _field(1500, "Servo pulse that drives straight (trim), in µs.",
                            min=500, max=2500)
    right_us: int = _field(2000, "Servo pulse at full right (steering +1), in µs.",
                           min=500, max=2500)
    invert: bool = _field(False, "Swap left and right (steering -1 is then full right).")


@dataclass(frozen=True)
class ThrottleConfig:
    """ESC calibration (`car calibrate throttle` writes it)."""

    reverse_us: int = _field(1000, "ESC pulse at full reverse (throttle -1), in µs.",
                             min=500, max=2500)
    neutral_us: int = _field(1500, "ESC pulse at stop, in µs.", min=500, max=2500)
    forward_us: int = _field(2000, "ESC pulse at full forward (throttle +1), in µs.",
                             min=500, max=2500)
    invert: bool = _field(False, "Swap forward and reverse.")


@dataclass(frozen=True)
class LensConfig:
    """Camera lens intrinsics and distortion (`car calibrate camera` writes them)."""

    undistort: bool = _field(False, "Undistort every camera frame with these values.")
    width: int = _field(0, "Image width the calibration was made at (0: not calibrated).",
                        min=0, max=8192)
    height: int = _field(0, "Image height the calibration was made at.", min=0, max=8192)
    fx: float = _field(0.0, "Focal length along x, in pixels.", min=0)
    fy: float = _field(0.0, "Focal length along y, in pixels.", min=0)
    cx: float = _field(0.0, "Principal point x, in pixels.")
    cy: float = _field(0.0, "Principal point y, in pixels.")
    k1: float = _field(0.0, "Radial distortion k1.")
    k2: float = _field(0.0, "Radial distortion k2.")
    p1: float = _field(0.0, "Tangential distortion p1.")
    p2: float = _field(0.0, "Tangential distortion p2.")
    k3: float = _field(0.0, "Radial distortion k3.")
    rms_px: float = _field(0.0, "RMS reprojection error of the calibration, in pixels.", min=0)


@dataclass(frozen=True)
class RecordConfig:
    """Recording into tubs."""

    jpeg_quality: int = _field(90, "JPEG quality of recorded frames (1-100).", min=1, max=100)
    queue_size: int = _field(
        120, "Records the background writer may hold before it drops (and counts) new ones.",
        min=1, max=100_000,
    )
    checkpoint_interval_s: float = _field(
        1.0, "How often the writer makes recorded data durable (fsync), in seconds.",
        min=0.01, max=60,
    )
    catalog_max_len: int = _field(1000, "Records per catalog file (donkeycar uses 1000).",
                                  min=1, max=1_000_000)
    auto_record_throttle: float = _field(
        0.05, "While recording is on, keep only ticks whose throttle magnitude exceeds this "
        "(donkeycar's auto-record on throttle); 0 keeps every tick.", min=0, max=1)
    erase_count: int = _field(100, "Records the 'erase last' button or key soft-deletes "
                              "(restorable with `car tub restore`).", min=1, max=100_000)


@dataclass(frozen=True)
class WebConfig:
    """The web controller: a page on the car that streams video and takes the user's input."""

    host: str = _field("0.0.0.0", "Address to bind: 0.0.0.0 for every network (a phone on "
                       "the car's Wi-Fi), 127.0.0.1 for this computer only.")
    port: int = _field(8887, "TCP port of the page (donkeycar uses 8887); 0 picks a free one "
                       "(the printed URL has it).", min=0, max=65535)
    token: str = _field("", "Access token every request must carry; empty: a new random "
                        "token at each start, printed in the URL.")
    failsafe_ms: int = _field(250, "Neutral when no control message came for this long.",
                              min=50, max=2000)
    jpeg_quality: int = _field(70, "JPEG quality of the video sent to the page.", min=10,
                               max=100)


@dataclass(frozen=True)
class GamepadConfig:
    """A gamepad on the Linux joystick interface (`car gamepad test` shows its numbers)."""

    device: str = _field("/dev/input/js0", "Joystick device.")
    layout: str = _field("xbox", "Button and axis layout: xbox, ps4, ps5 (DualSense) or "
                         "custom (every number below must then be set).",
                         choices=("xbox", "ps4", "ps5", "custom"))
    steering_axis: int = _field(-1, "Axis for steering; -1: the layout's.", min=-1, max=63)
    throttle_axis: int = _field(-1, "Axis for throttle; -1: the layout's.", min=-1, max=63)
    invert_steering: bool = _field(False, "Reverse the steering axis.")
    invert_throttle: bool = _field(False, "Reverse the throttle axis (stick up is forward "
                                   "by default).")
    deadzone: float = _field(0.05, "Axis values closer to centre than this read 0.", min=0,
                             max=0.5)
    expo: float = _field(0.3, "Expo: 0 is linear; toward 1 softer around centre, same ends.",
                         min=0, max=1)
    button_mode: int = _field(-1, "Button cycling the mode user → local_angle → local; -1: "
                              "the layout's.", min=-1, max=63)
    button_record: int = _field(-1, "Button toggling recording; -1: the layout's.", min=-1,
                                max=63)
    button_erase: int = _field(-1, "Button erasing the last records; -1: the layout's.",
                               min=-1, max=63)
    button_estop: int = _field(-1, "Button for the emergency stop; -1: the layout's.", min=-1,
                               max=63)
    button_clear_estop: int = _field(-1, "Button clearing the emergency stop; -1: the "
                                     "layout's.", min=-1, max=63)


@dataclass(frozen=True)
class SimConfig:
    """The embedded simulator: the vehicle's physics, its camera mount and the expert driver."""

    physics_hz: float = _field(200.0, "Fixed physics step rate, independent of the loop rate.",
                               min=50, max=5000)
    wheelbase_m: float = _field(0.18, "Wheelbase of the simulated car (a 1/16 car).",
                                min=0.05, max=1.0)
    max_steering_deg: float = _field(25.0, "Front wheel angle at full steering.", min=5, max=45)
    top_speed_mps: float = _field(4.0, "Speed reached at full throttle.", min=0.5, max=30)
    max_accel_mps2: float = _field(4.0, "Acceleration at full throttle from a standstill.",
                                   min=0.5, max=50)
    brake_mps2: float = _field(6.0, "Deceleration at full reverse throttle while moving forward.",
                               min=0.5, max=50)
    steering_rate_dps: float = _field(
        360.0, "Steering servo slew limit, in degrees of wheel angle per second.", min=10, max=5000)
    actuation_delay_s: float = _field(
        0.04, "Delay from a command to the servo and ESC starting to act on it.", min=0, max=1)
    camera_height_m: float = _field(0.15, "Camera height above the floor.", min=0.03, max=2)
    camera_pitch_deg: float = _field(12.0, "Camera tilt below the horizontal.", min=-10, max=80)
    camera_fov_deg: float = _field(130.0, "Horizontal field of view of the wide-angle (fisheye) "
                                   "lens.", min=30, max=200)
    camera_forward_m: float = _field(0.12, "Camera position ahead of the rear axle.",
                                     min=-0.5, max=1)
    expert_speed_mps: float = _field(2.0, "Top speed of the expert driver.", min=0.2, max=20)
    expert_line_m: float = _field(
        0.0, "The expert's driving line: metres right of the centreline (0.25 on a 1.2 m "
        "track drives the right lane, like the shared real tub).", min=-2, max=2)
    expert_noise: float = _field(
        0.15, "DART noise: std of the steering noise added to the expert's executed action; "
        "the recorded label stays clean.", min=0, max=1)


@dataclass(frozen=True)
class PathsConfig:
    """Where data and models live. Relative paths are relative to the working directory."""

    data_dir: str = _field("data", "Folder that holds recorded tubs.")
    models_dir: str = _field("models", "Folder that holds trained models and their manifests.")


@dataclass(frozen=True)
class Config:
    """The whole effective configuration."""

    camera: CameraConfig = field(default_factory=CameraConfig)
    drive: DriveConfig = field(default_factory=DriveConfig)
    actuator: ActuatorConfig = field(default_factory=ActuatorConfig)
    steering: SteeringConfig = field(default_factory=SteeringConfig)
    throttle: ThrottleConfig = field(default_factory=ThrottleConfig)
    lens: LensConfig = field(default_factory=LensConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    web: WebConfig = field(default_factory=WebConfig)
    gamepad: GamepadConfig = field(default_factory=GamepadConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    source: str = field(default="defaults", compare=False)  # where it was read from


SECTIONS: dict[str, type] = {
    f.name: f.default_factory  # type: ignore[misc]
    for f in dataclasses.fields(Config)
    if f.name != "source"
}


# ---------------------------------------------------------------------------- loading


def find_config_file(explicit: str | os.PathLike | None) -> Path | None:
    """The file to read: the explicit one, else $CAR_CONFIG, else ./car.toml if present."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found; create one with `car config init`")
        return path
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"{path}: config file named by ${ENV_VAR} not found")
        return path
    path = Path(DEFAULT_FILE)
    return path if path.is_file() else None


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read the config file (see find_config_file), then apply ``section.key=value`` overrides."""
    file = find_config_file(path)
    values: dict[str, dict[str, Any]] = {}
    origins: dict[str, str] = {}  # "section.key" -> where its value came from
    if file is not None:
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: cannot read: {exc}") from None
        values = _check_tree(data, str(file))
        origins = {f"{s}.{k}": str(file) for s, table in values.items() for k in table}
    overrides = list(overrides)
    for item in overrides:
        section, key, value = parse_override(item)
        values.setdefault(section, {})[key] = value
        origins[f"{section}.{key}"] = f"--set {item!r}"
    source = str(file) if file else "defaults"
    if overrides:
        source += f" + {len(overrides)} override(s)"
    return build_config(values, origins, source=source)


def parse_override(item: str) -> tuple[str, str, Any]:
    """Split ``section.key=value``; the value is read as a TOML value, else as a plain string."""
    name, sep, text = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not key:
        raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. drive.rate_hz=30")
    _check_key(section, key, f"--set {item!r}")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    if typing.get_type_hints(SECTIONS[section])[key] is str and not isinstance(value, str):
        value = text  # `--set camera.source=true` means the text "true"
    return section, key, value


def build_config(values: Mapping[str, Mapping[str, Any]], origins: Mapping[str, str],
                 source: str) -> Config:
    """Make a Config from ``{section: {key: value}}``, checking every type, bound and choice.

    ``origins`` maps ``section.key`` to where the value came from, for error messages.
    """
    sections = {}
    for section, cls in SECTIONS.items():
        given = values.get(section, {})
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in given:
                name = f"{section}.{f.name}"
                kwargs[f.name] = _coerce(given[f.name], hints[f.name], f, name,
                                         origins.get(name, source))
        sections[section] = cls(**kwargs)
    config = Config(**sections, source=source)
    _check_cross_fields(config, source)
    return config


def _check_tree(data: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{where}: unknown section [{section}]{_suggest(section, SECTIONS)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: '{section}' must be a table ([{section}])")
        for key in table:
            _check_key(section, key, where)
        out[section] = dict(table)
    return out


def _check_key(section: str, key: str, where: str) -> None:
    if section not in SECTIONS:
        raise ConfigError(f"{where}: unknown section '{section}'{_suggest(section, SECTIONS)}")
    names = [f.name for f in dataclasses.fields(SECTIONS[section])]
    if key not in names:
        raise ConfigError(
            f"{where}: unknown key '{section}.{key}'{_suggest(key, names, section + '.')}"
        )


def _suggest(word: str, options: Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _coerce(value: Any, tp: type, f: dataclasses.Field, name: str, where: str) -> Any:
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise ConfigError(
            f"{where}: {name} must be {_TYPE_NAMES[tp]}, got {_show(value)} "
            f"({type(value).__name__})"
        )
    if tp is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {name} must be a finite number, got {value}")
    meta = f.metadata
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(f"{where}: {name} must be at least {meta['min']}, got {value}")
    if meta.get("max") is not None and value > meta["max"]:
        raise ConfigError(f"{where}: {name} must be at most {meta['max']}, got {value}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(
            f"{where}: {name} must be one of {', '.join(meta['choices'])}; got {_show(value)}"
        )
    return value


def _show(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_cross_fields(config: Config, where: str) -> None:
    s, t = config.steering, config.throttle
    for name, keys, (lo, mid, hi) in (
            ("steering", ("left_us", "center_us", "right_us"),
             (s.left_us, s.center_us, s.right_us)),
            ("throttle", ("reverse_us", "neutral_us", "forward_us"),
             (t.reverse_us, t.neutral_us, t.forward_us))):
        if lo == hi:
            raise ConfigError(f"{where}: {name}.{keys[0]} and {name}.{keys[2]} are both {lo} "
                              f"µs; the two ends must differ (`car calibrate {name}`)")
        if not (lo < mid < hi or lo > mid > hi):
            raise ConfigError(
                f"{where}: {name}.{keys[1]} must lie strictly between {name}.{keys[0]} and "
                f"{name}.{keys[2]}, got {lo}, {mid}, {hi}; recalibrate with "
                f"`car calibrate {name}`")
    lens = config.lens
    if lens.undistort and not (lens.width and lens.height and lens.fx and lens.fy):
        raise ConfigError(f"{where}: lens.undistort is on but the lens is not calibrated; run "
                          "`car calibrate camera` first")


# ---------------------------------------------------------------------------- writing


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def render_toml(config: Config, comments: bool) -> str:
    """TOML text for a config; with comments it is the file `car config init` writes."""
    lines: list[str] = []
    if comments:
        lines += [
            "# car.toml: the one config file of the car. Every key is shown at its default.",
            "# Flags override it: `car ... --set section.key=value`.",
            "# Steering and throttle are normalised to [-1, 1]; steering +1 is full right.",
            "",
        ]
    for section, cls in SECTIONS.items():
        if comments:
            lines.append(f"# {(cls.__doc__ or '').strip()}")
        lines.append(f"[{section}]")
        values = getattr(config, section)
        for f in dataclasses.fields(cls):
            if comments:
                lines.append(f"# {f.metadata['help']}")
            lines.append(f"{f.name} = {_toml_value(getattr(values, f.name))}")
        lines.append("")
    return "\n".join(lines)


def config_as_dict(config: Config) -> dict[str, dict[str, Any]]:
    """The config as plain nested dicts (no ``source``)."""
    return {section: dataclasses.asdict(getattr(config, section)) for section in SECTIONS}


def write_default_config(path: str | os.PathLike, force: bool = False) -> Path:
    """Write the fully commented default `car.toml`; never overwrite without ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_toml(Config(), comments=True), encoding="utf-8")
    return path


def update_config_file(path: str | os.PathLike, changes: Mapping[str, Mapping[str, Any]]
                       ) -> Config:
    """Set ``{section: {key: value}}`` in a car.toml, keeping every other line and comment.

    The file is created (fully commented, at the defaults) if missing. The new text must load
    as a valid config, or nothing is written; the old file is kept as ``car.toml.bak`` and
    the new one replaces it atomically. Returns the config as written.
    """
    path = Path(path)
    created = not path.exists()
    if created:
        write_default_config(path)
    text = path.read_text(encoding="utf-8")
    for section, table in changes.items():
        for key, value in table.items():
            _check_key(section, key, str(path))
            text = _set_toml_key(text, section, key, _toml_value(value))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        config = load_config(tmp)  # refuse to write a file that would not load
    except ConfigError as exc:
        tmp.unlink()
        raise ConfigError(str(exc).replace(str(tmp), str(path))) from None
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    if not created:
        path.with_name(path.name + ".bak").write_bytes(path.read_bytes())
    os.replace(tmp, path)
    return dataclasses.replace(config, source=str(path))


def _set_toml_key(text: str, section: str, key: str, value: str) -> str:
    """``key = value`` inside ``[section]``: replaced where it is, else added at the end of the
    section, else in a new section at the end of the file."""
    lines = text.splitlines()
    start = None
    for i, line in enumerate(lines):
        if line.split("#", 1)[0].strip() == f"[{section}]":
            start = i
            break
    if start is None:
        return text.rstrip("\n") + f"\n\n[{section}]\n{key} = {value}\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")),
               len(lines))
    for i in range(start + 1, end):
        name = lines[i].split("=", 1)[0].strip()
        if "=" in lines[i] and name == key and not lines[i].lstrip().startswith("#"):
            lines[i] = f"{key} = {value}"
            return "\n".join(lines) + "\n"
    insert = end
    while insert > start + 1 and not lines[insert - 1].strip():
        insert -= 1  # before the blank lines that separate sections
    lines.insert(insert, f"{key} = {value}")
    return "\n".join(lines) + "\n"
