"""The gamepad controller and `car gamepad test` against fake joysticks: pipes and FIFOs
carrying the kernel's js_event bytes (init events, axis moves, button presses, partial
reads, an unplug and a reconnect)."""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import io
import logging
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO

import pytest

from car.commands import gamepad as gamepad_commands
from car.config import GamepadConfig
from car.controllers.gamepad import (
    Controls,
    GamepadController,
    JoystickState,
    resolve_layout,
    shape,
)
from car.errors import CarError, ConfigError
from car.frames import Mode, UserInput
from tests.waiting import wait_for

BUTTON, AXIS, INIT = 0x01, 0x02, 0x80
FULL = 32767


def event(kind: int, number: int, value: int, time_ms: int = 0) -> bytes:
    """One struct js_event as the kernel writes it: u32 time, s16 value, u8 type, u8 number."""
    return struct.pack("<IhBB", time_ms, value, kind, number)


def axis(number: int, value: int) -> bytes:
    return event(AXIS, number, value)


def press(number: int) -> bytes:
    return event(BUTTON, number, 1) + event(BUTTON, number, 0)


def init_state(axes: int = 8, buttons: int = 13, held: tuple[int, ...] = ()) -> bytes:
    """What the driver sends at open: every axis and button, flagged JS_EVENT_INIT."""
    return b"".join([*(event(AXIS | INIT, n, 0) for n in range(axes)),
                     *(event(BUTTON | INIT, n, int(n in held)) for n in range(buttons))])


class FakeJoysticks:
    """An ``open_device`` factory: each open takes the read end of the next plugged-in pipe;
    with none plugged in, the device is missing."""

    def __init__(self) -> None:
        self.ready: collections.deque[int] = collections.deque()
        self.opens = 0
        self.writers: list[int] = []

    def plug(self) -> int:
        read, write = os.pipe()
        self.ready.append(read)
        self.writers.append(write)
        return write

    def __call__(self, path: str) -> IO[bytes]:
        self.opens += 1
        if not self.ready:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return os.fdopen(self.ready.popleft(), "rb", buffering=0)

    def close(self) -> None:
        for fd in self.writers:
            with contextlib.suppress(OSError):
                os.close(fd)


class Pad:
    """A controller on a fake joystick, and the pipe's write end to play the gamepad."""

    def __init__(self, config: GamepadConfig, **kwargs: object):
        self.joysticks = FakeJoysticks()
        self.fd = self.joysticks.plug()
        self.controller = GamepadController(config, open_device=self.joysticks, retry_s=0.01,
                                            **kwargs)  # type: ignore[arg-type]

    def send(self, data: bytes) -> None:
        """Write events and wait until the reader has applied all of them."""
        target = self.controller.events + len(data) // 8
        os.write(self.fd, data)
        assert wait_for(lambda: self.controller.events >= target)

    def poll(self) -> UserInput:
        return self.controller.poll(time.monotonic())


@pytest.fixture
def make_pad() -> Iterator[Callable[..., Pad]]:
    pads: list[Pad] = []

    def make(config: GamepadConfig | None = None, **kwargs: object) -> Pad:
        pad = Pad(config or GamepadConfig(deadzone=0.0, expo=0.0), **kwargs)
        pads.append(pad)
        return pad

    yield make
    for pad in pads:
        pad.controller.close()
        pad.joysticks.close()


# ------------------------------------------------------------------ events and shaping


def test_state_applies_events_split_anywhere_and_init_is_no_press() -> None:
    stream = init_state(held=(2,)) + axis(0, 12000) + press(1) + event(BUTTON, 2, 1)
    state = JoystickState()
    presses = []
    for i in range(len(stream)):  # one byte at a time: partial events wait for the rest
        presses += state.feed(stream[i:i + 1])
    assert presses == [1]  # button 2 was held at open, and is reported held again: no press
    assert state.events == len(stream) // 8
    assert state.axes[0] == 12000 and state.axis(0) == pytest.approx(12000 / FULL)
    assert state.pressed() == [2]
    assert state.axis(7) == 0.0 and state.axis(9) == 0.0  # reported at rest, never reported
    state.feed(axis(1, -32768))
    assert state.axis(1) == -1.0  # the s16's extra negative value is clipped


def test_deadzone_and_expo() -> None:
    assert shape(0.1, 0.1, 0.0) == 0.0
    assert shape(-0.05, 0.1, 0.3) == 0.0
    assert shape(0.55, 0.1, 0.0) == pytest.approx(0.5)  # rescaled from the deadzone's edge
    assert shape(0.1 + 1e-9, 0.1, 0.0) == pytest.approx(0.0, abs=1e-8)  # continuous there
    assert shape(1.0, 0.1, 0.3) == pytest.approx(1.0)
    assert shape(-1.0, 0.1, 0.3) == pytest.approx(-1.0)
    assert shape(0.5, 0.0, 0.3) == pytest.approx(0.7 * 0.5 + 0.3 * 0.125)  # 0.3875
    assert shape(-0.55, 0.1, 0.3) == pytest.approx(-0.3875)  # deadzone, then expo
    assert shape(0.5, 0.0, 1.0) == pytest.approx(0.125)


# ------------------------------------------------------------------ layouts


@pytest.mark.parametrize("layout, buttons", [
    ("xbox", {"record": 0, "estop": 1, "erase": 2, "clear_estop": 3, "mode": 7}),
    ("ps4", {"record": 0, "estop": 1, "clear_estop": 2, "erase": 3, "mode": 9}),
    ("ps5", {"record": 0, "estop": 1, "clear_estop": 2, "erase": 3, "mode": 9}),
])
def test_layouts_map_sticks_and_buttons(make_pad: Callable[..., Pad], layout: str,
                                        buttons: dict[str, int]) -> None:
    pad = make_pad(GamepadConfig(layout=layout, deadzone=0.0, expo=0.0), erase_count=40)
    pad.send(init_state())
    assert pad.poll() == UserInput(0.0, 0.0)
    pad.send(axis(0, FULL) + axis(4, -FULL))  # left stick right, right stick up
    user = pad.poll()
    assert (user.steering, user.throttle) == (1.0, 1.0)
    pad.send(axis(0, -FULL // 2) + axis(4, FULL // 2) + axis(1, -FULL) + axis(3, FULL))
    user = pad.poll()  # the other sticks do nothing
    assert user.steering == pytest.approx(-0.5, abs=1e-4)
    assert user.throttle == pytest.approx(-0.5, abs=1e-4)
    pad.send(press(buttons["record"]))
    assert pad.poll().recording is False  # the loop records from the start: the first is off
    pad.send(press(buttons["erase"]))
    assert pad.poll().erase_last == 40
    pad.send(press(buttons["estop"]))
    assert pad.poll().estop
    pad.send(press(buttons["clear_estop"]))
    assert pad.poll().clear_estop
    pad.send(press(buttons["mode"]))
    assert pad.poll().mode == Mode.LOCAL_ANGLE
    assert replace(pad.poll(), steering=0.0, throttle=0.0) == UserInput()  # each once


def test_config_numbers_override_the_layout_and_invert(make_pad: Callable[..., Pad]) -> None:
    config = GamepadConfig(layout="xbox", steering_axis=3, throttle_axis=1, button_estop=5,
                           invert_steering=True, invert_throttle=True, deadzone=0.0, expo=0.0)
    pad = make_pad(config)
    pad.send(init_state())
    pad.send(axis(3, FULL) + axis(1, -FULL) + axis(0, FULL) + axis(4, FULL))
    user = pad.poll()
    assert (user.steering, user.throttle) == (-1.0, -1.0)  # both reversed; 0 and 4 unused
    pad.send(press(1))
    assert not pad.poll().estop  # B is free now
    pad.send(press(5))
    assert pad.poll().estop


def test_custom_layout_takes_every_number_from_the_config(make_pad: Callable[..., Pad]) -> None:
    config = GamepadConfig(layout="custom", steering_axis=2, throttle_axis=5, button_mode=10,
                           button_record=11, button_erase=12, button_estop=13,
                           button_clear_estop=14, deadzone=0.0, expo=0.0)
    pad = make_pad(config)
    pad.send(init_state(axes=6, buttons=15))
    pad.send(axis(2, FULL) + axis(5, -FULL) + press(13))
    user = pad.poll()
    assert (user.steering, user.throttle, user.estop) == (1.0, 1.0, True)  # up is forward
    assert resolve_layout(config).button_names == ()


def test_custom_layout_missing_numbers_and_clashes_are_errors() -> None:
    with pytest.raises(ConfigError, match=r'gamepad.layout = "custom" needs '
                       r"gamepad.throttle_axis, gamepad.button_erase set \(each ≥ 0\); "
                       r"`car gamepad test` shows your gamepad's numbers"):
        resolve_layout(GamepadConfig(layout="custom", steering_axis=0, button_mode=1,
                                     button_record=2, button_estop=3, button_clear_estop=4))
    with pytest.raises(ConfigError, match=r"gamepad.button_record and gamepad.button_clear_estop "
                       r"are both button 3 \(layout xbox\); give one of them another number"):
        resolve_layout(GamepadConfig(button_record=3))
    with pytest.raises(ConfigError, match="both axis 0"):
        GamepadController(GamepadConfig(throttle_axis=0), open_device=FakeJoysticks())


def test_default_deadzone_and_expo_shape_the_sticks(make_pad: Callable[..., Pad]) -> None:
    pad = make_pad(GamepadConfig())  # deadzone 0.05, expo 0.3
    pad.send(init_state())
    pad.send(axis(0, 1500) + axis(4, -FULL))
    user = pad.poll()
    assert user.steering == 0.0 and user.throttle == 1.0  # 1500 is inside 5 %
    x = 20000 / FULL
    pad.send(axis(0, 20000))
    m = (x - 0.05) / 0.95
    assert pad.poll().steering == pytest.approx(0.7 * m + 0.3 * m ** 3)


# ------------------------------------------------------------------ buttons


def test_buttons_act_once_per_press(make_pad: Callable[..., Pad]) -> None:
    pad = make_pad(erase_count=25, recording=False)
    pad.send(init_state(held=(1,)))  # e-stop held when plugged in: not a press
    assert not pad.poll().estop
    pad.send(event(BUTTON, 1, 0) + event(BUTTON, 0, 1))  # release B; hold A
    assert pad.poll().recording is True
    pad.send(event(BUTTON, 0, 1))  # the driver says "held" again: still one press
    assert pad.poll().recording is None
    pad.send(event(BUTTON, 0, 0) + press(0) + press(0))  # two toggles between polls
    assert pad.poll().recording is True  # on, off, on
    pad.send(press(2) + press(2))
    assert pad.poll().erase_last == 50
    pad.send(press(1) + press(3))  # e-stop and its release in one tick: the e-stop wins
    user = pad.poll()
    assert user.estop and not user.clear_estop
    assert pad.poll() == UserInput()


def test_mode_cycles_from_the_start_mode(make_pad: Callable[..., Pad]) -> None:
    pad = make_pad()
    pad.send(init_state())
    assert pad.poll().mode is None
    modes = []
    for _ in range(4):
        pad.send(press(7))
        modes.append(pad.poll().mode)
    assert modes == [Mode.LOCAL_ANGLE, Mode.LOCAL, Mode.USER, Mode.LOCAL_ANGLE]
    local = make_pad(start_mode=Mode.LOCAL, recording=True)
    assert local.poll().mode == Mode.LOCAL  # requested once
    assert local.poll().mode is None
    local.send(init_state() + press(7) + press(0))
    user = local.poll()
    assert user.mode == Mode.USER and user.recording is False


# ------------------------------------------------------------------ unplug and reconnect


def test_unplugged_reads_neutral_then_reconnects(make_pad: Callable[..., Pad],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "car.controllers.gamepad")
    pad = make_pad(start_mode=Mode.LOCAL)
    controller = pad.controller
    assert controller.connected and controller.fault is None
    pad.send(init_state())
    pad.send(axis(0, FULL) + axis(4, -FULL))
    assert pad.poll() == UserInput(1.0, 1.0, mode=Mode.LOCAL)
    pad.send(press(1))  # an e-stop pressed just before the cable came out still counts
    os.close(pad.fd)  # unplugged: the reader sees end of file
    assert wait_for(lambda: not controller.connected)
    assert controller.fault == "gamepad at /dev/input/js0 lost (the device closed)"
    # neutral, the e-stop, and the pilot mode dropped: the e-stop button is gone
    assert pad.poll() == UserInput(0.0, 0.0, mode=Mode.USER, estop=True)
    assert pad.poll() == UserInput(0.0, 0.0)
    assert "steering and throttle neutral, mode back to user, until it is back" in caplog.text
    opens = pad.joysticks.opens
    assert wait_for(lambda: pad.joysticks.opens >= opens + 3)  # it keeps looking
    assert controller.fault == "gamepad at /dev/input/js0 lost (the device closed)"

    pad.fd = pad.joysticks.plug()  # plugged back in
    assert wait_for(lambda: controller.connected)
    assert "gamepad reconnected: unnamed at /dev/input/js0" in caplog.text
    assert pad.poll() == UserInput(0.0, 0.0)  # the new device's state starts at rest
    pad.send(init_state() + axis(0, -FULL))
    assert pad.poll() == UserInput(-1.0, 0.0)
    assert (controller.disconnects, controller.reconnects) == (1, 1)


def test_a_read_error_is_an_unplug(tmp_path: Path) -> None:
    class Unreadable:  # os.read fails (EISDIR here; ENODEV from a joystick pulled out)
        def __init__(self) -> None:
            self.fd = os.open(tmp_path, os.O_RDONLY)

        def fileno(self) -> int:
            return self.fd

        def close(self) -> None:
            os.close(self.fd)

    joysticks = FakeJoysticks()

    def open_device(path: str) -> IO[bytes]:
        if joysticks.opens == 0:
            joysticks.opens += 1
            return Unreadable()  # type: ignore[return-value]
        return joysticks(path)

    with GamepadController(GamepadConfig(), open_device=open_device,
                           retry_s=0.01) as controller:
        assert wait_for(lambda: controller.disconnects == 1)
        assert not controller.connected and pad_neutral(controller)
        assert wait_for(lambda: joysticks.opens >= 3)
        assert controller.fault == "gamepad at /dev/input/js0 lost (Is a directory)"


def test_missing_at_start_warns_once_and_picks_it_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "car.controllers.gamepad")
    joysticks = FakeJoysticks()
    with GamepadController(GamepadConfig(deadzone=0, expo=0), open_device=joysticks,
                           retry_s=0.01) as controller:
        assert not controller.connected
        assert pad_neutral(controller)
        assert wait_for(lambda: joysticks.opens >= 4)
        warnings = [r.getMessage() for r in caplog.records]
        assert warnings == ["no gamepad at /dev/input/js0: plug it in (it will be picked up) "
                            "or set gamepad.device"]
        fd = joysticks.plug()
        assert wait_for(lambda: controller.connected)
        os.write(fd, init_state() + axis(0, FULL))
        assert wait_for(lambda: controller.poll(0.0).steering == 1.0)
        assert "gamepad connected: unnamed at /dev/input/js0" in caplog.text
    assert not controller._thread.is_alive()
    joysticks.close()


def pad_neutral(controller: GamepadController) -> bool:
    return controller.poll(0.0) == UserInput(0.0, 0.0)


def test_close_stops_the_reader_and_closes_the_device(make_pad: Callable[..., Pad]) -> None:
    pad = make_pad()
    file = pad.controller._file
    assert file is not None
    pad.controller.close()
    assert not pad.controller._thread.is_alive() and file.closed


def test_permission_denied_says_what_to_do() -> None:
    def denied(path: str) -> IO[bytes]:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    with GamepadController(GamepadConfig(), open_device=denied, retry_s=0.01) as controller:
        assert controller.fault == ("no permission to read /dev/input/js0: add your user to the "
                                    "input group (`sudo usermod -aG input $USER`, then log in "
                                    "again)")


# ------------------------------------------------------------------ car gamepad test


def car(argv: list[str]) -> int:
    """`car ARGV` with the gamepad commands registered (as car/cli.py does)."""
    parser = argparse.ArgumentParser(prog="car")
    gamepad_commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture
def no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAR_CONFIG", raising=False)
    return tmp_path


def fifo_gamepad(path: Path, data: bytes, unplug: threading.Event) -> threading.Thread:
    """A gamepad behind a FIFO: writes ``data`` once a reader opens it, closes at ``unplug``."""
    os.mkfifo(path)

    def play() -> None:
        with open(path, "wb", buffering=0) as fifo:  # blocks until `car gamepad test` opens
            for i in range(0, len(data), 12):  # in pieces that split events
                fifo.write(data[i:i + 12])
            unplug.wait(5.0)

    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    return thread


def test_car_gamepad_test_shows_axes_buttons_and_mapping(
        no_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unplug = threading.Event()
    stream = init_state(axes=6, buttons=11) + axis(0, FULL) + axis(4, -FULL) + \
        event(BUTTON, 0, 1) + event(BUTTON, 7, 1)
    player = fifo_gamepad(no_config / "js0", stream, unplug)
    try:
        code = car(["gamepad", "test", "--device", str(no_config / "js0"), "--seconds", "0.3",
                    "--set", "gamepad.expo=0"])
    finally:
        unplug.set()
        player.join(5.0)
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0] == (f"{no_config / 'js0'}: a joystick device; layout xbox: steering axis 0 "
                      "(LX), right = positive; throttle axis 4 (RY), forward = negative; "
                      "buttons: mode 7 (START), record 0 (A), erase 2 (X), estop 1 (B), "
                      "clear_estop 3 (Y); deadzone 0.05, expo 0")
    assert out[1] == "Move each stick and press each button; Ctrl-C ends."
    assert out[-1].endswith("axes 0:+32767 1:+0 2:+0 3:+0 4:-32767 5:+0 | buttons 0(A, record) "
                            "7(START, mode) | steering +1.00 throttle +1.00")
    assert len(out) >= 3 and all(" s  axes " in line for line in out[2:])


def test_car_gamepad_test_unplugged(no_config: Path) -> None:
    unplug = threading.Event()
    unplug.set()  # the gamepad goes away right after its first events
    player = fifo_gamepad(no_config / "js0", init_state(), unplug)
    with pytest.raises(CarError, match=r"the gamepad at .*js0 went away \(the device closed\); "
                       r"plug it back in and run again"):
        car(["gamepad", "test", "--device", str(no_config / "js0"), "--seconds", "5"])
    player.join(5.0)


def test_car_gamepad_test_missing_device_lists_the_ones_there(
        no_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gamepad_commands, "JS_GLOB", str(no_config / "js*"))
    with pytest.raises(CarError, match=r"no gamepad at /dev/input/jsNOPE, and no .*js\* at all: "
                       r"plug one in \(pair it first if it is Bluetooth; see docs/gamepad.md\)"):
        car(["gamepad", "test", "--set", "gamepad.device=/dev/input/jsNOPE"])
    for name in ("js1", "js0"):
        (no_config / name).touch()
    listed = re.escape(f"{no_config}/js0, {no_config}/js1")
    with pytest.raises(CarError, match=f"no gamepad at /dev/input/jsNOPE; joystick devices "
                       f"here: {listed}: pass one with --device, or set gamepad.device"):
        car(["gamepad", "test", "--device", "/dev/input/jsNOPE"])
    with pytest.raises(ConfigError, match=r'gamepad\.layout = "custom" needs'):
        car(["gamepad", "test", "--set", "gamepad.layout=custom"])


def test_live_line_redraws_in_place_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    line = gamepad_commands.LiveLine(Controls.from_config(GamepadConfig(layout="ps5")), out)
    state = JoystickState()
    state.feed(axis(0, -FULL) + event(BUTTON, 8, 1) + event(BUTTON, 12, 1))
    line.show(state)
    line.show(state)
    line.end()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\x1b[K\n")
    assert "buttons 8(create) 12(R3) | steering -1.00 throttle +0.00" in text


def test_a_stick_held_when_the_pad_connects_cannot_drive_off(make_pad: Callable[..., Pad]
                                                             ) -> None:
    pad = make_pad()
    pad.send(init_state() + axis(4, -FULL))  # plugged in (or back) with the throttle held
    assert pad.poll().throttle == 0.0
    pad.send(axis(4, -FULL // 2))
    assert pad.poll().throttle == 0.0  # still never neutral
    pad.send(axis(4, 0))
    pad.send(axis(4, -FULL))
    assert pad.poll().throttle == 1.0  # neutral once: it drives
