"""The PCA9685 16-channel PWM controller at register level, over any SMBus-like object
(``smbus2.SMBus`` on the car; ``car.pwm.emulator.Pca9685Emulator`` in tests).

What the driver does, after the NXP datasheet (rev. 4):

- **Frequency.** ``PRE_SCALE = round(osc / (4096 * f)) - 1``, clamped to 3..255; the chip
  accepts it only while asleep (MODE1.SLEEP), so: sleep, write PRE_SCALE, wake, wait 500 µs
  for the oscillator, then set RESTART to resume the outputs.
- **Mode.** MODE1 = auto-increment (AI) and ALLCALL; MODE2 = totem-pole outputs (OUTDRV), as
  servos and ESCs need.
- **Pulses.** Each output n has four registers from ``0x06 + 4n`` (ON_L, ON_H, OFF_L, OFF_H):
  the output goes high at count ON and low at count OFF of a 4096-count period. A pulse of
  ``us`` µs is ON = 0, OFF = ``round(us * 4096 * f_real / 1e6)``, where ``f_real`` is the
  frequency the prescaler really gives (60 Hz asked is 59.84 Hz at 25 MHz), so the pulse
  widths in car.toml are the widths on the wire. One 4-byte block write per output.
"""

from __future__ import annotations

import time
from typing import Protocol

MODE1, MODE2, LED0_ON_L, PRE_SCALE = 0x00, 0x01, 0x06, 0xFE
RESTART, SLEEP, AI, ALLCALL = 0x80, 0x10, 0x20, 0x01
OUTDRV = 0x04
FULL_OFF = 0x10  # bit 4 of LEDn_OFF_H: the output stays low
COUNTS = 4096
PRESCALE_MIN, PRESCALE_MAX = 3, 255
CHANNELS = 16
OSCILLATOR_WAKE_S = 0.0005  # the datasheet's 500 µs before RESTART


class SMBusLike(Protocol):
    """The part of ``smbus2.SMBus`` the driver uses."""

    def read_byte_data(self, i2c_addr: int, register: int) -> int: ...

    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None: ...

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]: ...

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int]) -> None: ...

    def close(self) -> None: ...


def prescale_for(frequency_hz: float, oscillator_hz: int) -> int:
    """The PRE_SCALE value for a PWM frequency (datasheet eq. 1), clamped to 3..255."""
    value = round(oscillator_hz / (COUNTS * frequency_hz)) - 1
    return max(PRESCALE_MIN, min(PRESCALE_MAX, value))


def real_frequency_hz(prescale: int, oscillator_hz: int) -> float:
    """The frequency a PRE_SCALE value gives."""
    return oscillator_hz / (COUNTS * (prescale + 1))


class Pca9685:
    """One board at ``address`` on ``bus``: ``start()`` sets the mode and frequency, ``set_us``
    sets a pulse width, ``read_us`` reads back what an output is set to. Not thread-safe: the
    actuator holds a lock around it."""

    def __init__(self, bus: SMBusLike, address: int, frequency_hz: float,
                 oscillator_hz: int = 25_000_000, sleep: object = time.sleep):
        self.bus = bus
        self.address = address
        self.prescale = prescale_for(frequency_hz, oscillator_hz)
        self.frequency_hz = real_frequency_hz(self.prescale, oscillator_hz)
        self._sleep = sleep

    def start(self) -> None:
        """Totem-pole outputs, auto-increment, and the frequency (sleep, PRE_SCALE, wake,
        restart). The outputs keep their registers: set them right after."""
        b, a = self.bus, self.address
        b.write_byte_data(a, MODE2, OUTDRV)
        mode = (b.read_byte_data(a, MODE1) & ~RESTART & 0xFF) | AI | ALLCALL
        b.write_byte_data(a, MODE1, mode | SLEEP)  # the prescaler is writable only asleep
        b.write_byte_data(a, PRE_SCALE, self.prescale)
        b.write_byte_data(a, MODE1, mode & ~SLEEP)
        self._sleep(OSCILLATOR_WAKE_S)  # type: ignore[operator]
        b.write_byte_data(a, MODE1, (mode & ~SLEEP) | RESTART)

    def ticks_for(self, pulse_us: float) -> int:
        """Counts of the 4096-count period for a pulse of ``pulse_us`` µs."""
        ticks = round(pulse_us * COUNTS * self.frequency_hz / 1e6)
        return max(0, min(COUNTS - 1, ticks))

    def us_for(self, ticks: int) -> float:
        """The pulse width, in µs, of ``ticks`` counts."""
        return ticks * 1e6 / (COUNTS * self.frequency_hz)

    def set_us(self, channel: int, pulse_us: float) -> None:
        """Output ``channel`` high for ``pulse_us`` µs from the start of every period."""
        ticks = self.ticks_for(pulse_us)
        self.bus.write_i2c_block_data(self.address, LED0_ON_L + 4 * channel,
                                      [0, 0, ticks & 0xFF, ticks >> 8])

    def set_off(self, channel: int) -> None:
        """Output ``channel`` held low (no pulses at all)."""
        self.bus.write_i2c_block_data(self.address, LED0_ON_L + 4 * channel,
                                      [0, 0, 0, FULL_OFF])

    def read_us(self, channel: int) -> float | None:
        """The pulse width output ``channel`` is set to, read back from its registers; None
        when it is held low or high."""
        on_l, on_h, off_l, off_h = self.bus.read_i2c_block_data(
            self.address, LED0_ON_L + 4 * channel, 4)
        if off_h & FULL_OFF or on_h & FULL_OFF:
            return None
        on, off = on_l | (on_h & 0x0F) << 8, off_l | (off_h & 0x0F) << 8
        return self.us_for((off - on) % COUNTS)
