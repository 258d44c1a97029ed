"""A tiny line language that drives an MCU core, so the Python core and the C firmware core
(through ``firmware/test/harness.c``) run the same scenarios and must print the same lines.

Input lines, one command each:

- ``rc S T``: the RC receiver now reads S, T µs (0 0: no signal);
- ``bat MV``: the battery now reads MV millivolts;
- ``rx T HEX``: the bytes HEX arrive at T ms → prints ``tx HEX`` (the replies; ``tx -``
  for none);
- ``tick T``: run the watchdog at T ms (prints nothing);
- ``state`` → ``state STEER_US THR_US STATUS LAST_SEQ`` (LAST_SEQ -1 before any DRIVE);
- ``telemetry`` → ``tx HEX`` (one TELEMETRY frame);
- ``counts`` → ``counts FRAMES BAD_CRC BAD_LENGTH UNKNOWN_TYPE SKIPPED DRIVES DUPLICATES
  CONFIGS CONFIG_REJECTED PINGS WATCHDOG_TRIPS``.
"""

from __future__ import annotations

from collections.abc import Iterable

from car.mcu.core import McuCore


def run_script(lines: Iterable[str], firmware: str = "car-mcu") -> list[str]:
    core = McuCore(firmware=firmware)
    out: list[str] = []
    for line in lines:
        words = line.split()
        if not words:
            continue
        cmd, args = words[0], words[1:]
        if cmd == "rc":
            core.rc = (int(args[0]), int(args[1]))
        elif cmd == "bat":
            core.battery_mv = int(args[0])
        elif cmd == "rx":
            reply = core.receive(bytes.fromhex(args[1]) if len(args) > 1 else b"", int(args[0]))
            out.append(f"tx {reply.hex() or '-'}")
        elif cmd == "tick":
            core.tick(int(args[0]))
        elif cmd == "state":
            steer, thr = core.outputs
            seq = -1 if core.last_seq is None else core.last_seq
            out.append(f"state {steer} {thr} {core.status} {seq}")
        elif cmd == "telemetry":
            out.append(f"tx {core.telemetry().hex()}")
        elif cmd == "counts":
            pc, cc = core.parser.counts, core.counts
            values = (pc.frames, pc.bad_crc, pc.bad_length, pc.unknown_type, pc.skipped_bytes,
                      cc.drives, cc.duplicates, cc.configs, cc.config_rejected, cc.pings,
                      cc.watchdog_trips)
            out.append("counts " + " ".join(map(str, values)))
        else:
            raise ValueError(f"unknown script command {line!r}")
    return out
