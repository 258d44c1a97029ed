"""The MCU's rules on the emulator, on a fake clock: the watchdog to the millisecond,
telemetry rate, RC passthrough, battery."""

from __future__ import annotations

import pytest

from car.mcu import protocol as p
from car.mcu.emulator import Battery, Emulator, RcSignal


def telemetry(out: bytes) -> list[p.Telemetry]:
    parser = p.FrameParser(dict(p.MCU_TO_HOST))
    return [m for m in (f.message() for f in parser.feed(out)) if isinstance(m, p.Telemetry)]


@pytest.mark.parametrize("timeout_ms", [250, 100, 1000])
def test_watchdog_neutral_exactly_at_timeout(timeout_ms: int) -> None:
    emu = Emulator(start_s=10.0)
    config = p.Config(timeout_ms, 1000, 1500, 2000, 1000, 1500, 2000)
    emu.step(p.encode(config, 0), 10.0)
    emu.step(p.encode(p.Drive(1700, 1600), 1), 10.5)  # last DRIVE at 500 ms
    assert emu.core.outputs == (1700, 1600) and not emu.core.failsafe
    emu.step(b"", 10.5 + (timeout_ms - 1) / 1000)
    assert emu.core.outputs == (1700, 1600)  # 1 ms before: still driving
    out = emu.step(b"", 10.5 + timeout_ms / 1000)
    assert emu.core.outputs == (1500, 1500) and emu.core.failsafe
    assert emu.core.counts.watchdog_trips == 1
    assert emu.events[-1] == (10.5 + timeout_ms / 1000, "FAILSAFE on")
    [t] = telemetry(out) or telemetry(emu.step(b"", 10.5 + timeout_ms / 1000 + 0.02))
    assert t.failsafe and (t.applied_steering_us, t.applied_throttle_us) == (1500, 1500)


def test_boot_is_failsafe_and_telemetry_runs_at_its_rate() -> None:
    emu = Emulator(telemetry_hz=50, start_s=0.0)
    frames = []
    for i in range(1001):  # 1 s at 1 ms
        frames += telemetry(emu.step(b"", i / 1000))
    assert len(frames) == 51  # at 0, 20, ..., 1000 ms
    assert all(t.failsafe and not t.configured for t in frames)
    assert {(t.applied_steering_us, t.applied_throttle_us) for t in frames} == {(1500, 1500)}


def test_rc_passthrough_only_in_failsafe_and_when_configured() -> None:
    emu = Emulator(rc=RcSignal.parse("1900,1700"), start_s=0.0)
    emu.step(p.encode(p.Config(250, 1100, 1500, 1850, 1200, 1500, 1800, 0), 0), 0.0)
    emu.step(b"", 0.3)
    assert emu.core.outputs == (1500, 1500)  # not configured for passthrough
    emu.step(p.encode(p.Config(250, 1100, 1500, 1850, 1200, 1500, 1800,
                               p.CFG_RC_PASSTHROUGH), 1), 0.31)
    [t] = telemetry(emu.step(b"", 0.4))
    assert t.passthrough and (t.applied_steering_us, t.applied_throttle_us) == (1850, 1700)
    emu.step(p.encode(p.Drive(1600, 1550), 2), 0.5)  # the host is back: it drives
    assert emu.core.outputs == (1600, 1550) and not emu.core.passing_through
    emu.rc = RcSignal("none")
    emu.step(b"", 0.8)
    assert emu.core.failsafe and emu.core.outputs == (1500, 1500)  # no signal: neutral


def test_rc_signals_and_battery() -> None:
    assert RcSignal.parse("none").at(1.0) == (0, 0)
    assert RcSignal.parse("center").at(1.0) == (1500, 1500)
    assert RcSignal.parse("sweep").at(1.0) == (1900, 1560)
    with pytest.raises(ValueError, match="800 to 2200"):
        RcSignal.parse("100,1500")
    with pytest.raises(ValueError, match="expected none, center, sweep"):
        RcSignal.parse("fast")
    battery = Battery(full_mv=8200)
    assert battery.at(0, 1500, 1500) == 8200
    assert battery.at(60, 1500, 1500) == 8180  # drains with time
    assert battery.at(0, 2000, 1500) == 7800  # sags under full throttle
