"""A third party's CONFIG on the MCU's RX line (injected through the emulator, real bytes):
the host notices within a few of the MCU's frames, says so in one line, holds the loop at
neutral, and puts its own limits back; an MCU that restarts is configured again."""

from __future__ import annotations

import pytest

from car.config import Config, load_config
from car.frames import NEUTRAL, Command, Mode, UserInput
from car.mcu import protocol as p
from car.mcu.actuator import SerialActuator
from car.mcu.emulator import PtyEmulator, RcSignal
from car.modes import Arbiter
from tests.waiting import wait_for

CAL = ["steering.left_us=1100", "steering.center_us=1520", "steering.right_us=1900",
       "throttle.reverse_us=1200", "throttle.forward_us=1800", "actuator.connect_timeout_s=0.5"]
STEER, THR = (1100, 1520, 1900), (1200, 1500, 1800)  # this car's min, neutral, max
ROGUE = p.Config(250, 500, 1500, 2500, 500, 1500, 2500)  # the widest the MCU takes
MAX_FRAMES = 2  # the host notices by the MCU's frame at most this many after the injection


def connect(emu: PtyEmulator, *overrides: str) -> SerialActuator:
    return SerialActuator.connect(load_config(None, [*CAL, *overrides]), emu.path)


def within(pulses: tuple[int, int]) -> bool:
    return STEER[0] <= pulses[0] <= STEER[2] and THR[0] <= pulses[1] <= THR[2]


def ours(emu: PtyEmulator) -> bool:
    """The MCU's limits are this car's again."""
    return emu.core.limits.steer == STEER and emu.core.limits.thr == THR


def outputs_since(emu: PtyEmulator, index: int) -> list[tuple[int, int]]:
    """Every change of the MCU's outputs from the ``index``-th on."""
    return [out for _, out in list(emu.emulator.outputs)[index:]]


def frames_to_notice(act: SerialActuator, emu: PtyEmulator) -> int:
    """MCU frames from the injection to the one that showed the host the tamper."""
    detected = act.link.guard.detected_seq
    assert detected is not None and emu.injected_seqs
    return (detected - emu.injected_seqs[0]) % 256


def watch(act: SerialActuator) -> list[tuple[bool, p.Telemetry]]:
    """Every TELEMETRY the host takes, marked True once a tamper was seen and this car's
    CONFIG acknowledged after it (its limits restored)."""
    guard = act.link.guard
    seen: list[tuple[bool, p.Telemetry]] = []
    act.link.on_telemetry.append(
        lambda t: seen.append((guard.tampers > 0 and not guard.restore, t)))
    return seen


def one_line(fault: str | None) -> str:
    assert fault is not None and "\n" not in fault
    return fault


def test_a_rogue_config_is_noticed_reported_held_neutral_and_undone(emu: PtyEmulator) -> None:
    act = connect(emu)
    arbiter = Arbiter(Config().drive, 20.0, Mode.USER)
    seen = watch(act)
    try:
        act.send(Command(0.5, 0.5))
        assert wait_for(lambda: emu.core.outputs == (1710, 1650))
        assert act.fault is None
        # Someone else widens the limits to 500-2500 µs and drives beyond this car's.
        rogue_seq = ((emu.core.last_seq or 0) + 100) % 256
        emu.inject(p.encode(ROGUE, rogue_seq)
                   + p.encode(p.Drive(2400, 2400), (rogue_seq + 1) % 256))
        assert wait_for(lambda: act.fault is not None)
        assert frames_to_notice(act, emu) <= MAX_FRAMES  # its CONFIG_ACK gave it away
        fault = one_line(act.fault)
        assert "configured by someone else" in fault and f"SEQ {rogue_seq}," in fault
        assert "steering 1100-1900 µs, throttle 1200-1800 µs" in fault
        assert f"fuser {emu.path}" in fault
        assert wait_for(lambda: ours(emu))  # the host re-sent its own CONFIG
        restored_at = len(emu.emulator.outputs)
        drives = emu.core.counts.drives
        for tick in range(5):  # the loop, faulted: neutral, and it stays so (latched)
            d = arbiter.decide(UserInput(0.5, 0.5), None, stale=False, now_s=tick * 0.05,
                               actuator_fault=act.fault is not None)
            assert d.command == NEUTRAL and d.reason == "actuator_fault"
            act.send(d.command)
        assert wait_for(lambda: emu.core.counts.drives == drives + 5)
        assert emu.core.outputs == (STEER[1], THR[1])
        # The third party goes on driving: the MCU clamps it to this car's limits now.
        emu.inject(p.encode(p.Drive(2450, 550), (rogue_seq + 2) % 256))
        assert wait_for(lambda: (STEER[2], THR[0]) in outputs_since(emu, restored_at))
        assert one_line(act.fault) == fault
        assert all(within(out) for out in outputs_since(emu, restored_at))
        assert wait_for(lambda: sum(restored for restored, _ in seen) >= 5)
        assert all(within((t.applied_steering_us, t.applied_throttle_us))
                   for restored, t in list(seen) if restored)
        report = act.report()
        assert report["config_tampers"] >= 1 and report["config_resends"] >= 1
        assert "CONFIG(s) by someone else" in act.health().line
    finally:
        act.close()


def test_a_second_ack_for_the_hosts_own_config_seq_is_reported(emu: PtyEmulator) -> None:
    """The same limits as the host's, under the SEQ of the host's own CONFIG: the MCU's
    second CONFIG_ACK for that SEQ cannot be the host's."""
    act = connect(emu)
    try:
        seq = act.link.guard.last_acked
        assert seq is not None
        emu.inject(p.encode(act.link.config, seq))
        assert wait_for(lambda: act.fault is not None)
        assert f"a CONFIG_ACK for SEQ {seq}, a CONFIG this car did not send" in \
            one_line(act.fault)
        assert frames_to_notice(act, emu) <= MAX_FRAMES
    finally:
        act.close()


def test_a_rogue_config_whose_ack_is_lost_shows_in_telemetry(emu: PtyEmulator) -> None:
    """Its CONFIG_ACK lost on the line, a rogue CONFIG with RC passthrough lets the
    transmitter through beyond this car's limits: TELEMETRY gives it away."""
    emu.set_rc(RcSignal("fixed", 2150, 1500))
    act = connect(emu)
    act.link.reassert_s = 60.0  # so only TELEMETRY can show it
    seen = watch(act)
    try:
        assert wait_for(lambda: act.telemetry is not None and act.telemetry.failsafe)
        emu.inject(p.encode(p.Config(250, 500, 1500, 2500, 500, 1500, 2500,
                                     p.CFG_RC_PASSTHROUGH), 7), lose_replies=True)
        assert wait_for(lambda: act.fault is not None)
        assert frames_to_notice(act, emu) <= MAX_FRAMES
        assert "TELEMETRY shows RC passthrough, which this car did not configure" in \
            one_line(act.fault)
        assert wait_for(lambda: ours(emu) and not emu.core.limits.passthrough)
        assert wait_for(lambda: sum(restored for restored, _ in seen) >= 3)
        after = [t for restored, t in list(seen) if restored]
        assert all(not t.passthrough and t.failsafe for t in after)
        assert {(t.applied_steering_us, t.applied_throttle_us) for t in after} == \
            {(STEER[1], THR[1])}
        assert act.fault is not None  # held for the rest of the session
    finally:
        act.close()


def test_a_rogue_config_whose_ack_is_lost_is_overwritten(emu: PtyEmulator) -> None:
    """Widened limits with the same neutral do not show while the host drives in its own
    limits; its CONFIG, sent again every ``reassert_s``, puts its limits back."""
    act = connect(emu)
    act.link.reassert_s = 0.2
    try:
        act.send(Command(0.5, 0.5))
        assert wait_for(lambda: emu.core.outputs == (1710, 1650))
        emu.inject(p.encode(p.Config(250, 500, 1520, 2500, 500, 1500, 2500), 7),
                   lose_replies=True)
        assert wait_for(lambda: emu.core.limits.steer == (500, 1520, 2500))
        assert wait_for(lambda: ours(emu))
        act.link.send_drive(2400, 600, p.ENGAGE)  # beyond this car's limits: clamped
        assert wait_for(lambda: emu.core.outputs == (STEER[2], THR[0]))
    finally:
        act.close()


@pytest.mark.parametrize("driving", [False, True])
def test_an_mcu_that_restarts_is_configured_again(emu: PtyEmulator, driving: bool) -> None:
    act = connect(emu, "actuator.timeout_ms=400")
    act.link.reassert_s = 60.0  # the CONFIGURED bit, not the periodic CONFIG, tells
    try:
        if driving:
            act.send(Command(0.5, 0.5))
            assert wait_for(lambda: emu.core.outputs == (1710, 1650))
        emu.reboot()  # boot limits 1000-2000 µs, timeout 250 ms, not configured
        assert wait_for(lambda: act.link.guard.restore_requests == 1)
        assert wait_for(lambda: ours(emu) and emu.core.limits.timeout_ms == 400)
        assert wait_for(lambda: act.fault is None)  # not someone else: it clears
        assert act.link.guard.tampers == 0
        act.send(Command(-0.5, 0.0))
        assert wait_for(lambda: emu.core.outputs == (1310, 1500))
    finally:
        act.close()
