"""The serial wire protocol between the car computer (host) and the microcontroller (MCU).

Pure: bytes in, messages out, no I/O. The reference C firmware (``firmware/car_mcu/src``)
implements the same rules; ``docs/serial-protocol.md`` is the specification.

A frame is ``0xAA 0x55 | LEN | TYPE | SEQ | PAYLOAD (LEN bytes) | CRC16 (little-endian)``,
where the CRC is CRC-16/CCITT-FALSE over ``LEN TYPE SEQ PAYLOAD``. Multi-byte fields are
little-endian.
"""

from __future__ import annotations

import binascii
import dataclasses
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

PROTOCOL_VERSION = 1
SYNC = b"\xaa\x55"
MAX_PAYLOAD = 32  # larger LEN bytes are a corrupt header: resynchronise
OVERHEAD = 7  # sync 2, LEN, TYPE, SEQ, CRC 2

# Message types
DRIVE, CONFIG, PING = 0x01, 0x02, 0x03
TELEMETRY, CONFIG_ACK, PONG = 0x81, 0x82, 0x83

# DRIVE flags
ENGAGE, ESTOP = 0x01, 0x02
# CONFIG flags
CFG_RC_PASSTHROUGH = 0x01
# TELEMETRY status bits
ST_FAILSAFE, ST_RC_PASSTHROUGH, ST_ESTOP, ST_CONFIGURED = 0x01, 0x02, 0x04, 0x08

FIRMWARE_NAME_MAX = 16


def crc16_ccitt_false(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, xorout 0.
    ``crc16_ccitt_false(b"123456789") == 0x29B1``. The stdlib's ``binascii.crc_hqx`` is this
    CRC, in C (the firmware computes it bit by bit; the tests check the two agree)."""
    return binascii.crc_hqx(data, crc)


def crc16_bitwise(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE from its definition, bit by bit, as the firmware computes it: the
    reference that the tests and benchmarks/bench_crc.py hold ``crc16_ccitt_false`` to."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


# ---------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Drive:
    """Host → MCU, every loop tick: the pulses to apply, and the heartbeat."""

    TYPE: ClassVar[int] = DRIVE
    FORMAT: ClassVar[str] = "<HHB"
    steering_us: int
    throttle_us: int
    flags: int = ENGAGE


@dataclass(frozen=True)
class Config:
    """Host → MCU at connect: watchdog timeout and output limits. Answered by CONFIG_ACK."""

    TYPE: ClassVar[int] = CONFIG
    FORMAT: ClassVar[str] = "<HHHHHHHB"
    timeout_ms: int
    steer_min_us: int
    steer_neutral_us: int
    steer_max_us: int
    thr_min_us: int
    thr_neutral_us: int
    thr_max_us: int
    cfg_flags: int = 0


@dataclass(frozen=True)
class Ping:
    """Host → MCU: are you there, and which protocol? Answered by PONG."""

    TYPE: ClassVar[int] = PING
    FORMAT: ClassVar[str] = "<"


@dataclass(frozen=True)
class Telemetry:
    """MCU → host at 50 Hz or more: RC input (0 = no signal), battery, status and the
    pulses actually applied."""

    TYPE: ClassVar[int] = TELEMETRY
    FORMAT: ClassVar[str] = "<HHHBBHH"
    rc_steering_us: int
    rc_throttle_us: int
    battery_mv: int
    status: int
    last_seq: int
    applied_steering_us: int
    applied_throttle_us: int

    @property
    def failsafe(self) -> bool:
        return bool(self.status & ST_FAILSAFE)

    @property
    def passthrough(self) -> bool:
        return bool(self.status & ST_RC_PASSTHROUGH)

    @property
    def estop(self) -> bool:
        return bool(self.status & ST_ESTOP)

    @property
    def configured(self) -> bool:
        return bool(self.status & ST_CONFIGURED)

    @property
    def rc_present(self) -> bool:
        return self.rc_steering_us != 0 and self.rc_throttle_us != 0


@dataclass(frozen=True)
class ConfigAck:
    """MCU → host: CONFIG with SEQ ``acked_seq`` was applied."""

    TYPE: ClassVar[int] = CONFIG_ACK
    FORMAT: ClassVar[str] = "<B"
    acked_seq: int


@dataclass(frozen=True)
class Pong:
    """MCU → host: the protocol version and the firmware's name."""

    TYPE: ClassVar[int] = PONG
    protocol_version: int
    firmware: str = ""


Message = Drive | Config | Ping | Telemetry | ConfigAck | Pong
HOST_TO_MCU: dict[int, tuple[int, int]] = {  # type -> (min, max) payload length
    DRIVE: (5, 5), CONFIG: (15, 15), PING: (0, 0)}
MCU_TO_HOST: dict[int, tuple[int, int]] = {
    TELEMETRY: (12, 12), CONFIG_ACK: (1, 1), PONG: (1, 1 + FIRMWARE_NAME_MAX)}
_CLASSES: dict[int, type] = {c.TYPE: c for c in (Drive, Config, Ping, Telemetry, ConfigAck, Pong)}


class ProtocolError(ValueError):
    """A message that cannot be encoded or decoded."""


def encode_frame(msg_type: int, seq: int, payload: bytes = b"") -> bytes:
    """One frame on the wire."""
    if not 0 <= msg_type <= 0xFF or not 0 <= seq <= 0xFF:
        raise ProtocolError(f"type {msg_type} and seq {seq} must be bytes")
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes; at most {MAX_PAYLOAD}")
    body = bytes((len(payload), msg_type, seq)) + payload
    return SYNC + body + struct.pack("<H", crc16_ccitt_false(body))


def payload_of(message: Message) -> bytes:
    if isinstance(message, Pong):
        name = message.firmware.encode("ascii")
        if len(name) > FIRMWARE_NAME_MAX:
            raise ProtocolError(f"firmware name longer than {FIRMWARE_NAME_MAX} bytes")
        return bytes((message.protocol_version,)) + name
    values = [getattr(message, f.name) for f in dataclasses.fields(message)]
    try:
        return struct.pack(message.FORMAT, *values)
    except struct.error as exc:
        raise ProtocolError(f"{type(message).__name__}{tuple(values)}: {exc}") from None


def encode(message: Message, seq: int) -> bytes:
    """The frame that carries ``message`` with sequence number ``seq``."""
    return encode_frame(message.TYPE, seq, payload_of(message))


@dataclass(frozen=True)
class Frame:
    """A frame whose CRC, type and length checked out."""

    type: int
    seq: int
    payload: bytes

    def message(self) -> Message:
        return decode(self.type, self.payload)


def decode(msg_type: int, payload: bytes) -> Message:
    """The message in a checked frame's payload."""
    cls = _CLASSES.get(msg_type)
    if cls is None:
        raise ProtocolError(f"unknown message type 0x{msg_type:02x}")
    if cls is Pong:
        if not payload:
            raise ProtocolError("PONG without a protocol version")
        return Pong(payload[0], payload[1:].decode("ascii", errors="replace"))
    try:
        return cls(*struct.unpack(cls.FORMAT, payload))
    except struct.error:
        raise ProtocolError(f"{cls.__name__} payload of {len(payload)} bytes") from None


# ---------------------------------------------------------------------------- parsing


@dataclass
class ParserCounts:
    """Frames the parser took, and what it dropped."""

    frames: int = 0
    bad_crc: int = 0
    bad_length: int = 0
    unknown_type: int = 0
    skipped_bytes: int = 0  # bytes that were not the start of any frame

    @property
    def dropped(self) -> int:
        return self.bad_crc + self.bad_length + self.unknown_type


@dataclass
class FrameParser:
    """A streaming parser: ``feed(chunk)`` with any split of the byte stream yields the same
    frames.

    Rules (the C firmware's parser follows the same ones, byte for byte):

    - bytes before ``0xAA 0x55`` are skipped;
    - a LEN above ``MAX_PAYLOAD`` is a corrupt header: counted as a bad length, and the
      search for a frame start resumes at the byte after that ``0xAA``;
    - a bad CRC is counted, and the search resumes at the byte after its ``0xAA`` (a
      corrupted frame must not hide a good frame that starts inside it);
    - a good CRC with a type not in ``accept`` is an unknown type; with a length outside
      that type's range, a bad length. Either is counted and the whole frame dropped.
    """

    accept: dict[int, tuple[int, int]] = field(default_factory=lambda: dict(HOST_TO_MCU))
    counts: ParserCounts = field(default_factory=ParserCounts)
    _buf: bytearray = field(default_factory=bytearray, repr=False)

    def feed(self, chunk: bytes) -> list[Frame]:
        return list(self.iter_feed(chunk))

    def iter_feed(self, chunk: bytes) -> Iterator[Frame]:
        buf = self._buf
        buf += chunk
        while True:
            start = buf.find(SYNC)
            if start < 0:  # keep a trailing 0xAA: it may start a frame
                keep = 1 if buf.endswith(SYNC[:1]) else 0
                self.counts.skipped_bytes += len(buf) - keep
                del buf[:len(buf) - keep]
                return
            if start:
                self.counts.skipped_bytes += start
                del buf[:start]
            if len(buf) < 3:
                return
            length = buf[2]
            if length > MAX_PAYLOAD:
                self.counts.bad_length += 1
                del buf[:1]
                continue
            total = OVERHEAD + length
            if len(buf) < total:
                return
            body = bytes(buf[2:5 + length])
            crc = buf[total - 2] | buf[total - 1] << 8
            if crc != crc16_ccitt_false(body):
                self.counts.bad_crc += 1
                del buf[:1]
                continue
            del buf[:total]
            msg_type, seq, payload = body[1], body[2], body[3:]
            bounds = self.accept.get(msg_type)
            if bounds is None:
                self.counts.unknown_type += 1
            elif not bounds[0] <= length <= bounds[1]:
                self.counts.bad_length += 1
            else:
                self.counts.frames += 1
                yield Frame(msg_type, seq, payload)

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)
