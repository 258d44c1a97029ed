"""Host ↔ MCU emulator over a real pseudo-terminal: the bytes the car would send a board."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import serial

from car.actuator import ActuatorError
from car.config import Config, load_config
from car.controllers.rc import RcController
from car.frames import ESTOP, NEUTRAL, Command, Mode, UserInput
from car.mcu import protocol as p
from car.mcu.actuator import SerialActuator
from car.mcu.emulator import PtyEmulator, RcSignal
from car.mcu.link import McuLink
from car.modes import Arbiter
from tests.waiting import wait_for

CAL = ["steering.left_us=1100", "steering.center_us=1520", "steering.right_us=1900",
       "throttle.reverse_us=1200", "throttle.forward_us=1800", "actuator.connect_timeout_s=0.5"]


def connect(emu: PtyEmulator, *overrides: str) -> SerialActuator:
    return SerialActuator.connect(load_config(None, [*CAL, *overrides]), emu.path)


def applied(act: SerialActuator) -> tuple[int, int] | None:
    t = act.telemetry
    return None if t is None else (t.applied_steering_us, t.applied_throttle_us)


def test_connect_configures_and_commands_are_mapped_and_applied(emu: PtyEmulator) -> None:
    act = connect(emu)
    try:
        assert act.link.pong == p.Pong(1, "car-emulator")
        core = emu.core
        assert core.configured and core.limits.steer == (1100, 1520, 1900)
        assert core.limits.thr == (1200, 1500, 1800) and core.limits.timeout_ms == 250
        for command, pulses in ((Command(-1.0, 1.0), (1100, 1800)),
                                (Command(0.5, -0.5), (1710, 1350)),
                                (Command(3.0, float("nan")), (1900, 1500))):
            act.send(command)
            assert wait_for(lambda pulses=pulses: applied(act) == pulses), applied(act)
        act.link.send_drive(2400, 600, p.ENGAGE)  # out of limits: the MCU clamps
        assert wait_for(lambda: applied(act) == (1900, 1200))
        assert act.fault is None and not act.telemetry.failsafe  # type: ignore[union-attr]
    finally:
        act.close()
    assert wait_for(lambda: emu.core.outputs == (1520, 1500))  # close: disengaged


def test_duplicate_seq_is_ignored_over_the_wire(emu: PtyEmulator) -> None:
    with serial.Serial(emu.path, 115200, timeout=0.1) as port:
        port.write(p.encode(p.Drive(1600, 1600), 9))
        assert wait_for(lambda: emu.core.outputs == (1600, 1600))
        port.write(p.encode(p.Drive(1700, 1700), 9))  # same SEQ: a duplicate
        port.write(p.encode(p.Drive(1650, 1650), 10))
        assert wait_for(lambda: emu.core.outputs == (1650, 1650))
        assert emu.core.counts.duplicates == 1 and emu.core.counts.drives == 2


def test_estop_latches_on_the_mcu_and_clears_with_a_zero_flags_drive(emu: PtyEmulator) -> None:
    act = connect(emu)
    try:
        act.send(Command(0.5, 0.5))
        assert wait_for(lambda: emu.core.outputs == (1710, 1650))
        act.send(ESTOP)
        assert wait_for(lambda: act.telemetry is not None and act.telemetry.estop)
        assert emu.core.outputs == (1520, 1500)
        act.link.send_drive(1800, 1800, p.ENGAGE)  # ENGAGE alone does not clear the latch
        assert wait_for(lambda: emu.core.counts.drives >= 3)
        assert emu.core.estop and emu.core.outputs == (1520, 1500)
        act.send(Command(0.5, 0.5))  # the loop cleared its stop: flags 0 first, neutral
        assert wait_for(lambda: not emu.core.estop)
        assert emu.core.outputs == (1520, 1500)
        act.send(Command(0.5, 0.5))  # then ENGAGE works again
        assert wait_for(lambda: emu.core.outputs == (1710, 1650))
    finally:
        act.close()


def test_rc_passthrough_when_the_host_stops(emu: PtyEmulator) -> None:
    emu.set_rc(RcSignal.parse("1950,1600"))
    act = connect(emu, "actuator.rc_passthrough=true")
    try:
        act.send(Command(0.0, 0.0))
        assert wait_for(lambda: not emu.core.failsafe)
        # Nothing more is sent: after 250 ms the transmitter drives, clamped to the limits.
        assert wait_for(lambda: applied(act) == (1900, 1600) and act.telemetry.passthrough)
        rc = RcController(act, act.pulses, Mode.USER)
        user = rc.poll(0.0)
        assert user.mode is Mode.USER and user.steering == 1.0
        assert user.throttle == pytest.approx(100 / 300)
        emu.set_rc(RcSignal("none"))
        assert wait_for(lambda: applied(act) == (1520, 1500))
        assert rc.poll(0.1) == UserInput(0.0, 0.0)
    finally:
        act.close()


def test_config_that_the_mcu_refuses(emu: PtyEmulator) -> None:
    bad = p.Config(250, 1500, 1500, 1900, 1200, 1500, 1800)  # min == neutral
    link = McuLink(emu.path, bad, connect_timeout_s=0.5)
    with pytest.raises(ActuatorError, match="did not acknowledge CONFIG"):
        link.open()
    assert emu.core.counts.config_rejected == 3 and not emu.core.configured


def test_bad_ports_and_silent_or_foreign_devices(emu: PtyEmulator) -> None:
    config = load_config(None, CAL)
    with pytest.raises(ActuatorError, match="does not exist; is the MCU plugged in"):
        SerialActuator.connect(config, "/dev/ttyNOPE0")
    with pytest.raises(ActuatorError, match="is not a serial port"):
        SerialActuator.connect(config, os.devnull)
    with serial.Serial(emu.path, exclusive=True), \
            pytest.raises(ActuatorError, match="is busy: another program has it open"):
        SerialActuator.connect(config, emu.path)
    master, slave = os.openpty()  # a port where nothing answers
    try:  # it gives up after actuator.connect_timeout_s (0.5 s), and says so
        with pytest.raises(ActuatorError, match=r"no answer to PING in 0\.5 s"):
            SerialActuator.connect(config, os.ttyname(slave))
    finally:
        os.close(master)
        os.close(slave)


def test_protocol_version_mismatch() -> None:
    master, slave = os.openpty()
    stop = threading.Event()

    def old_firmware() -> None:  # answers every PING with a PONG of protocol v2
        parser = p.FrameParser(dict(p.HOST_TO_MCU))
        while not stop.is_set():
            try:
                data = os.read(master, 256)
            except OSError:
                return
            for frame in parser.feed(data):
                if frame.type == p.PING:
                    os.write(master, p.encode(p.Pong(2, "future-fw"), 0))

    thread = threading.Thread(target=old_firmware, daemon=True)
    thread.start()
    try:
        with pytest.raises(ActuatorError, match=r"protocol v2 \(future-fw\), this car speaks v1"):
            SerialActuator.connect(load_config(None, CAL), os.ttyname(slave))
    finally:
        stop.set()
        os.close(slave)
        os.close(master)


def test_link_loss_goes_neutral_and_reconnects(emu: PtyEmulator) -> None:
    act = connect(emu)
    arbiter = Arbiter(Config().drive, 20.0, Mode.USER)
    try:
        act.send(Command(0.5, 0.5))
        assert wait_for(lambda: applied(act) == (1710, 1650))
        emu.frozen.set()  # the MCU hangs: no telemetry
        assert wait_for(lambda: act.fault is not None, 3.0)
        assert "no telemetry" in act.fault  # type: ignore[operator]
        assert wait_for(lambda: act.link.stats.losses == 1)  # the port is closed to reopen
        d = arbiter.decide(UserInput(0.5, 0.5), None, stale=False, now_s=1.0,
                           actuator_fault=act.fault is not None)
        assert d.command == NEUTRAL and d.reason == "actuator_fault"
        act.send(d.command)  # while down: skipped and counted, never raises
        emu.frozen.clear()
        assert wait_for(lambda: act.fault is None and act.link.stats.reconnects == 1, 5.0)
        act.send(Command(-0.5, 0.0))
        assert wait_for(lambda: applied(act) == (1310, 1500))
        health = act.health().data
        assert health["losses"] == 1 and health["reconnects"] == 1
        assert health["send_skipped"] >= 1 and health["battery_v"] > 6
    finally:
        act.close()


HOST = """
import sys, time
from car.config import load_config
from car.frames import Command
from car.mcu.actuator import SerialActuator
act = SerialActuator.connect(load_config(None, []), sys.argv[1])
print("driving", flush=True)
while True:
    act.send(Command(0.3, 0.4))
    time.sleep(0.05)
"""


def test_killing_the_host_makes_the_mcu_fail_safe(emu: PtyEmulator) -> None:
    host = subprocess.Popen([sys.executable, "-c", HOST, emu.path], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert host.stdout is not None and host.stdout.readline().strip() == "driving"
        assert wait_for(lambda: emu.core.outputs == (1650, 1700))
        os.kill(host.pid, signal.SIGKILL)
        killed_s = time.monotonic()
        host.wait()
        assert wait_for(lambda: emu.core.failsafe, 2.0)
        delay_ms = (time.monotonic() - killed_s) * 1000
        assert emu.core.outputs == (1500, 1500)
        print(f"failsafe {delay_ms:.0f} ms after the kill (watchdog 250 ms)")
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()


def test_a_new_session_never_starts_on_the_last_applied_seq(emu: PtyEmulator,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    first = connect(emu)
    first.send(Command(0.2, 0.0))
    first.close()  # its last DRIVE (flags 0) is applied: the MCU's last SEQ
    assert wait_for(lambda: emu.core.last_seq is not None and emu.core.counts.drives == 2)
    last = emu.core.last_seq
    # The next session's PING and CONFIG take two SEQs; its first DRIVE would be `last`.
    monkeypatch.setattr("car.mcu.link.secrets.randbelow", lambda n: (last - 2) % 256)
    second = connect(emu)
    try:
        second.send(Command(0.5, 0.0))
        assert wait_for(lambda: emu.core.outputs == (1710, 1500))
        assert emu.core.counts.duplicates == 0
    finally:
        second.close()


def latch_and_leave(emu: PtyEmulator) -> None:
    """A host that e-stops and dies: the MCU keeps the latch."""
    with serial.Serial(emu.path, 115200, timeout=0.1) as port:
        port.write(p.encode(p.Drive(1500, 1500, p.ESTOP), 40))
        assert wait_for(lambda: emu.core.estop)


def test_a_latch_left_by_a_crashed_session_is_kept_until_the_user_clears_it(
        emu: PtyEmulator) -> None:
    latch_and_leave(emu)
    act = connect(emu)
    try:
        assert act.latched_at_connect
        act.send(ESTOP)  # what the loop sends while its e-stop is on
        assert wait_for(lambda: emu.core.counts.drives >= 2) and emu.core.estop
        act.send(Command(0.5, 0.0))  # the user's clear: flags 0 releases the latch
        act.send(Command(0.5, 0.0))
        assert wait_for(lambda: emu.core.outputs == (1710, 1500) and not emu.core.estop)
    finally:
        act.close()


def test_an_estop_survives_the_end_of_the_session_and_a_link_loss(emu: PtyEmulator) -> None:
    act = connect(emu)
    act.send(ESTOP)
    act.close()  # the last DRIVE keeps ESTOP: the latch stays
    assert wait_for(lambda: emu.core.counts.drives == 2) and emu.core.estop
    act = connect(emu)
    try:
        assert act.latched_at_connect
        emu.frozen.set()
        assert wait_for(lambda: act.link.stats.losses == 1)
        act.send(Command(0.2, 0.0))  # the user clears while the link is down: skipped
        assert act.link.stats.send_skipped == 1
        emu.frozen.clear()
        assert wait_for(lambda: act.fault is None)
        assert emu.core.estop  # still latched after the reconnect
        act.send(Command(0.2, 0.0))  # now the release goes out, then ENGAGE
        act.send(Command(0.2, 0.0))
        assert wait_for(lambda: emu.core.outputs == (1596, 1500) and not emu.core.estop)
    finally:
        act.close()


def test_close_during_a_reconnect_leaves_no_port_open(emu: PtyEmulator) -> None:
    act = connect(emu, "actuator.connect_timeout_s=10")
    emu.frozen.set()
    assert wait_for(lambda: act.link.stats.losses == 1)
    sent = act.link.stats.sent
    # A PING after the loss: the reader is inside a reconnect, waiting up to 10 s for PONG.
    assert wait_for(lambda: act.link.stats.sent > sent)
    act.close()
    # close() cut that wait short: its reader has ended (it waits 2 s at most for it), so
    # nothing can reopen the port once the MCU answers again
    assert act.link._thread is not None and not act.link._thread.is_alive()
    emu.frozen.clear()
    with serial.Serial(emu.path, exclusive=True):  # nobody holds the port
        pass
