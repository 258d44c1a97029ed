"""The two places a calibration session's pulses can go (``calibration.servo.PulseOutput``):
the MCU over its serial link, and a PCA9685 board on I2C."""

from __future__ import annotations

import logging
from collections.abc import Callable

from calibration.servo import HEARTBEAT_S, ChannelSpec, session_config
from car.config import Config
from car.mcu import protocol as p
from car.mcu.link import McuLink
from car.pwm.actuator import Pca9685Actuator
from car.pwm.pca9685 import SMBusLike

log = logging.getLogger(__name__)


class McuOutput:
    """The MCU, configured for the session (the calibrated channel opened to 500–2500 µs);
    DRIVE frames with ENGAGE, a disengaged neutral DRIVE at close."""

    def __init__(self, config: Config, spec: ChannelSpec, port: str | None):
        a = config.actuator
        self.neutral = (config.steering.center_us, config.throttle.neutral_us)
        self.link = McuLink(port or a.port,
                            session_config(a, spec, config.steering, config.throttle),
                            baud=a.baud, connect_timeout_s=a.connect_timeout_s)
        self.link.open()
        self.link.start()

    @property
    def fault(self) -> str | None:
        return self.link.fault

    @property
    def heartbeat_s(self) -> float:
        return min(HEARTBEAT_S, self.link.config.timeout_ms / 4000.0)

    def drive(self, steering_us: int, throttle_us: int) -> None:
        self.link.send_drive(steering_us, throttle_us, p.ENGAGE)

    def close(self) -> None:
        self.link.close(final=p.Drive(*self.neutral, 0))


class Pca9685Output:
    """The PCA9685 of ``[pca9685]``, through its actuator (which sets the board up again
    after a failed transfer); the raw pulses go straight to the two outputs."""

    def __init__(self, config: Config, opener: Callable[[int], SMBusLike] | None = None):
        self.actuator = Pca9685Actuator.connect(config, opener)

    @property
    def fault(self) -> str | None:
        return self.actuator.fault

    @property
    def heartbeat_s(self) -> float:
        return HEARTBEAT_S

    def drive(self, steering_us: int, throttle_us: int) -> None:
        self.actuator.send_us(steering_us, throttle_us)

    def close(self) -> None:
        self.actuator.close()  # both outputs at the calibration's neutral
