"""A donkeycar ``myconfig.py`` read without running it, and mapped onto car.toml.

The file is parsed with ``ast``; only top-level ``NAME = value`` assignments count, and a value
is evaluated only when it is made of literals, arithmetic and names assigned before it
(``CAMERA_FRAMERATE = DRIVE_LOOP_HZ``). Anything else (imports, calls, attribute access) is
skipped and listed, never executed. Keys the file does not set take donkeycar 5.x's defaults
(``cfg_complete.py``), as they did on the car.

PCA9685 ticks become µs through the frequency the chip really runs at: donkeycar asks for
60 Hz, the prescaler gives ``25 MHz / (4096 × 102)`` = 59.84 Hz, so a tick is 4.08 µs
(STEERING_LEFT_PWM 460 is 1877 µs). Both drivetrain styles are read: 5.x's
``PWM_STEERING_THROTTLE`` dict with ``PCA9685.BUS:ADDR.CHANNEL`` pins, and 4.x's
``SERVO_ESC`` with ``STEERING_CHANNEL``, ``PCA9685_I2C_ADDR`` and friends.
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from car.errors import ConfigError

DONKEY_FREQUENCY_HZ = 60  # donkeycar's PCA9685 frequency
PRESCALE_OSCILLATOR_HZ = 25_000_000
DEFAULTS: dict[str, Any] = {  # donkeycar 5.x cfg_complete.py, the keys mapped here
    "DRIVE_TRAIN_TYPE": "PWM_STEERING_THROTTLE",
    "PWM_STEERING_THROTTLE": {
        "PWM_STEERING_PIN": "PCA9685.1:40.1", "PWM_STEERING_SCALE": 1.0,
        "PWM_STEERING_INVERTED": False, "PWM_THROTTLE_PIN": "PCA9685.1:40.0",
        "PWM_THROTTLE_SCALE": 1.0, "PWM_THROTTLE_INVERTED": False,
        "STEERING_LEFT_PWM": 460, "STEERING_RIGHT_PWM": 290, "THROTTLE_FORWARD_PWM": 500,
        "THROTTLE_STOPPED_PWM": 370, "THROTTLE_REVERSE_PWM": 220},
    "STEERING_CHANNEL": 1, "STEERING_LEFT_PWM": 460, "STEERING_RIGHT_PWM": 290,
    "THROTTLE_CHANNEL": 0, "THROTTLE_FORWARD_PWM": 500, "THROTTLE_STOPPED_PWM": 370,
    "THROTTLE_REVERSE_PWM": 220, "PCA9685_I2C_ADDR": 0x40, "PCA9685_I2C_BUSNUM": None,
    "IMAGE_W": 160, "IMAGE_H": 120, "DRIVE_LOOP_HZ": 20, "CAMERA_TYPE": "PICAM",
    "AI_THROTTLE_MULT": 1.0,
}
CAMERAS = {"CSIC": "csi", "WEBCAM": "usb:0", "CVCAM": "usb:0", "V4L": "usb:0"}
_PIN = re.compile(r"^PCA9685\.(\d+):([0-9A-Fa-fx]+)\.(\d+)$")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv}


@dataclass
class Imported:
    """What a myconfig.py maps to: ``{section: {key: value}}``, why each value is what it is
    (``why["steering.left_us"]``), and notes on what was not mapped."""

    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def set(self, section: str, key: str, value: Any, why: str) -> None:
        self.changes.setdefault(section, {})[key] = value
        self.why[f"{section}.{key}"] = why


def read_myconfig(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """The file's plain assignments, and the names it assigns in ways not read (skipped)."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc})") from None
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise ConfigError(f"{path}: line {exc.lineno}: not valid Python ({exc.msg}); fix it "
                          "or copy its settings by hand") from None
    values: dict[str, Any] = {}
    skipped: list[str] = []
    for node in tree.body:
        if not isinstance(node, ast.Assign | ast.AnnAssign):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if not names or node.value is None:
            continue
        try:
            value = _evaluate(node.value, {**DEFAULTS, **values})
        except ValueError:
            skipped.extend(n for n in names if n not in skipped)
            continue
        for name in names:
            values[name] = value
    return values, skipped


def _evaluate(node: ast.expr, known: dict[str, Any]) -> Any:
    """A literal, arithmetic on literals, or a name assigned before; ValueError otherwise."""
    if isinstance(node, ast.Name):
        if node.id in known:
            return known[node.id]
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        raise ValueError(node.id)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _evaluate(node.left, known), _evaluate(node.right, known)
        if not all(isinstance(v, int | float) for v in (left, right)):
            raise ValueError("arithmetic on non-numbers")
        return _OPS[type(node.op)](left, right)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError("** in a dict")
        return {_evaluate(k, known): _evaluate(v, known)  # type: ignore[arg-type]
                for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.List | ast.Tuple):
        return [_evaluate(e, known) for e in node.elts]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand, known)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Constant):
        return node.value
    raise ValueError(type(node).__name__)


def ticks_to_us(ticks: float, frequency_hz: float = DONKEY_FREQUENCY_HZ) -> int:
    """A PCA9685 tick count to µs at the frequency the prescaler really gives."""
    prescale = round(PRESCALE_OSCILLATOR_HZ / (4096 * frequency_hz)) - 1
    return round(ticks * (prescale + 1) * 1e6 / PRESCALE_OSCILLATOR_HZ)


def map_donkey_config(given: dict[str, Any]) -> Imported:
    """car.toml changes for a donkeycar config (``given``: what myconfig.py sets)."""
    cfg = {**DEFAULTS, **given}
    out = Imported()
    train = str(cfg["DRIVE_TRAIN_TYPE"])
    if train == "PWM_STEERING_THROTTLE":
        pwm = {**DEFAULTS["PWM_STEERING_THROTTLE"], **(cfg["PWM_STEERING_THROTTLE"] or {})}
        bus_s, addr_s, steer_ch = _pin(pwm["PWM_STEERING_PIN"], "PWM_STEERING_PIN")
        bus_t, addr_t, throttle_ch = _pin(pwm["PWM_THROTTLE_PIN"], "PWM_THROTTLE_PIN")
        if (bus_s, addr_s) != (bus_t, addr_t):
            raise ConfigError(f"steering on PCA9685 {addr_s:#04x} of bus {bus_s} and throttle "
                              f"on {addr_t:#04x} of bus {bus_t}: car drives both from one "
                              "board; move one of them")
        ticks = pwm
        src = "PWM_STEERING_THROTTLE"
        out.set("pca9685", "bus", bus_s, f"{src}: {pwm['PWM_STEERING_PIN']}")
        out.set("pca9685", "address", addr_s, f"{src}: {pwm['PWM_STEERING_PIN']}")
        for flag in ("PWM_STEERING_INVERTED", "PWM_THROTTLE_INVERTED"):
            if pwm[flag]:
                out.notes.append(f"{flag} = True inverts the pulse signal itself (for an "
                                 "inverting buffer); car has no such setting: not mapped")
        for scale in ("PWM_STEERING_SCALE", "PWM_THROTTLE_SCALE"):
            if pwm[scale] != 1.0:
                out.notes.append(f"{scale} = {pwm[scale]} is not mapped: check the pulses "
                                 "with `car calibrate`")
    elif train == "SERVO_ESC":
        ticks, src = cfg, "SERVO_ESC"
        steer_ch, throttle_ch = int(cfg["STEERING_CHANNEL"]), int(cfg["THROTTLE_CHANNEL"])
        bus = cfg["PCA9685_I2C_BUSNUM"]
        out.set("pca9685", "bus", 1 if bus is None else int(bus),
                "PCA9685_I2C_BUSNUM" + (" (None: auto-detect, bus 1 on a Pi)" if bus is None
                                        else ""))
        out.set("pca9685", "address", int(cfg["PCA9685_I2C_ADDR"]), "PCA9685_I2C_ADDR")
    else:
        raise ConfigError(f"DRIVE_TRAIN_TYPE = {train!r}: car imports a PCA9685 servo and ESC "
                          "build (PWM_STEERING_THROTTLE or SERVO_ESC); set car.toml by hand")
    out.set("actuator", "driver", "pca9685", f"DRIVE_TRAIN_TYPE = {train!r}")
    out.set("pca9685", "steering_channel", steer_ch, f"{src}: steering channel")
    out.set("pca9685", "throttle_channel", throttle_ch, f"{src}: throttle channel")
    out.set("pca9685", "frequency_hz", float(DONKEY_FREQUENCY_HZ), "donkeycar's PCA9685 rate")
    tick = "ticks at 59.84 Hz"
    left, right = ticks["STEERING_LEFT_PWM"], ticks["STEERING_RIGHT_PWM"]
    out.set("steering", "left_us", ticks_to_us(left), f"STEERING_LEFT_PWM {left} {tick}")
    out.set("steering", "right_us", ticks_to_us(right), f"STEERING_RIGHT_PWM {right} {tick}")
    out.set("steering", "center_us", ticks_to_us((left + right) / 2),
            "half way, as donkeycar steers (it has no trim)")
    for key, name in (("forward_us", "THROTTLE_FORWARD_PWM"),
                      ("neutral_us", "THROTTLE_STOPPED_PWM"),
                      ("reverse_us", "THROTTLE_REVERSE_PWM")):
        out.set("throttle", key, ticks_to_us(ticks[name]), f"{name} {ticks[name]} {tick}")
    _map_camera_and_loop(cfg, given, out)
    return out


def _pin(spec: Any, name: str) -> tuple[int, int, int]:
    """``PCA9685.1:40.1`` → (bus 1, address 0x40, channel 1)."""
    match = _PIN.match(str(spec))
    if match is None:
        raise ConfigError(f"{name} = {spec!r} is not a PCA9685 pin (PCA9685.BUS:ADDR.CHANNEL); "
                          "car drives PCA9685 boards and its own serial MCU only")
    return int(match[1]), int(match[2], 16), int(match[3])


def _map_camera_and_loop(cfg: dict[str, Any], given: dict[str, Any], out: Imported) -> None:
    out.set("camera", "width", int(cfg["IMAGE_W"]), "IMAGE_W")
    out.set("camera", "height", int(cfg["IMAGE_H"]), "IMAGE_H")
    if "CAMERA_FRAMERATE" in given:
        out.set("camera", "fps", float(given["CAMERA_FRAMERATE"]), "CAMERA_FRAMERATE")
    camera = str(cfg["CAMERA_TYPE"])
    if camera in CAMERAS:
        out.set("camera", "source", CAMERAS[camera], f"CAMERA_TYPE = {camera!r}")
    else:
        out.notes.append(f"CAMERA_TYPE = {camera!r} has no direct match: set camera.source "
                         "(usb:N for a camera that shows up as /dev/videoN, csi on a Jetson)")
    out.set("drive", "rate_hz", float(cfg["DRIVE_LOOP_HZ"]), "DRIVE_LOOP_HZ")
    out.set("drive", "ai_throttle_mult", float(cfg["AI_THROTTLE_MULT"]), "AI_THROTTLE_MULT")
