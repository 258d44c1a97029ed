"""A PCA9685 at register level, behind the ``smbus2.SMBus`` calls the driver makes: the
stand-in for the board in tests, as ``car.mcu.emulator`` stands in for the MCU.

It keeps the chip's 256 registers with their power-on values and the rules a driver can get
wrong: PRE_SCALE ignores writes unless MODE1.SLEEP is set; a block transfer walks the
registers only with MODE1.AI set (otherwise every byte lands on the first one); the outputs
run only while awake; another address does not answer (errno 121, as a real bus reports a
NACK). ``pulse_us(n)`` is the pulse a scope would see on output n, from the registers and
the emulator's own oscillator (which may differ from the driver's idea of it, like a real
chip). ``fail(n)`` makes the next n transfers fail (a loose wire, motor noise);
``power_cycle()`` resets the registers (a brown-out of the board's supply).
"""

from __future__ import annotations

import errno
import threading

from car.pwm.pca9685 import AI, COUNTS, FULL_OFF, LED0_ON_L, MODE1, MODE2, PRE_SCALE, SLEEP

POWER_ON = {MODE1: 0x11, MODE2: 0x04, PRE_SCALE: 0x1E}  # asleep, ALLCALL; 200 Hz


class Pca9685Emulator:
    """One board at ``address`` on an emulated bus; the SMBus methods the driver uses."""

    def __init__(self, address: int = 0x40, oscillator_hz: float = 25_000_000):
        self.address = address
        self.oscillator_hz = oscillator_hz
        self.transfers = 0
        self.closed = False
        self.log: list[tuple[str, int, tuple[int, ...]]] = []  # (op, register, bytes)
        self._fail = 0
        self._lock = threading.Lock()
        self.power_cycle()

    def power_cycle(self) -> None:
        """Every register back to its power-on value: asleep, every output off."""
        self.regs = bytearray(256)
        for reg, value in POWER_ON.items():
            self.regs[reg] = value
        for n in range(16):
            self.regs[LED0_ON_L + 4 * n + 3] = FULL_OFF

    def fail(self, transfers: int) -> None:
        """The next ``transfers`` transfers fail with EREMOTEIO."""
        self._fail = transfers

    def _begin(self, address: int) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed bus")
        self.transfers += 1
        if address != self.address:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")
        if self._fail > 0:
            self._fail -= 1
            raise OSError(errno.EREMOTEIO, "Remote I/O error")

    def _write(self, register: int, value: int) -> None:
        if register == PRE_SCALE and not self.regs[MODE1] & SLEEP:
            return  # the datasheet: writes to PRE_SCALE are blocked while awake
        self.regs[register] = value & 0xFF

    def _next(self, register: int) -> int:
        return (register + 1) % 256 if self.regs[MODE1] & AI else register

    def write_byte_data(self, i2c_addr: int, register: int, value: int) -> None:
        with self._lock:
            self._begin(i2c_addr)
            self.log.append(("write", register, (value,)))
            self._write(register, value)

    def read_byte_data(self, i2c_addr: int, register: int) -> int:
        with self._lock:
            self._begin(i2c_addr)
            return self.regs[register]

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int]) -> None:
        with self._lock:
            self._begin(i2c_addr)
            self.log.append(("write", register, tuple(data)))
            for value in data:
                self._write(register, value)
                register = self._next(register)

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]:
        with self._lock:
            self._begin(i2c_addr)
            out = []
            for _ in range(length):
                out.append(self.regs[register])
                register = self._next(register)
            return out

    def close(self) -> None:
        self.closed = True

    @property
    def frequency_hz(self) -> float:
        return self.oscillator_hz / (COUNTS * (self.regs[PRE_SCALE] + 1))

    def pulse_us(self, channel: int) -> float | None:
        """The pulse width on output ``channel``, in µs; None while no pulses come out (the
        chip asleep, or the output held off)."""
        if self.regs[MODE1] & SLEEP:
            return None
        on_l, on_h, off_l, off_h = self.regs[LED0_ON_L + 4 * channel:LED0_ON_L + 4 * channel + 4]
        if off_h & FULL_OFF or on_h & FULL_OFF:
            return None
        on, off = on_l | (on_h & 0x0F) << 8, off_l | (off_h & 0x0F) << 8
        return ((off - on) % COUNTS) * 1e6 / (COUNTS * self.frequency_hz)
