"""The wire protocol: CRC, encode/decode vectors shared with the C firmware, and a fuzzed
streaming parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from car.mcu import protocol as p
from tests.mcu_script import run_script

VECTORS = json.loads((Path(__file__).parent / "fixtures" / "serial_vectors.json").read_text())
FUZZ = settings(max_examples=300, derandomize=True, deadline=None)


@pytest.mark.parametrize("vector", VECTORS["crc"])
def test_crc_vectors(vector: dict) -> None:
    data = vector["ascii"].encode() if "ascii" in vector else bytes.fromhex(vector["hex"])
    assert p.crc16_ccitt_false(data) == vector["crc"]


@FUZZ
@given(st.binary(max_size=64), st.integers(0, 0xFFFF))
def test_crc_matches_its_definition(data: bytes, start: int) -> None:
    assert p.crc16_ccitt_false(data, start) == p.crc16_bitwise(data, start)


@pytest.mark.parametrize("vector", VECTORS["frames"], ids=lambda v: v["name"])
def test_frame_vectors_encode_and_decode(vector: dict) -> None:
    frame = bytes.fromhex(vector["frame_hex"])
    payload = bytes.fromhex(vector["payload_hex"])
    assert p.encode_frame(vector["type"], vector["seq"], payload) == frame
    accept = {**p.HOST_TO_MCU, **p.MCU_TO_HOST}
    [parsed] = p.FrameParser(accept).feed(frame)
    assert (parsed.type, parsed.seq, parsed.payload) == (vector["type"], vector["seq"], payload)
    message = parsed.message()
    assert p.encode(message, vector["seq"]) == frame  # decode ∘ encode is the identity


def test_messages_by_hand() -> None:
    frame = p.encode(p.Drive(1600, 1450, p.ENGAGE), 7)
    assert frame == bytes([0xAA, 0x55, 5, 0x01, 7, 0x40, 0x06, 0xAA, 0x05, 0x01]) + \
        p.crc16_ccitt_false(bytes([5, 1, 7, 0x40, 6, 0xAA, 5, 1])).to_bytes(2, "little")
    t = p.Telemetry(1520, 0, 7400, p.ST_FAILSAFE | p.ST_ESTOP, 3, 1500, 1500)
    assert len(p.payload_of(t)) == 12 and t.failsafe and t.estop and not t.configured
    assert not t.rc_present
    assert p.decode(p.PONG, b"\x01car-mcu") == p.Pong(1, "car-mcu")
    with pytest.raises(p.ProtocolError, match="longer than 16"):
        p.payload_of(p.Pong(1, "x" * 17))
    with pytest.raises(p.ProtocolError):
        p.encode(p.Drive(70000, 1500), 0)


@pytest.mark.parametrize("vector", VECTORS["streams"], ids=lambda v: v["name"])
def test_stream_vectors(vector: dict) -> None:
    data = bytes.fromhex(vector["hex"])
    for chunks in ([data], [bytes([b]) for b in data]):
        parser = p.FrameParser(dict(p.HOST_TO_MCU))
        frames = [f for chunk in chunks for f in parser.feed(chunk)]
        assert [{"type": f.type, "seq": f.seq, "payload_hex": f.payload.hex()}
                for f in frames] == vector["frames"]
        c = parser.counts
        assert {"frames": c.frames, "bad_crc": c.bad_crc, "bad_length": c.bad_length,
                "unknown_type": c.unknown_type, "skipped_bytes": c.skipped_bytes} == \
            vector["counts"]
        assert parser.pending == vector["pending"]


@pytest.mark.parametrize("scenario", VECTORS["scenarios"], ids=lambda v: v["name"])
def test_mcu_scenario_vectors(scenario: dict) -> None:
    assert run_script(scenario["script"]) == scenario["expect"]


def _valid_frames() -> st.SearchStrategy[bytes]:
    drive = st.builds(p.Drive, st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 255))
    config = st.builds(p.Config, *[st.integers(0, 65535)] * 7, st.integers(0, 255))
    message = st.one_of(drive, config, st.just(p.Ping()))
    return st.builds(p.encode, message, st.integers(0, 255))


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_nor_yield_a_bad_frame(data: bytes) -> None:
    parser = p.FrameParser(dict(p.HOST_TO_MCU))
    for frame in parser.feed(data):
        assert p.encode_frame(frame.type, frame.seq, frame.payload) in data  # CRC-checked
        frame.message()  # and it decodes
    assert parser.pending <= p.OVERHEAD + p.MAX_PAYLOAD


@FUZZ
@given(st.lists(_valid_frames(), min_size=1, max_size=8), st.data())
def test_bit_flips_lose_only_the_frames_they_hit(frames: list[bytes], data: st.DataObject
                                                 ) -> None:
    stream = bytearray(b"".join(frames))
    flips = data.draw(st.lists(st.integers(0, len(stream) * 8 - 1), max_size=6))
    for bit in flips:
        stream[bit // 8] ^= 1 << (bit % 8)
    # A corrupted LEN can hold the frames after it until enough bytes have come to show its
    # CRC is wrong (at most a frame's worth): the next frames on the wire push them out.
    filler = bytes(p.OVERHEAD + p.MAX_PAYLOAD)
    parsed = [p.encode_frame(f.type, f.seq, f.payload)
              for f in p.FrameParser(dict(p.HOST_TO_MCU)).feed(bytes(stream) + filler)]
    for frame in parsed:
        assert frame in stream  # nothing invented: every frame is really in the stream
    start = 0
    for frame in frames:
        hit = any(start * 8 <= bit < (start + len(frame)) * 8 for bit in flips)
        if not hit:
            assert frame in parsed  # an untouched frame survives its corrupted neighbours
        start += len(frame)


@FUZZ
@given(st.lists(_valid_frames(), min_size=1, max_size=4), st.binary(max_size=12))
def test_every_split_parses_the_same(frames: list[bytes], noise: bytes) -> None:
    data = noise + b"".join(frames)
    whole = p.FrameParser(dict(p.HOST_TO_MCU))
    expected = whole.feed(data)
    for cut in range(len(data) + 1):
        parser = p.FrameParser(dict(p.HOST_TO_MCU))
        assert parser.feed(data[:cut]) + parser.feed(data[cut:]) == expected
        assert parser.counts == whole.counts
