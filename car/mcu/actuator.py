"""SerialActuator: the drive loop's Actuator for the MCU, over ``McuLink``.

Commands are mapped to pulses through the calibration (``PulseMap``) and sent as one DRIVE
per tick with ENGAGE set; an e-stop command is sent with ESTOP, which the MCU latches. Only
the user's clear releases the latch: the loop sends e-stop commands (its watchdog and its
last command included) for as long as its e-stop is on, and the first other command after
them goes out as a DRIVE with flags 0, the release the protocol allows, before ENGAGE
resumes. ``close()`` ends with a disengaged DRIVE, or ESTOP while stopped.

``fault`` covers the link and the MCU's configuration: a CONFIG from anyone else than this
car (``car.mcu.guard``) holds the loop at neutral for the rest of the session.
"""

from __future__ import annotations

import logging
from typing import Any

from car.actuator import Actuator
from car.config import Config
from car.frames import NEUTRAL, Command
from car.health import Health
from car.mcu import protocol as p
from car.mcu.link import McuLink
from car.mcu.pulses import PulseMap
from car.modes import LimitedLog

log = logging.getLogger(__name__)


class SerialActuator:
    """Drives the servo and ESC through the MCU; exposes its telemetry and link health."""

    def __init__(self, link: McuLink, pulses: PulseMap):
        self.link = link
        self.pulses = pulses
        self.sent = 0
        self.latched_at_connect = False  # the MCU reported an e-stop latch when we connected
        self._estop_sent = False
        self._follower: Actuator | None = None
        self._log = LimitedLog(log)

    @classmethod
    def connect(cls, config: Config, port: str | None = None) -> SerialActuator:
        """Open the MCU named by ``actuator.port`` (or ``port``), configure it, start reading."""
        a = config.actuator
        pulses = PulseMap.from_config(config)
        link = McuLink(port or a.port, pulses.config_message(a), baud=a.baud,
                       connect_timeout_s=a.connect_timeout_s)
        link.open()
        actuator = cls(link.start(), pulses)
        t = link.telemetry
        if t is not None and t.estop:  # a session that ended e-stopped (a crash, a kill)
            actuator.latched_at_connect = True
            actuator._estop_sent = True  # the user's clear will send flags 0
        return actuator

    def send(self, command: Command) -> None:
        if command.estop:
            self._estop_sent = True
            flags = p.ESTOP
        elif self._estop_sent:  # the user cleared the stop: release the MCU's latch with
            flags = 0  # a DRIVE with flags == 0 (neutral); ENGAGE follows next tick
        else:
            flags = p.ENGAGE
        steering_us = self.pulses.steering.to_us(command.steering)
        throttle_us = self.pulses.throttle.to_us(command.throttle)
        if self.link.send_drive(steering_us, throttle_us, flags):
            self.sent += 1
            if flags == 0:
                self._estop_sent = False  # only once the release really went out
        t = self.link.telemetry
        if t is not None and t.failsafe and self.sent > 10:
            self._log.warning("failsafe", self.link.clock(), "the MCU on %s reports FAILSAFE "
                              "although commands are sent: are they reaching it (TX wire, "
                              "baud)?", self.link.port)
        if self._follower is not None and \
                self.link.telemetry_age_s() > self.link.config.timeout_ms / 1000.0:
            self._follower.send(NEUTRAL)  # no telemetry: the MCU has failed safe

    def follow(self, target: Actuator) -> None:
        """Hardware in the loop: ``target`` (a simulated car) gets the pulses the MCU reports
        applying, from the link's reader thread, and neutral once the MCU has gone silent
        for its watchdog time (it has failed safe)."""
        pulses = self.pulses

        def on_telemetry(t: p.Telemetry) -> None:
            target.send(Command(pulses.steering.from_us(t.applied_steering_us),
                                pulses.throttle.from_us(t.applied_throttle_us)))

        self._follower = target
        self.link.on_telemetry.append(on_telemetry)

    @property
    def fault(self) -> str | None:
        return self.link.fault

    @property
    def telemetry(self) -> p.Telemetry | None:
        return self.link.telemetry

    def describe(self) -> str:
        return f"the MCU on {self.link.port}"

    def status(self) -> dict[str, Any]:
        """The web page's MCU fields: fault, battery and failsafe."""
        out: dict[str, Any] = {"mcu": True, "mcu_fault": self.link.fault}
        t = self.link.telemetry
        if t is not None:
            out["battery_v"] = round(t.battery_mv / 1000.0, 2)
            out["mcu_failsafe"] = t.failsafe
        return out

    def health(self) -> Health:
        """Link and MCU state for the run summary."""
        m = self.report()
        battery = f", battery {m['battery_v']:.2f} V" if m["battery_v"] is not None else ""
        foreign = f", {m['config_tampers']} CONFIG(s) by someone else" \
            if m["config_tampers"] else ""
        line = (f"mcu {m['port']} ({m['firmware']}): {m['sent']} frames sent, "
                f"{m['telemetry']} telemetry{battery}, {m['losses']} link loss(es), "
                f"{m['reconnects']} reconnect(s), {sum(m['rx_dropped'].values())} bad "
                f"frame(s) received{foreign}")
        return Health("mcu", m, line)

    def report(self) -> dict[str, Any]:
        """Link and MCU state, as plain data."""
        t = self.link.telemetry
        s = self.link.stats
        c = self.link.parser.counts
        return {
            "port": self.link.port,
            "firmware": self.link.pong.firmware if self.link.pong else None,
            "fault": self.link.fault,
            "battery_v": round(t.battery_mv / 1000.0, 3) if t is not None else None,
            "failsafe": t.failsafe if t is not None else None,
            "estop": t.estop if t is not None else None,
            "rc_present": t.rc_present if t is not None else None,
            "sent": s.sent, "send_skipped": s.send_skipped, "telemetry": s.telemetry,
            "losses": s.losses, "reconnects": s.reconnects, "write_timeouts": s.write_timeouts,
            "config_tampers": self.link.guard.tampers, "config_resends": s.config_resends,
            "rx_dropped": {"bad_crc": c.bad_crc, "bad_length": c.bad_length,
                           "unknown_type": c.unknown_type},
        }

    def close(self) -> None:
        """A last DRIVE, disengaged (or ESTOP while e-stopped: the latch stays), then the
        port is closed; the MCU's watchdog then fails safe."""
        flags = p.ESTOP if self._estop_sent else 0
        self.link.close(final=p.Drive(*self.pulses.neutral, flags))
