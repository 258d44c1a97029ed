"""`car calibrate steering` and `car calibrate throttle`: find the servo's ends and trim, and
the ESC's neutral, forward and reverse, through the MCU or a PCA9685 board; store them in
car.toml.

Interactive by default (keys step the pulse; see ``calibration.servo``). With ``--set
steering.left_us=1900 ...`` it writes the given values without a car.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from calibration.outputs import McuOutput, Pca9685Output
from calibration.servo import SPECS, ServoSession, read_keys
from car.commands import add_config_options, config_from_args
from car.config import DEFAULT_FILE, find_config_file, parse_override, update_config_file
from car.errors import CarError


def register(targets: argparse._SubParsersAction) -> None:
    helps = {"steering": "find full left, full right and straight ahead (trim)",
             "throttle": "find the ESC's neutral, full forward and full reverse"}
    for name, text in helps.items():
        c = targets.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}, "
                               "stepping the pulse with keys; see docs/calibration.md. With "
                               f"--set {name}.KEY=VALUE, write the values without the car.")
        c.add_argument("--actuator", choices=("serial", "pca9685"),
                       help="what drives the servo and ESC: serial (the MCU) or pca9685 (the "
                            "I2C board of [pca9685]); default: actuator.driver, or serial "
                            "when that is 'dry'")
        c.add_argument("--port", help="serial port of the MCU (default: actuator.port)")
        add_config_options(c)
        c.set_defaults(handler=calibrate_servo, channel=name)


def calibrate_servo(args: argparse.Namespace) -> int:
    spec = SPECS[args.channel]
    config = config_from_args(args)  # checks every value, --set ones included
    path = find_config_file(args.config) or Path(DEFAULT_FILE)
    section = getattr(config, spec.section)
    given: dict[str, Any] = {}
    for item in args.overrides:
        name, key, _ = parse_override(item)
        if name == spec.section:
            given[key] = getattr(section, key)  # the checked, typed value
        elif name in SPECS:
            raise CarError(f"--set {item!r}: `car calibrate {spec.section}` writes "
                           f"[{spec.section}]; use `car calibrate {name}` for [{name}]")
    if given:  # already checked with the rest of the config, ends and middle included
        return _write(path, spec.section, given)
    kind = args.actuator or ("pca9685" if config.actuator.driver == "pca9685" else "serial")
    marks = _interactive(config, spec, kind, args.port)
    if marks is None:
        return 1
    return _write(path, spec.section, marks)


def _interactive(config: Any, spec: Any, kind: str, port: str | None) -> dict[str, int] | None:
    output = Pca9685Output(config) if kind == "pca9685" else McuOutput(config, spec, port)
    if spec.section == "throttle":
        print("throttle: LIFT THE DRIVEN WHEELS OFF THE GROUND - the motor will spin. The "
              "ESC arms at neutral; step up slowly.", file=sys.stderr)
        other_neutral = config.steering.center_us
    else:
        other_neutral = config.throttle.neutral_us
    session = ServoSession(output, spec, getattr(config, spec.section), other_neutral,
                           sys.stdout)
    try:
        return session.run(read_keys(sys.stdin))
    finally:
        output.close()


def _write(path: Path, section: str, values: dict[str, Any]) -> int:
    update_config_file(path, {section: values})
    shown = ", ".join(f"{section}.{k} = {v}" for k, v in values.items())
    print(f"wrote {shown} into {path}")
    return 0
