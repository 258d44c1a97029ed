"""Gamepad layouts: which axis steers, which drives, and what each button does, with the
deadzone and expo that shape the sticks.

Default controls, in the same places on every layout (see ``docs/gamepad.md``):

=================  ==========  ==========  ============================================
control            xbox        ps4, ps5    does
=================  ==========  ==========  ============================================
left stick X       axis 0      axis 0      steering (right = +1)
right stick Y      axis 4      axis 4      throttle (up = forward)
A / cross          button 0    button 0    recording on / off
B / circle         button 1    button 1    emergency stop (latched)
Y / triangle       button 3    button 2    clear the emergency stop
X / square         button 2    button 3    erase the last ``record.erase_count`` records
START / options    button 7    button 9    mode: user → local_angle → local → user
=================  ==========  ==========  ============================================

``gamepad.*`` numbers ≥ 0 in car.toml override the layout's; ``layout = "custom"`` takes
them all from there. Buttons act once per press. Axes go through the deadzone, then expo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from car.config import GamepadConfig
from car.controllers.joystick import JoystickState
from car.errors import ConfigError

AXIS_KEYS = ("steering_axis", "throttle_axis")
BUTTON_KEYS = ("button_mode", "button_record", "button_erase", "button_estop",
               "button_clear_estop")


def shape(x: float, deadzone: float, expo: float) -> float:
    """0 within ``deadzone``, then rising continuously from its edge to ±1; then expo,
    ``(1 - expo)·x + expo·x³``: the same ends, softer around the centre."""
    magnitude = min(1.0, abs(x))
    if magnitude <= deadzone:
        return 0.0
    magnitude = (magnitude - deadzone) / (1.0 - deadzone)
    return math.copysign((1.0 - expo) * magnitude + expo * magnitude ** 3, x)


@dataclass(frozen=True)
class Layout:
    """Axis and button numbers as a kernel driver reports them, and what each one does.
    ``invert_throttle``: js reports a stick pushed up as negative, and up is forward."""

    name: str
    steering_axis: int
    throttle_axis: int
    invert_steering: bool
    invert_throttle: bool
    button_mode: int
    button_record: int
    button_erase: int
    button_estop: int
    button_clear_estop: int
    axis_names: tuple[str, ...] = ()
    button_names: tuple[str, ...] = ()

    def axis_label(self, number: int) -> str:
        names = self.axis_names
        return f"{number} ({names[number]})" if number < len(names) else str(number)

    def button_label(self, number: int) -> str:
        names = self.button_names
        return f"{number} ({names[number]})" if number < len(names) else str(number)


_STICKS = ("LX", "LY", "LT", "RX", "RY", "RT", "DPAD-X", "DPAD-Y")
_PS_STICKS = ("LX", "LY", "L2", "RX", "RY", "R2", "DPAD-X", "DPAD-Y")
XBOX = Layout("xbox", 0, 4, False, True, button_mode=7, button_record=0, button_erase=2,
              button_estop=1, button_clear_estop=3, axis_names=_STICKS,
              button_names=("A", "B", "X", "Y", "LB", "RB", "BACK", "START", "GUIDE", "LS",
                            "RS"))
PS4 = Layout("ps4", 0, 4, False, True, button_mode=9, button_record=0, button_erase=3,
             button_estop=1, button_clear_estop=2, axis_names=_PS_STICKS,
             button_names=("cross", "circle", "triangle", "square", "L1", "R1", "L2", "R2",
                           "share", "options", "PS", "L3", "R3"))
PS5 = replace(PS4, name="ps5", button_names=(*PS4.button_names[:8], "create",
                                             *PS4.button_names[9:], "touchpad"))
CUSTOM = Layout("custom", -1, -1, False, True, -1, -1, -1, -1, -1)
LAYOUTS = {layout.name: layout for layout in (XBOX, PS4, PS5, CUSTOM)}


def resolve_layout(config: GamepadConfig) -> Layout:
    """The configured layout with car.toml's numbers (≥ 0) over its own, and ``invert_*``
    reversing its directions. A custom layout needs every number."""
    base = LAYOUTS[config.layout]
    numbers = {key: getattr(config, key) for key in (*AXIS_KEYS, *BUTTON_KEYS)
               if getattr(config, key) >= 0}
    missing = [f"gamepad.{key}" for key in (*AXIS_KEYS, *BUTTON_KEYS)
               if getattr(base, key) < 0 and key not in numbers]
    if missing:
        raise ConfigError(f'gamepad.layout = "{base.name}" needs {", ".join(missing)} set '
                          "(each ≥ 0); `car gamepad test` shows your gamepad's numbers")
    layout = replace(base, **numbers,
                     invert_steering=base.invert_steering != config.invert_steering,
                     invert_throttle=base.invert_throttle != config.invert_throttle)
    for kind, keys in (("axis", AXIS_KEYS), ("button", BUTTON_KEYS)):
        taken: dict[int, str] = {}
        for key in keys:
            number = getattr(layout, key)
            if number in taken:
                raise ConfigError(f"gamepad.{taken[number]} and gamepad.{key} are both {kind} "
                                  f"{number} (layout {layout.name}); give one of them another "
                                  "number")
            taken[number] = key
    return layout


class Controls:
    """A layout with the deadzone and expo: joystick state → steering, throttle and actions."""

    def __init__(self, layout: Layout, deadzone: float = 0.05, expo: float = 0.3):
        self.layout = layout
        self.deadzone = deadzone
        self.expo = expo
        self.actions = {getattr(layout, key): key.removeprefix("button_") for key in BUTTON_KEYS}

    @classmethod
    def from_config(cls, config: GamepadConfig) -> Controls:
        return cls(resolve_layout(config), config.deadzone, config.expo)

    def steering(self, state: JoystickState) -> float:
        return self._axis(state, self.layout.steering_axis, self.layout.invert_steering)

    def throttle(self, state: JoystickState) -> float:
        return self._axis(state, self.layout.throttle_axis, self.layout.invert_throttle)

    def _axis(self, state: JoystickState, number: int, invert: bool) -> float:
        x = shape(state.axis(number), self.deadzone, self.expo)
        return -x if invert and x else x

    def describe(self) -> str:
        """The mapping in words, e.g. for `car gamepad test`."""
        layout = self.layout
        buttons = ", ".join(f"{key.removeprefix('button_')} "
                            f"{layout.button_label(getattr(layout, key))}" for key in BUTTON_KEYS)
        return (f"layout {layout.name}: steering axis {layout.axis_label(layout.steering_axis)}, "
                f"right = {'negative' if layout.invert_steering else 'positive'}; throttle axis "
                f"{layout.axis_label(layout.throttle_axis)}, forward = "
                f"{'negative' if layout.invert_throttle else 'positive'}; buttons: {buttons}; "
                f"deadzone {self.deadzone:g}, expo {self.expo:g}")
