"""Pca9685Actuator: the drive loop's Actuator for a PCA9685 PWM board on I2C (donkeycar's
usual build), through smbus2.

Commands become the calibrated pulses of ``[steering]`` and ``[throttle]`` (``PulseMap``, as
for the MCU) on the outputs ``[pca9685]`` names. ``close()`` leaves both outputs at their
neutral pulse, whatever ended the run.

The board has no watchdog: a process that dies leaves it repeating the last pulse, throttle
included. The loop's own watchdog sends neutral when a tick hangs, `car` turns SIGTERM and
SIGHUP into a stop (``car.entry``), and docs/pca9685.md says what only hardware can do (a
kill switch, or the serial MCU, which fails safe by itself).

A failed transfer (motor noise on the wires, a loose connector) sets ``fault``, so the loop
commands neutral; the next tick tries again and, once a transfer succeeds, sets the board up
afresh. Once a second MODE1 is read back: a board that reset itself (its supply dipped)
sleeps with every output off, and is set up again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from car.actuator import Actuator
from car.config import Config
from car.errors import CarError
from car.frames import NEUTRAL, Command
from car.health import Health
from car.mcu.pulses import PulseMap
from car.modes import LimitedLog
from car.pwm.pca9685 import MODE1, SLEEP, Pca9685, SMBusLike

log = logging.getLogger(__name__)
CHECK_PERIOD_S = 1.0  # how often MODE1 is read back to catch a board that reset itself


def open_bus(number: int) -> SMBusLike:
    """``smbus2.SMBus(number)``, with its own error in one line when the bus is missing."""
    try:
        from smbus2 import SMBus
    except ImportError:
        raise CarError("--actuator pca9685 needs the smbus2 package: pip install smbus2") \
            from None
    try:
        return SMBus(number)  # type: ignore[no-any-return]
    except OSError as exc:
        raise CarError(f"cannot open I2C bus {number} (/dev/i2c-{number}): "
                       f"{exc.strerror or exc}; enable I2C on the board (raspi-config, or "
                       "jetson-io on a Jetson), check `ls /dev/i2c-*` and set pca9685.bus, "
                       "and add the user to the i2c group") from None


class Pca9685Actuator:
    """Drives the servo and ESC through a PCA9685; thread-safe (the loop's watchdog sends
    from its own thread)."""

    def __init__(self, board: Pca9685, pulses: PulseMap, steering_channel: int,
                 throttle_channel: int, where: str, clock: Callable[[], float] = time.monotonic):
        self.board = board
        self.pulses = pulses
        self.channels = (steering_channel, throttle_channel)
        self.where = where
        self.clock = clock
        self.sent = 0
        self.errors = 0
        self.resets = 0  # times the board was found reset (asleep) and set up again
        self.fault: str | None = None
        self._lock = threading.Lock()
        self._checked_s = clock()
        self._follower: Actuator | None = None
        self._log = LimitedLog(log)

    @classmethod
    def connect(cls, config: Config,
                opener: Callable[[int], SMBusLike] | None = None) -> Pca9685Actuator:
        """Open ``pca9685.bus`` (with ``opener``, default ``open_bus``), find the board, set
        it up and put both outputs at neutral."""
        c = config.pca9685
        if c.steering_channel == c.throttle_channel:
            raise CarError(f"pca9685.steering_channel and throttle_channel are both "
                           f"{c.steering_channel}; wire the servo and the ESC to two outputs")
        bus = (opener or open_bus)(c.bus)
        where = f"the PCA9685 at {c.address:#04x} on I2C bus {c.bus}"
        board = Pca9685(bus, c.address, c.frequency_hz, c.oscillator_hz)
        actuator = cls(board, PulseMap.from_config(config), c.steering_channel,
                       c.throttle_channel, where)
        try:
            actuator._setup()
        except OSError as exc:
            bus.close()
            raise CarError(f"no answer from {where}: {exc.strerror or exc}; check its power "
                           "(VCC) and SDA/SCL wiring, and that `i2cdetect -y "
                           f"{c.bus}` shows it at pca9685.address") from None
        except BaseException:
            bus.close()
            raise
        return actuator

    def _setup(self) -> None:
        """Mode and frequency, then neutral on both outputs (the ESC arms at neutral)."""
        self.board.start()
        self._write(*self.pulses.neutral)

    def _write(self, steering_us: int, throttle_us: int) -> None:
        self.board.set_us(self.channels[1], throttle_us)  # throttle first: the one that hurts
        self.board.set_us(self.channels[0], steering_us)

    def send(self, command: Command) -> None:
        self.send_us(self.pulses.steering.to_us(command.steering),
                     self.pulses.throttle.to_us(0.0 if command.estop else command.throttle))

    def send_us(self, steering_us: int, throttle_us: int) -> None:
        """Set both outputs; a failed transfer sets ``fault`` and is retried next time."""
        with self._lock:
            try:
                now = self.clock()
                if self.fault is not None:
                    self._setup()  # the board may have lost power with the wires
                elif now - self._checked_s >= CHECK_PERIOD_S:
                    self._checked_s = now
                    if self.board.bus.read_byte_data(self.board.address, MODE1) & SLEEP:
                        self.resets += 1
                        self._log.warning("reset", now, "%s had reset itself (a dip in its "
                                          "supply?); set up again", self.where)
                        self._setup()
                self._write(steering_us, throttle_us)
            except OSError as exc:
                self.errors += 1
                self.fault = f"I2C transfer to {self.where} failed: {exc.strerror or exc}"
                self._log.warning("i2c", self.clock(), "%s", self.fault)
                return
            if self.fault is not None:
                log.info("%s answers again", self.where)
                self.fault = None
            self.sent += 1
            if self._follower is not None:
                self._follow()

    def follow(self, target: Actuator) -> None:
        """Hardware in the loop: after each update ``target`` (a simulated car) gets the
        pulses read back from the board's registers, as normalised values."""
        self._follower = target

    def _follow(self) -> None:
        assert self._follower is not None
        steering_us = self.board.read_us(self.channels[0])
        throttle_us = self.board.read_us(self.channels[1])
        if steering_us is None or throttle_us is None:
            self._follower.send(NEUTRAL)
            return
        self._follower.send(Command(self.pulses.steering.from_us(round(steering_us)),
                                    self.pulses.throttle.from_us(round(throttle_us))))

    def describe(self) -> str:
        return self.where

    def status(self) -> dict[str, Any]:
        """The web page's PWM board field."""
        return {"pwm": True, "pwm_fault": self.fault}

    def health(self) -> Health:
        data = {"bus": self.where, "frequency_hz": round(self.board.frequency_hz, 2),
                "prescale": self.board.prescale, "sent": self.sent,
                "i2c_errors": self.errors, "resets": self.resets, "fault": self.fault}
        line = (f"pca9685: {self.where} at {data['frequency_hz']:g} Hz: {self.sent} "
                f"update(s), {self.errors} I2C error(s), {self.resets} reset(s) found"
                + (f"; fault: {self.fault}" if self.fault else ""))
        return Health("pca9685", data, line)

    def close(self) -> None:
        """Both outputs to neutral (tried three times: this is the last word the board
        hears), then the bus is closed."""
        with self._lock:
            for attempt in range(3):
                try:
                    if self.fault is not None:
                        self.board.start()
                    self._write(*self.pulses.neutral)
                    break
                except OSError as exc:
                    if attempt == 2:
                        log.error("%s did not take the neutral pulses at close (%s): it may "
                                  "still be driving; switch the car off", self.where,
                                  exc.strerror or exc)
                    self.fault = str(exc)
            self.board.bus.close()
