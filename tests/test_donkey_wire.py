"""The donkey simulator protocol's framing: any split, back-to-back and newline-ended
objects, braces in strings, comma decimals, and bad input counted (never raised)."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from car.sim.donkey.wire import JsonStream, encode_client, encode_line, number

FUZZ = settings(max_examples=200, derandomize=True, deadline=None)
TELEMETRY = {"msg_type": "telemetry", "steering_angle": 0.25, "throttle": 0.3, "speed": 1.5,
             "image": "/9j/4AAQ{}\"x", "hit": "none", "cte": -0.12, "activeNode": 4}


def test_newline_ended_and_back_to_back_objects() -> None:
    stream = JsonStream()
    data = encode_line(TELEMETRY) + encode_client({"msg_type": "control", "steering": "0.1"}) \
        + encode_client({"msg_type": "get_scene_names"}) + b"\r\n  "
    assert stream.feed(data) == [TELEMETRY, {"msg_type": "control", "steering": "0.1"},
                                 {"msg_type": "get_scene_names"}]
    assert stream.counts.messages == 3 and stream.counts.malformed == 0


def test_every_split_gives_the_same_messages() -> None:
    data = encode_line(TELEMETRY) + '{"msg_type":"scene_names","scene_names":["a","é"]}'.encode()
    whole = JsonStream().feed(data)
    assert len(whole) == 2
    for cut in range(len(data) + 1):
        stream = JsonStream()
        assert stream.feed(data[:cut]) + stream.feed(data[cut:]) == whole  # UTF-8 split too


def test_comma_decimals_are_repaired() -> None:
    stream = JsonStream()
    raw = b'{"msg_type":"telemetry","steering_angle":-0,25,"speed": 1,5,"pos":[1,2]}\n'
    [message] = stream.feed(raw)
    assert message["steering_angle"] == -0.25 and message["speed"] == 1.5
    assert message["pos"] == [1, 2] and stream.counts.comma_decimals == 1
    assert number("0,5") == 0.5 and number(" -1.25 ") == -1.25 and number(3) == 3.0
    assert math.isnan(number("fast")) and math.isnan(number(None)) and number(True, 0.0) == 0.0
    assert math.isnan(number("nan")) and number("inf", 1.0) == 1.0


def test_bad_input_is_counted_not_raised() -> None:
    stream = JsonStream(max_bytes=200)
    data = (b'garbage{"msg_type": "ok"}{"no_type": 1}{"msg_type": 3}{not json}'
            + b'{"msg_type":"big","x":"' + b"a" * 300 + b'"}{"msg_type":"after"}')
    assert stream.feed(data) == [{"msg_type": "ok"}, {"msg_type": "after"}]
    c = stream.counts
    assert (c.messages, c.malformed, c.oversize) == (2, 3, 1)
    assert c.skipped_bytes == 7 + (300 - (201 - 23)) + 2  # garbage, then the dropped tail
    assert "no msg_type" in stream.errors[0] and "not JSON" in stream.errors[2]


def test_encodings_match_each_side() -> None:
    assert encode_line({"msg_type": "car_loaded"}) == b'{"msg_type":"car_loaded"}\n'
    assert encode_client({"msg_type": "control", "steering": "0.0"}) == \
        b'{"msg_type": "control", "steering": "0.0"}'


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(data: bytes) -> None:
    stream = JsonStream(max_bytes=256)
    for message in stream.feed(data):
        assert isinstance(message["msg_type"], str)
    assert len(stream._buf) <= 256 + 1 or stream._start < 0


@FUZZ
@given(st.lists(st.dictionaries(st.text(max_size=5), st.one_of(
    st.integers(), st.text(max_size=8), st.floats(allow_nan=False, allow_infinity=False)),
    max_size=4), max_size=5), st.data())
def test_any_messages_survive_any_chunking(bodies: list[dict], data: st.DataObject) -> None:
    messages = [{**body, "msg_type": "m"} for body in bodies]
    raw = b"".join(encode_client(m) if i % 2 else encode_line(m)
                   for i, m in enumerate(messages))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    stream = JsonStream()
    got = []
    for a, b in zip([0, *cuts], [*cuts, len(raw)]):
        got += stream.feed(raw[a:b])
    assert got == [json.loads(json.dumps(m)) for m in messages]
