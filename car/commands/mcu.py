"""`car mcu emulate` (an MCU on a pseudo-terminal) and `car mcu status` (ask a real one)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

from car.commands import add_config_options, bounded, config_from_args
from car.errors import CarError
from car.mcu.emulator import Battery, Emulator, PtyEmulator, RcSignal


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("mcu", help="the serial microcontroller: emulate one, or query one")
    sub = p.add_subparsers(dest="mcu_command", metavar="ACTION", required=True)

    e = sub.add_parser("emulate", help="run an MCU emulator on a pseudo-terminal and print its "
                       "port, e.g. `car drive ... --port $(car mcu emulate --detach)`")
    e.add_argument("--rc", default="none", metavar="SIGNAL",
                   help="simulated RC receiver: none (default), center, sweep or STEER_US,"
                        "THROTTLE_US")
    e.add_argument("--battery-mv", type=bounded(int, 3000, 30000), default=8200,
                   help="battery voltage at start, in mV (default 8200, a full 2S LiPo)")
    e.add_argument("--telemetry-hz", type=bounded(float, 50.0, 1000.0), default=50.0,
                   help="telemetry rate, 50 to 1000 Hz (default 50)")
    e.add_argument("--name", default="car-emulator", help="firmware name sent in PONG")
    e.add_argument("--detach", action="store_true",
                   help="run in the background: print the port and return at once")
    e.add_argument("--log", metavar="FILE", help="with --detach: where the emulator's events "
                   "go (default: /tmp/car-mcu-emulator-PID.log)")
    e.set_defaults(handler=emulate_command)

    s = sub.add_parser("status", help="connect to the MCU, show its firmware and telemetry")
    s.add_argument("--port", help="serial port (default: actuator.port in car.toml)")
    s.add_argument("--seconds", type=bounded(float, 0.0, 3600.0), default=1.0,
                   help="how long to show telemetry (default 1)")
    s.add_argument("--clear-estop", action="store_true",
                   help="release an e-stop latched on the MCU (one DRIVE with flags 0; the "
                        "outputs stay neutral)")
    add_config_options(s)
    s.set_defaults(handler=status_command)


def emulate_command(args: argparse.Namespace) -> int:
    try:
        rc = RcSignal.parse(args.rc)
    except ValueError as exc:
        raise CarError(str(exc)) from None
    if len(args.name.encode("ascii", errors="replace")) > 16 or not args.name.isascii():
        raise CarError(f"--name {args.name!r}: at most 16 ASCII characters")
    emulator = Emulator(firmware=args.name, telemetry_hz=args.telemetry_hz, rc=rc,
                        battery=Battery(full_mv=args.battery_mv), start_s=time.monotonic())

    def show(t: float, what: str) -> None:
        print(f"{t - emulator.start_s:9.3f} s  {what}", file=sys.stderr, flush=True)

    pty = PtyEmulator(emulator, on_event=show)
    if args.detach:
        return _detach(pty, args.log)
    print(pty.path, flush=True)
    print(f"MCU emulator on {pty.path} (firmware {args.name!r}, RC {args.rc}); Ctrl-C stops",
          file=sys.stderr)
    _serve(pty)
    return 0


def _serve(pty: PtyEmulator) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        pty.run()
    except KeyboardInterrupt:
        pass
    finally:
        c = pty.core.counts
        pc = pty.core.parser.counts
        print(f"emulator stopped: {c.drives} DRIVE ({c.duplicates} duplicate), {c.configs} "
              f"CONFIG, {c.pings} PING, {c.watchdog_trips} watchdog trip(s), "
              f"{pc.dropped} bad frame(s)", file=sys.stderr, flush=True)
        pty.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # `kill PID` stops the emulator as Ctrl-C does


def _detach(pty: PtyEmulator, log_path: str | None) -> int:
    """Fork: the child serves in its own session with its output in a log file; the
    parent prints the port and returns, so `$(car mcu emulate --detach)` works."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        print(pty.path, flush=True)
        log_name = log_path or f"/tmp/car-mcu-emulator-{pid}.log"
        print(f"MCU emulator pid {pid} on {pty.path}, events in {log_name}; stop it with "
              f"`kill {pid}`", file=sys.stderr)
        return 0
    os.setsid()
    log_name = log_path or f"/tmp/car-mcu-emulator-{os.getpid()}.log"
    fd = os.open(log_name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    print(f"MCU emulator on {pty.path}", file=sys.stderr, flush=True)
    try:
        _serve(pty)
    finally:
        os._exit(0)


def status_command(args: argparse.Namespace) -> int:
    from car.mcu.actuator import SerialActuator

    config = config_from_args(args)
    actuator = SerialActuator.connect(config, args.port)
    link = actuator.link
    try:
        pong = link.pong
        assert pong is not None
        print(f"{link.port}: firmware {pong.firmware!r}, protocol v{pong.protocol_version}")
        if args.clear_estop:
            link.send_drive(*actuator.pulses.neutral, 0)
            print("sent the release (DRIVE, flags 0); the e-stop latch is cleared")
        deadline = time.monotonic() + args.seconds
        while True:
            time.sleep(0.2)
            print(_describe(actuator.telemetry))
            if link.fault is not None:
                print(f"FAULT: {link.fault}")
            if time.monotonic() >= deadline:
                break
    finally:
        link.close()  # no last DRIVE: looking must not change the MCU's state
    return 0


def _describe(t: Any) -> str:
    if t is None:
        return "no telemetry"
    flags = [name for name, on in (("FAILSAFE", t.failsafe), ("ESTOP", t.estop),
                                   ("RC_PASSTHROUGH", t.passthrough),
                                   ("CONFIGURED", t.configured)) if on]
    rc = f"{t.rc_steering_us}/{t.rc_throttle_us} µs" if t.rc_present else "no signal"
    return (f"applied {t.applied_steering_us}/{t.applied_throttle_us} µs, RC {rc}, battery "
            f"{t.battery_mv / 1000:.2f} V, status {' '.join(flags) or '-'}, last seq "
            f"{t.last_seq}")
