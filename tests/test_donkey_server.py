"""`car sim serve`, the simulator side of the donkey protocol (docs/donkey-protocol.md,
docs/donkey-sim.md). The tests work at four levels: the pure ServerSession, lock-step
driving (laps and hits), a DonkeyServer on TCP driven by a gym-donkeycar-like client, and
the CLI as a subprocess. Malformed input is fuzzed at the first and third levels.

The fixture tests/fixtures/donkey_messages.json has one example of every message, both ways.
Its telemetry image is ``fixture_image()`` as a JPEG, and ``fixture_jpeg_base64()`` makes it.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import math
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from car.cli import main
from car.commands.sim import load_track_for
from car.config import Config
from car.sim.donkey import messages as m
from car.sim.donkey.server import DonkeyServer
from car.sim.donkey.session import ServeOptions, ServerSession
from car.sim.donkey.wire import JsonStream, encode_client, encode_line
from car.sim.expert import Expert
from tests.conftest import FIXTURES, ROOT
from tests.gym_style_client import GymStyleClient, LapCounter, repair_comma_decimals, split_complete
from tests.waiting import wait_for

Message = dict[str, Any]
FIXTURE = json.loads((FIXTURES / "donkey_messages.json").read_text(encoding="utf-8"))
SIM_TO_CLIENT: dict[str, Message] = FIXTURE["sim_to_client"]
CLIENT_TO_SIM: dict[str, Message] = FIXTURE["client_to_sim"]
CONFIG = Config()
SCENES = {"oval": load_track_for("oval", CONFIG),
          "generated_track": load_track_for("diyrobocars", CONFIG)}
STEP_S = 0.05  # the default lock-step time step (20 Hz)
LOAD_S = 1.0 / Config().sim.physics_hz  # a scene starts one physics tick in (lap timing)
NUMBER_FIELDS = ("steering_angle", "throttle", "speed", "pos_x", "pos_y", "pos_z", "vel_x",
                 "vel_y", "vel_z", "accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y",
                 "gyro_z", "pitch", "yaw", "roll", "cte", "time")
INT_FIELDS = ("activeNode", "totalNodes")
STRING_FIELDS = ("msg_type", "hit", "image")
JPEG_MAGIC, PNG_MAGIC = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


def fixture_image() -> np.ndarray:
    """The fixture telemetry's 16x12 RGB frame: a grey road with a white centre line between
    green verges."""
    image = np.zeros((12, 16, 3), np.uint8)
    image[:] = (70, 140, 60)
    image[4:, 3:13] = (110, 110, 110)
    image[4:, 7:9] = (240, 240, 240)
    return image


def fixture_jpeg_base64() -> str:
    """How the fixture's telemetry image was made."""
    bgr = cv2.cvtColor(fixture_image(), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return base64.b64encode(buf.tobytes()).decode("ascii")


# -- helpers ---------------------------------------------------------------------------------

class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def new_session(lockstep: bool = True, clock: Callable[[], float] = time.monotonic,
                **options: Any) -> ServerSession:
    return ServerSession(SCENES, CONFIG.sim, ServeOptions(lockstep=lockstep, **options),
                         clock=clock)


def loaded_session(scene: str = "oval", lockstep: bool = True,
                   clock: Callable[[], float] = time.monotonic) -> ServerSession:
    session = new_session(lockstep, clock)
    session.start()
    replies = session.handle({"msg_type": "load_scene", "scene_name": scene})
    assert kinds(replies)[0] == "car_loaded"
    return session


def kinds(messages: list[Message]) -> list[str]:
    return [msg["msg_type"] for msg in messages]


def of_type(messages: list[Message], kind: str) -> list[Message]:
    return [msg for msg in messages if msg["msg_type"] == kind]


def control(steering: Any, throttle: Any, brake: Any = "0.0") -> Message:
    return {"msg_type": "control", "steering": steering, "throttle": throttle, "brake": brake}


def one_telemetry(replies: list[Message]) -> Message:
    [telemetry] = of_type(replies, "telemetry")
    return telemetry


def image_bytes(telemetry: Message) -> bytes:
    return base64.b64decode(telemetry["image"], validate=True)


def decode(telemetry: Message) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(image_bytes(telemetry), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def invalid_after(session: ServerSession, message: Message) -> int:
    """How many unusable values the session counted for ``message``."""
    before = session.counts.invalid
    assert session.handle(message) == []
    return session.counts.invalid - before


# -- 0. the fixture ---------------------------------------------------------------------------

def test_fixture_has_one_example_of_every_message_both_ways() -> None:
    assert set(SIM_TO_CLIENT) == {
        "protocol_version", "scene_selection_ready", "scene_names", "car_loaded", "telemetry",
        "cross_start", "collision_with_starting_line", "need_car_config", "ping", "refused",
        "error", "node_position"}
    assert set(CLIENT_TO_SIM) == {
        "get_protocol_version", "get_scene_names", "load_scene", "car_config", "racer_info",
        "cam_config", "control", "reset_car", "exit_scene", "quit_app", "step_mode",
        "node_position", "set_position"}
    for examples in (SIM_TO_CLIENT, CLIENT_TO_SIM):
        assert all(msg["msg_type"] == kind for kind, msg in examples.items())
    # No source has a scene_loaded message: the note says so, and car_loaded stands for it.
    assert "scene_loaded" not in SIM_TO_CLIENT and "scene_loaded" in FIXTURE["note"]
    # The sim writes the scene list before the message type.
    assert list(SIM_TO_CLIENT["scene_names"]) == ["scene_names", "msg_type"]
    # gym sends every control and config value as a string.
    for kind in ("control", "car_config", "cam_config", "step_mode", "set_position",
                 "node_position", "racer_info"):
        assert all(isinstance(v, str) for v in CLIENT_TO_SIM[kind].values()), kind
    assert len(CLIENT_TO_SIM["cam_config"]) == 1 + 13


def test_fixture_client_bytes_are_what_gym_sends() -> None:
    exact = FIXTURE["client_to_sim_bytes"]
    assert set(exact) == set(CLIENT_TO_SIM)
    for kind, text in exact.items():
        assert text == json.dumps(CLIENT_TO_SIM[kind])  # default separators
        assert encode_client(CLIENT_TO_SIM[kind]) == text.encode("utf-8")
        assert text.startswith('{"msg_type": ') and text.endswith("}")  # no terminator
    stream = JsonStream()  # back to back, as gym's stream looks to the sim
    assert stream.feed("".join(exact.values()).encode()) == list(CLIENT_TO_SIM.values())
    assert stream.counts.malformed == stream.counts.skipped_bytes == 0


def test_fixture_image_is_a_small_jpeg_of_the_generator() -> None:
    telemetry = SIM_TO_CLIENT["telemetry"]
    assert image_bytes(telemetry).startswith(JPEG_MAGIC)
    rgb = cv2.cvtColor(decode(telemetry), cv2.COLOR_BGR2RGB)
    assert rgb.shape == (12, 16, 3)
    assert np.abs(rgb.astype(int) - fixture_image()).mean() < 8
    regenerated = base64.b64decode(fixture_jpeg_base64())
    assert regenerated.startswith(JPEG_MAGIC) and len(telemetry["image"]) < 2000


def test_fixture_sim_messages_pass_gyms_splitter_and_comma_repair() -> None:
    lines = "".join(encode_line(msg).decode() for msg in SIM_TO_CLIENT.values())
    for cut in (0, 7, len(lines) // 2, len(lines) - 1):  # gym's splitter, in two reads
        first, rest = split_complete(lines[:cut])
        second, left = split_complete(rest + lines[cut:])
        assert [json.loads(p) for p in first + second] == list(SIM_TO_CLIENT.values())
        assert left == "}\n"
    telemetry = encode_line(SIM_TO_CLIENT["telemetry"]).decode()
    comma = re.sub(r'(":-?\d+)\.(\d+)', r"\1,\2", telemetry)  # a comma-locale sim
    assert comma != telemetry and '"cte":0,86526,' in comma
    assert json.loads(repair_comma_decimals(comma)) == SIM_TO_CLIENT["telemetry"]
    assert JsonStream().feed(comma.encode()) == [SIM_TO_CLIENT["telemetry"]]


# -- 1. ServerSession -------------------------------------------------------------------------

def test_every_client_message_is_handled_and_answered_like_the_fixture() -> None:
    session = new_session(lockstep=False)
    assert session.start() == [SIM_TO_CLIENT["scene_selection_ready"]]
    expected = {"get_protocol_version": ["protocol_version"], "get_scene_names": ["scene_names"],
                "load_scene": ["car_loaded"], "car_config": [], "racer_info": [],
                "cam_config": [], "control": [],  # real time: the frame comes when due
                # the control's throttle started the lap: its crossing goes before the frame
                "step_mode": ["collision_with_starting_line", "telemetry"],
                "node_position": ["node_position"], "set_position": ["telemetry"],
                "reset_car": ["telemetry"], "exit_scene": ["scene_selection_ready"],
                "quit_app": []}
    assert set(expected) == set(CLIENT_TO_SIM)
    for kind, want in expected.items():  # in this order: a client's session, real time first
        replies = session.handle(dict(CLIENT_TO_SIM[kind]))
        assert kinds(replies) == want, kind
        for reply in replies:
            encode_line(reply)  # strict JSON
            example = SIM_TO_CLIENT[reply["msg_type"]]
            assert set(reply) == set(example), reply["msg_type"]
            assert next(iter(reply)) == next(iter(example))  # scene_names before msg_type
    assert session.counts.invalid == 0 and not session.counts.unknown, session.errors
    assert session.quit and session.sim is None


def test_menu_handshake_and_protocol_version() -> None:
    session = new_session(lockstep=False)
    assert session.start() == [{"msg_type": "scene_selection_ready", "loaded": "1"}]
    [names] = session.handle({"msg_type": "get_scene_names"})
    assert names == {"scene_names": ["oval", "generated_track"], "msg_type": "scene_names"}
    assert list(names) == ["scene_names", "msg_type"]
    [version] = session.handle({"msg_type": "get_protocol_version"})
    assert version == {"msg_type": "protocol_version", "version": "2"}
    assert session.handle({"msg_type": "load_scene", "scene_name": "oval"}) == \
        [{"msg_type": "car_loaded"}]  # real time: telemetry comes when due
    assert kinds(session.due()) == ["telemetry"]
    assert session.handle({"msg_type": "exit_scene"}) == [SIM_TO_CLIENT["scene_selection_ready"]]
    assert session.sim is None and session.due() == []
    assert invalid_after(session, control("0", "0.5")) == 1  # no car any more: counted
    lockstep = new_session(lockstep=True)
    replies = lockstep.handle({"msg_type": "load_scene", "scene_name": "generated_track"})
    assert kinds(replies) == ["car_loaded", "telemetry"]  # lock-step: a frame to wait for
    assert lockstep.scene == "generated_track"
    assert lockstep.handle({"msg_type": "quit_app"}) == [] and lockstep.quit


def test_an_unknown_scene_gets_an_error_listing_the_scenes() -> None:
    session = new_session()
    [error] = session.handle({"msg_type": "load_scene", "scene_name": "mountain_track"})
    assert error["msg_type"] == "error"
    assert "'mountain_track'" in error["error"] and "oval, generated_track" in error["error"]
    for name in (["oval"], {"name": "oval"}, None, 3):  # unhashable ones too: no crash
        message = {"msg_type": "load_scene", "scene_name": name}
        assert kinds(session.handle(message)) == ["error"]
    assert kinds(session.handle({"msg_type": "load_scene"})) == ["error"]
    assert session.counts.invalid == 6 and session.sim is None


def test_scene_loaded_and_other_unknown_types_are_counted_and_ignored() -> None:
    session = loaded_session()
    stream = JsonStream()
    data = b"".join(encode_client({"msg_type": kind}) for kind in
                    ("scene_loaded", "scene_loaded", "missing_obj", "regen_road", "", "Control"))
    for message in stream.feed(data):
        assert session.handle(message) == []
    assert session.counts.unknown == {"scene_loaded": 2, "missing_obj": 1, "regen_road": 1,
                                      "": 1, "Control": 1}
    assert kinds(session.handle(control("0", "0.3"))) == ["collision_with_starting_line",
                                                         "telemetry"]  # still driving


def test_node_position_set_position_and_reset_car() -> None:
    session = loaded_session("generated_track")
    track = SCENES["generated_track"]
    [node] = session.handle(dict(CLIENT_TO_SIM["node_position"]))  # index "40"
    assert node["msg_type"] == "node_position" and node["index"] == 40
    assert all(type(node[k]) is float for k in ("pos_x", "pos_y", "pos_z", "Qx", "Qy", "Qz",
                                                 "Qw"))
    assert (node["pos_x"], node["pos_z"]) == pytest.approx(tuple(track.curve.xy[40]))
    q = (node["Qx"], node["Qy"], node["Qz"], node["Qw"])
    assert math.hypot(*q) == pytest.approx(1.0)
    assert m.yaw_from_quaternion(*q) == pytest.approx(float(track.curve.heading[40]))
    [far] = session.handle({"msg_type": "node_position", "index": str(len(track.curve.s) + 5)})
    assert far["index"] == 5  # wraps round
    # set_position with the node's pose, as strings (a client's way): the car is there.
    pose = {k: str(node[k]) for k in ("pos_x", "pos_y", "pos_z", "Qx", "Qy", "Qz", "Qw")}
    telemetry = one_telemetry(session.handle({"msg_type": "set_position", **pose}))
    assert (telemetry["pos_x"], telemetry["pos_z"]) == pytest.approx(
        (node["pos_x"], node["pos_z"]), abs=1e-4)
    assert telemetry["yaw"] == pytest.approx(m.unity_yaw_deg(float(track.curve.heading[40])),
                                             abs=1e-3)
    assert telemetry["speed"] == 0.0 and telemetry["hit"] == "none"
    # A yaw of our own through a quaternion, scaled (not unit length, as a client may send).
    for yaw in (2.0, -2.5, 0.1):
        q = [3.0 * v for v in m.quaternion(yaw)]
        message = {"msg_type": "set_position", "pos_x": "1.25", "pos_y": "0", "pos_z": "-0.5",
                   "Qx": q[0], "Qy": q[1], "Qz": q[2], "Qw": q[3]}
        telemetry = one_telemetry(session.handle(message))
        assert (telemetry["pos_x"], telemetry["pos_z"]) == (1.25, -0.5)
        assert m.yaw_from_unity(telemetry["yaw"]) == pytest.approx(yaw, abs=1e-4)
        assert session.sim is not None and session.sim.vehicle.state.yaw == pytest.approx(yaw)
    # Without a rotation the heading stays.
    telemetry = one_telemetry(session.handle({"msg_type": "set_position", "pos_x": "1.0",
                                              "pos_z": "0.0"}))
    assert m.yaw_from_unity(telemetry["yaw"]) == pytest.approx(0.1, abs=1e-4)
    assert invalid_after(session, {"msg_type": "set_position", "pos_x": "here"}) == 1
    assert invalid_after(session, {"msg_type": "node_position", "index": "first"}) == 1
    # Drive away, then reset_car: at rest on the start line again.
    for _ in range(20):
        telemetry = one_telemetry(session.handle(control("0.3", "0.6")))
    assert telemetry["speed"] > 0.5
    telemetry = one_telemetry(session.handle({"msg_type": "reset_car"}))
    x, y, yaw = track.pose_at(0.0)
    assert (telemetry["pos_x"], telemetry["pos_z"]) == pytest.approx((x, y), abs=1e-4)
    assert m.yaw_from_unity(telemetry["yaw"]) == pytest.approx(yaw, abs=1e-4)
    assert telemetry["speed"] == 0.0 and telemetry["throttle"] == 0.0


def test_step_mode_switches_to_lockstep_and_back() -> None:
    clock = FakeClock()
    session = loaded_session(lockstep=False, clock=clock)
    assert kinds(session.due()) == ["telemetry"] and session.due() == []
    clock.now += STEP_S
    assert kinds(session.due()) == ["telemetry"] and session.due() == []
    assert session.handle(control("0", "0.5")) == []  # real time: acts, no reply
    clock.now += 1.0  # a long stall: one frame, not the twenty missed
    assert kinds(session.due()) == ["collision_with_starting_line", "telemetry"]
    assert session.due() == []
    clock.now += STEP_S
    assert kinds(session.due()) == ["telemetry"]
    frame = one_telemetry(session.handle({"msg_type": "step_mode", "step_mode": "synchronous",
                                          "time_step": "0,1"}))  # a frame to wait for
    assert frame["time"] == pytest.approx(1.1 + LOAD_S)
    for i in range(1, 4):  # the world waits for each control, then runs one time step
        clock.now += 5.0
        assert session.due() == []
        telemetry = one_telemetry(session.handle(control("0", "0.5")))
        assert telemetry["time"] == pytest.approx(1.1 + 0.1 * i + LOAD_S)
    assert session.handle({"msg_type": "step_mode", "step_mode": "asynchronous",
                           "time_step": "0.05"}) == []
    assert session.handle(control("0", "0.5")) == []
    telemetry = one_telemetry(session.due())  # real time again, from where it stood
    assert telemetry["time"] == pytest.approx(1.4 + LOAD_S)
    clock.now += 0.5
    assert one_telemetry(session.due())["time"] == pytest.approx(1.9 + LOAD_S)
    # The old name, settings; and an unusable time step, counted and ignored.
    assert kinds(session.handle({"msg_type": "settings", "step_mode": "synchronous",
                                 "time_step": "0.05"})) == ["telemetry"]
    for bad in ("0", "2", "fast", None):
        assert invalid_after(session, {"msg_type": "step_mode", "step_mode": "asynchronous",
                                       "time_step": bad}) == 1
    assert session.lockstep and session.time_step_s == STEP_S


def test_cam_config_changes_the_frame_size_and_encoding() -> None:
    session = loaded_session()
    assert decode(one_telemetry(session.handle(control("0", "0")))).shape == (120, 160, 3)
    assert session.handle(m.cam_config(64, 48)) == []
    telemetry = one_telemetry(session.handle(control("0", "0")))
    assert image_bytes(telemetry).startswith(JPEG_MAGIC)
    assert decode(telemetry).shape == (48, 64, 3)
    png = {"msg_type": "cam_config", "img_w": "0", "img_h": "0", "img_enc": "PNG"}
    assert session.handle(png) == []  # 0 keeps the size
    telemetry = one_telemetry(session.handle(control("0", "0")))
    assert image_bytes(telemetry).startswith(PNG_MAGIC)
    assert decode(telemetry).shape == (48, 64, 3)
    assert session.counts.invalid == 0
    for width, height in (("15", "120"), ("5000", "120"), ("160", "15"), ("160.5", "120"),
                          ("160", "120.25")):
        message = {"msg_type": "cam_config", "img_w": width, "img_h": height, "img_enc": "JPG"}
        assert invalid_after(session, message) == 1, (width, height)
    assert invalid_after(session, {"msg_type": "cam_config", "img_enc": "TGA"}) == 1
    telemetry = one_telemetry(session.handle(control("0", "0")))
    assert image_bytes(telemetry).startswith(PNG_MAGIC)  # every refused one changed nothing
    assert decode(telemetry).shape == (48, 64, 3)
    # The lens and mount fields are logged and ignored; the size still applies.
    lens = {**CLIENT_TO_SIM["cam_config"], "fov": "90", "img_w": "32", "img_h": "24"}
    assert invalid_after(session, lens) == 0
    assert decode(one_telemetry(session.handle(control("0", "0")))).shape == (24, 32, 3)
    fresh = new_session()  # before a scene: kept for the car to come
    assert fresh.handle(m.cam_config(80, 60)) == []
    replies = fresh.handle({"msg_type": "load_scene", "scene_name": "oval"})
    assert decode(one_telemetry(replies)).shape == (60, 80, 3)


def test_a_control_before_load_scene_is_counted_not_a_crash() -> None:
    session = new_session()
    session.start()
    for message in (control("0", "0.5"), {"msg_type": "reset_car"},
                    {"msg_type": "set_position", "pos_x": "0", "pos_z": "0"},
                    {"msg_type": "node_position", "index": "3"}):
        assert invalid_after(session, message) == 1
    assert "before load_scene" in session.errors[0] and session.counts.controls == 0


def test_controls_as_strings_numbers_and_comma_decimals_clipped_to_range() -> None:
    session = loaded_session()
    for message in (control("0.25", "0.3"), control(0.25, 0.3, 0), control("0,25", "0,3", "0,0"),
                    {"msg_type": "control", "steering": " 0.25 ", "throttle": "3e-1"}):
        telemetry = one_telemetry(session.handle(message))
        assert telemetry["throttle"] == 0.3, message
    assert session.counts.controls == 4 and session.counts.invalid == 0
    bad = [control("NaN", "0.3"), control("abc", "0.3"), control("0", "inf"),
           control(None, "0.3"), control("0", "0.3", "soft"), control(True, "0.3"),
           control([0.1], "0.3"), {"msg_type": "control", "steering": "0.1"}]
    bad += JsonStream().feed(b'{"msg_type": "control", "steering": NaN, "throttle": 0.3}'
                             b'{"msg_type": "control", "steering": 0, "throttle": -Infinity}')
    for message in bad:
        assert invalid_after(session, message) == 1, message
    assert session.counts.controls == 4
    for _ in range(6):  # beyond the range: clipped (the servo takes a few steps to get there)
        telemetry = one_telemetry(session.handle(control("7", "3", "-2")))
    assert telemetry["throttle"] == 1.0 and telemetry["steering_angle"] == 1.0
    for _ in range(10):
        telemetry = one_telemetry(session.handle(control(-7, -3)))
    assert telemetry["throttle"] == -1.0 and telemetry["steering_angle"] == -1.0
    assert session.counts.invalid == len(bad)


def test_the_brake_holds_a_stopped_car_against_the_throttle() -> None:
    session = loaded_session()
    start = one_telemetry(session.handle(control("0", "0")))
    replies = []
    for _ in range(40):
        replies += session.handle(control("0.0", "1.0", "1.0"))
    held = of_type(replies, "telemetry")
    assert all(t["speed"] == 0.0 for t in held) and held[-1]["throttle"] == 1.0
    assert (held[-1]["pos_x"], held[-1]["pos_z"]) == (start["pos_x"], start["pos_z"])
    assert not of_type(replies, "collision_with_starting_line")  # braked: the lap waits
    replies = []
    for _ in range(20):
        replies += session.handle(control("0.0", "1.0", "0.0"))
    assert of_type(replies, "telemetry")[-1]["speed"] > 1.0
    assert kinds(replies[:2]) == ["collision_with_starting_line", "telemetry"]
    for _ in range(40):  # the foot brake stops it, and keeps it stopped with throttle on
        telemetry = one_telemetry(session.handle(control("0.0", "0.5", "1.0")))
    assert telemetry["speed"] == 0.0


def test_telemetry_has_every_field_with_its_json_type() -> None:
    session = loaded_session("generated_track")
    for _ in range(30):
        telemetry = one_telemetry(session.handle(control("0.2", "0.5")))
    line = encode_line(telemetry)
    assert line.count(b"\n") == 1 and line.endswith(b"}\n")  # strict, compact, one line
    assert set(telemetry) == set(SIM_TO_CLIENT["telemetry"])
    assert set(telemetry) == {*NUMBER_FIELDS, *INT_FIELDS, *STRING_FIELDS}
    for key in NUMBER_FIELDS:
        value = telemetry[key]
        assert type(value) in (int, float) and math.isfinite(value), key
    assert all(type(telemetry[k]) is int for k in INT_FIELDS)
    assert all(type(telemetry[k]) is str for k in STRING_FIELDS)
    assert telemetry["hit"] == "none" and telemetry["totalNodes"] == \
        len(SCENES["generated_track"].curve.s)
    assert 0 <= telemetry["activeNode"] < telemetry["totalNodes"]
    assert 0.0 <= telemetry["yaw"] < 360.0 and telemetry["speed"] > 0.5
    assert telemetry["time"] == pytest.approx(30 * STEP_S + LOAD_S)
    assert image_bytes(telemetry).startswith(JPEG_MAGIC)
    assert decode(telemetry).shape == (120, 160, 3)
    assert telemetry["steering_angle"] == pytest.approx(0.2) and telemetry["throttle"] == 0.5


# -- 2. lock-step driving: laps and hits ------------------------------------------------------

def test_lockstep_answers_each_control_with_exactly_one_telemetry() -> None:
    session = loaded_session()
    for i in range(50):
        replies = session.handle(control(str(0.02 * (i % 5)), "0.4"))
        assert len(of_type(replies, "telemetry")) == 1
    assert session.counts.controls == 50 and session.counts.frames == 51  # + car_loaded's


def test_driving_laps_sends_one_crossing_per_lap_with_the_lap_time() -> None:
    session = loaded_session("oval")
    assert session.sim is not None
    expert = Expert(session.sim.track, session.sim.params, CONFIG.sim.expert_speed_mps)
    messages: list[Message] = []
    for i in range(2000):
        steering, throttle = expert.act(session.sim.vehicle.state, STEP_S)
        replies = session.handle(m.control(steering, throttle))
        assert len(of_type(replies, "telemetry")) == 1
        if i == 0:  # the first throttle starts the lap timer: the car is on the line
            assert kinds(replies) == ["collision_with_starting_line", "telemetry"]
        messages += replies
        if len(of_type(messages, "cross_start")) == 2:
            break
    crossings = of_type(messages, "collision_with_starting_line")
    laps = of_type(messages, "cross_start")
    assert len(crossings) == 3 and len(laps) == 2 and session.counts.laps == 2
    assert all(c["starting_line_index"] == 0 for c in crossings)
    assert crossings[0]["timeStamp"] > 0.0  # gym reads 0.0 as "no lap started yet"
    for lap, (before, after) in zip(laps, itertools.pairwise(crossings)):
        assert isinstance(lap["lap_time"], str) and re.fullmatch(r"\d+\.\d{3}", lap["lap_time"])
        assert float(lap["lap_time"]) == pytest.approx(after["timeStamp"] - before["timeStamp"],
                                                       abs=0.001)
        assert 10.0 < float(lap["lap_time"]) < 40.0
        assert messages[messages.index(after) + 1] == lap  # the lap time follows its crossing
    assert all(t["hit"] == "none" for t in of_type(messages, "telemetry"))
    counter = LapCounter()  # gym-donkeycar's count from the same messages
    for crossing in crossings:
        counter.crossing(crossing)
    assert counter.lap_count == 2
    assert counter.last_lap_time == pytest.approx(float(laps[-1]["lap_time"]), abs=0.001)


def test_leaving_the_track_gives_one_hit_per_departure() -> None:
    session = loaded_session("oval")
    half_width = SCENES["oval"].width_m / 2
    telemetry: list[Message] = []
    for departure in range(2):
        replies = session.handle({"msg_type": "reset_car"})
        assert one_telemetry(replies)["hit"] == "none"
        frames = [one_telemetry(session.handle(control("0", "0.5"))) for _ in range(200)]
        hits = [i for i, t in enumerate(frames) if t["hit"] != "none"]
        assert len(hits) == 1, departure  # straight on, off the end of the straight, once
        i = hits[0]
        assert frames[i]["hit"] == "off_track"
        assert abs(frames[i]["cte"]) > half_width >= abs(frames[i - 1]["cte"])
        assert abs(frames[-1]["cte"]) > 2 * half_width  # still off: no more hits
        telemetry += frames
    assert sum(t["hit"] == "off_track" for t in telemetry) == 2


# -- 3. TCP ------------------------------------------------------------------------------------

@contextlib.contextmanager
def serving(lockstep: bool = False) -> Iterator[tuple[DonkeyServer, list[str]]]:
    lines: list[str] = []
    server = DonkeyServer(SCENES, CONFIG.sim, ServeOptions(lockstep=lockstep), port=0,
                          report=lines.append).start()
    try:
        yield server, lines
    finally:
        server.stop()


def gym_client(server: DonkeyServer, level: str = "oval") -> GymStyleClient:
    return GymStyleClient("127.0.0.1", server.port, level, reset_pause_s=0.3)


class RawClient:
    """Bytes in, messages out, with no help from a client library."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = JsonStream()
        self.received: list[Message] = []

    def until(self, count: int) -> list[Message]:
        """Read until ``count`` messages have come in all; returns them all."""
        while len(self.received) < count:
            data = self.sock.recv(65536)
            assert data, "the server closed the connection"
            self.received += self.stream.feed(data)
        return self.received

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("lockstep", [False, True], ids=["real-time", "lock-step"])
def test_a_gym_style_client_loads_a_scene_and_drives(lockstep: bool) -> None:
    with serving(lockstep) as (server, lines), gym_client(server, "generated_track") as client:
        client.wait_loaded()
        image, info = client.observe()
        assert image.shape == (120, 160, 3) and info["speed"] == 0.0
        start = info["pos"]
        for _ in range(30):
            image, info = client.step(0.0, 0.5)
        assert image.shape == (120, 160, 3) and image.dtype == np.uint8
        assert info["speed"] > 0.3 and info["hit"] == "none"
        assert math.dist(start, info["pos"]) > 0.3
        assert info["lap_count"] == 0  # the first crossing only starts the timer
        assert len(client.messages("collision_with_starting_line")) == 1
        assert client.scene_names == ["oval", "generated_track"]
        assert client.bad_pieces == 0 and not client.unknown and client.failure is None
        # On the wire: gym's exact bytes for the handshake, strings, no terminator.
        exact = FIXTURE["client_to_sim_bytes"]
        assert client.sent[0] == exact["get_scene_names"].encode()
        assert client.sent[1] == json.dumps({"msg_type": "load_scene",
                                             "scene_name": "generated_track"}).encode()
        assert [json.loads(d)["msg_type"] for d in client.sent[2:5]] == \
            ["car_config", "cam_config", "control"]  # the queued hand brake goes last
        assert json.loads(client.sent[4]) == {"msg_type": "control", "steering": "0",
                                              "throttle": "0", "brake": "1.0"}
        image, info = client.reset()  # gym's reset: back at rest on the start line
        x, y, _ = SCENES["generated_track"].pose_at(0.0)
        assert (info["pos"][0], info["pos"][2]) == pytest.approx((x, y), abs=0.01)
        assert info["speed"] == 0.0 and image.shape == (120, 160, 3)
        session = server.client.session if server.client else None
        assert session is not None and session.counts.invalid == 0
    assert wait_for(lambda: server.client is None)
    assert any(line.startswith("client 127.0.0.1:") and "connected" in line for line in lines)


def test_a_level_the_simulator_lacks_raises_as_in_gym() -> None:
    with serving() as (server, _), gym_client(server, "mountain_track") as client:
        with pytest.raises(ValueError, match="'mountain_track' is not among the scenes"):
            client.wait_loaded()
        assert client.sent == [FIXTURE["client_to_sim_bytes"]["get_scene_names"].encode()]


def test_a_second_client_is_refused_until_the_first_leaves() -> None:
    with serving() as (server, lines):
        first = gym_client(server)
        first.wait_loaded()
        driver = "{}:{}".format(*first.sock.getsockname())
        with gym_client(server) as second:
            refused = second.wait_for_message("refused")
            assert second.closed.wait(5) and second.failure is None  # closed by the server
            assert driver in refused["reason"] and "one client at a time" in refused["reason"]
            assert second.unknown == {"refused": 1} and not second.loaded
        assert wait_for(lambda: any(f"busy with {driver}" in line for line in lines))
        assert server.refused == 1
        first.observe()  # the first one is still driving
        first.close()
        assert wait_for(lambda: any(" frames, " in line for line in lines))
        with gym_client(server, "generated_track") as third:
            third.wait_loaded()
            assert third.observe()[0].shape == (120, 160, 3)
        assert server.served == 2 and server.refused == 1
        # It left with frames unread, so the server may see a reset rather than an end.
        assert any(line.startswith(f"client {driver} ") and " frames, " in line
                   for line in lines)


def test_quit_app_ends_serve() -> None:
    lines: list[str] = []
    server = DonkeyServer(SCENES, CONFIG.sim, ServeOptions(), port=0, report=lines.append)
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(server.serve()), daemon=True)
    thread.start()
    with gym_client(server) as client:
        client.wait_loaded()
        client.observe()
        client.send_now(CLIENT_TO_SIM["quit_app"])
        thread.join(timeout=10)
        assert result == ["quit_app"] and client.closed.wait(5)
    assert any("quit_app" in line for line in lines)
    with pytest.raises(OSError):  # the listener is closed
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_client_that_vanishes_mid_stream_is_dropped(how: str) -> None:
    with serving() as (server, lines):
        client = gym_client(server)
        client.wait_loaded()
        for _ in range(5):
            client.step(0.1, 0.4)
        client._stop.set()
        client._thread.join()
        if how == "reset":  # RST instead of FIN
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.sock.close()
        # The server drops it, and says so (the line comes just after the drop).
        assert wait_for(lambda: any(" frames, " in line for line in lines))
        assert any("disconnected;" in line or "connection error" in line for line in lines)
        with gym_client(server, "generated_track") as again:
            again.wait_loaded()
            assert again.step(0.0, 0.3)[0].shape == (120, 160, 3)
        assert server._thread is not None and server._thread.is_alive()


def test_one_byte_writes_back_to_back_and_newline_ended_messages() -> None:
    with serving(lockstep=True) as (server, _):
        raw = RawClient(server.port)
        assert kinds(raw.until(1)) == ["scene_selection_ready"]
        handshake = encode_client({"msg_type": "get_scene_names"}) + \
            encode_client({"msg_type": "load_scene", "scene_name": "oval"})
        for i in range(len(handshake)):  # one byte a send
            raw.sock.sendall(handshake[i:i + 1])
            time.sleep(0.0005)
        assert kinds(raw.until(4)[1:]) == ["scene_names", "car_loaded", "telemetry"]
        # Back to back in one send, as gym's stream reaches the sim.
        raw.sock.sendall(encode_client(m.control(0.0, 0.3)) + encode_client(m.control(0.0, 0.3))
                         + encode_client({"msg_type": "get_protocol_version"}))
        assert kinds(raw.until(8)[4:]) == ["collision_with_starting_line", "telemetry",
                                           "telemetry", "protocol_version"]
        # Newline-ended, CRLF, whitespace, and pretty-printed JSON work too.
        raw.sock.sendall(encode_client(m.control(0.0, 0.3)) + b"\n"
                         + b'  {"msg_type":"get_protocol_version"}\r\n'
                         + json.dumps(m.control(0.1, 0.3), indent=2).encode() + b"\n")
        assert kinds(raw.until(11)[8:]) == ["telemetry", "protocol_version", "telemetry"]
        client = server.client
        assert client is not None and client.session.counts.controls == 4
        assert client.stream.counts.malformed == client.stream.counts.skipped_bytes == 0
        raw.close()


# -- 4. fuzz -----------------------------------------------------------------------------------

FUZZ = settings(max_examples=60, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**40, 10**40), st.floats(),
    st.sampled_from([10**400, -(10**309), 2**1024]),  # beyond any float
    st.text(max_size=10),
    st.sampled_from(["0,5", "NaN", "-Infinity", "1e999", "160.5", "{", "}", '"', "\\", "{\"}",
                     "oval", "synchronous", "PNG", "9" * 400]))
VALUES = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=3)
                      | st.dictionaries(st.text(max_size=4), kids, max_size=3), max_leaves=6)
HANDLED_TYPES = {*CLIENT_TO_SIM, "settings"}
KNOWN_TYPES = [*CLIENT_TO_SIM, "settings", "scene_loaded", "telemetry", "regen_road"]
EXAMPLES = {**CLIENT_TO_SIM, "settings": CLIENT_TO_SIM["step_mode"]}  # (its old name)


@st.composite
def client_messages(draw: st.DrawFn) -> Message:
    """A message of a known or random type: each of its type's fields the fixture's value,
    a random value, or absent; and maybe a few random extra fields."""
    kind = draw(st.sampled_from(KNOWN_TYPES) | st.text(max_size=8))
    body: Message = {}
    for key in [k for k in EXAMPLES.get(kind, {}) if k != "msg_type"]:
        how = draw(st.sampled_from(["fixture", "random", "absent"]))
        if how == "fixture":
            body[key] = EXAMPLES[kind][key]
        elif how == "random":
            body[key] = draw(VALUES)
    body.update(draw(st.dictionaries(st.text(max_size=6), VALUES, max_size=2)))
    return {**body, "msg_type": kind}


MESSAGES = client_messages()
_fuzz_sessions: dict[str, ServerSession] = {}


def fuzz_session(name: str) -> ServerSession:
    """One loaded lock-step session per fuzz test, kept across examples (a load takes a
    while), and put back in a scene at 160x120 when an example took it out."""
    session = _fuzz_sessions.get(name)
    if session is None:
        session = _fuzz_sessions[name] = loaded_session()
    if session.sim is None:
        session.size = (160, 120)
        session.handle({"msg_type": "load_scene", "scene_name": "oval"})
    elif session.size != (160, 120):
        session.handle(m.cam_config(160, 120))
    return session


def feed_everything(session: ServerSession, stream: JsonStream, data: bytes) -> int:
    """Feed ``data`` through the stream to the session: every reply must be strict JSON (or
    the server could not send it) and every unknown type counted. Returns the messages."""
    count = 0
    for message in stream.feed(data):
        count += 1
        kind = message["msg_type"]
        unknown = session.counts.unknown[kind]
        for reply in session.handle(message):
            encode_line(reply)
        if kind not in HANDLED_TYPES:
            assert session.counts.unknown[kind] == unknown + 1
    return count


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_never_raise_and_are_counted(data: bytes) -> None:
    session, stream = fuzz_session("bytes"), JsonStream()
    feed_everything(session, stream, data)
    c = stream.counts
    if data.strip(b" \t\r\n"):  # counted, or the start of an object still open
        assert c.messages + c.malformed + c.skipped_bytes + c.oversize > 0 or stream._start >= 0


@settings(FUZZ, max_examples=100)
@given(st.lists(MESSAGES, min_size=1, max_size=4), st.data())
def test_random_messages_never_raise(messages: list[Message], data: st.DataObject) -> None:
    session, stream = fuzz_session("messages"), JsonStream()
    raw = b"".join(json.dumps(msg).encode() for msg in messages)  # NaN, Infinity tokens too
    damaged = data.draw(st.booleans())
    if damaged:  # non-UTF-8 somewhere
        at = data.draw(st.integers(0, len(raw)))
        raw = raw[:at] + b"\xff\xfe" + raw[at:]
    handled = feed_everything(session, stream, raw)
    c = stream.counts
    if damaged:
        assert c.malformed + c.skipped_bytes > 0
    else:
        assert handled == c.messages == len(messages) and c.malformed == 0


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # a car at 1e308 m
def test_a_garbage_burst_then_a_well_formed_client_is_served() -> None:
    rng = random.Random(8)
    burst = [
        encode_client({"msg_type": "load_scene", "scene_name": "oval"}),
        b'{"msg_type":"load_scene","scene_name":["oval"]}',
        b'{"msg_type":"set_position","pos_x":1e308,"pos_z":-1e308,'
        b'"Qx":1e200,"Qy":-1e200,"Qz":1e200,"Qw":1e200}',
        b'{"msg_type":"control","steering":' + b"9" * 5000 + b',"throttle":"0"}',
        b'{"msg_type":"control","steering":1' + b"0" * 400 + b',"throttle":"0"}',
        b'{"msg_type":"deep","x":' + b"[" * 50000 + b"]" * 50000 + b"}",
        b'{"msg_type":"control","steering":"\xff\xfe","throttle":"0.1"}',
        b'{"msg_type":"control","steering":NaN,"throttle":Infinity}',
        b'{"msg_type": "scene_loaded"}{"no_type": {"{": "}"}}',
        b'{"msg_type":"cam_config","img_w":"15","img_h":"5000"}',
        bytes(rng.randrange(256) for _ in range(3000)),
        b'}}}{{{"',
    ]
    with serving() as (server, lines):
        garbage = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        garbage.sendall(b"".join(burst))
        garbage.shutdown(socket.SHUT_WR)  # the end of the burst; then read to the end, so
        while garbage.recv(65536):  # the server sees an orderly end, not a reset that
            pass  # would throw away what it has not read yet
        garbage.close()
        assert wait_for(lambda: any(" frames, " in line for line in lines), timeout_s=10)
        [left] = [line for line in lines if " frames, " in line]
        assert "disconnected;" in left
        assert "malformed message(s)" in left and "scene_loaded ×1" in left
        assert "unusable value(s)" in left
        assert server._thread is not None and server._thread.is_alive()
        with gym_client(server, "generated_track") as client:
            client.wait_loaded()
            image, info = client.step(0.0, 0.4)
            assert image.shape == (120, 160, 3) and info["hit"] == "none"
        assert server.served == 2


# -- 5. the CLI --------------------------------------------------------------------------------

def test_car_sim_serve_serves_a_gym_client_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "car.cli", "sim", "serve", "--port", "0",
                             "--track", "oval", "--track", "generated_track=diyrobocars"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: any("serving" in line for line in lines), timeout_s=60), lines
        [banner] = [line for line in lines if "serving" in line]
        found = re.search(r"donkey://127\.0\.0\.1:(\d+) ", banner)
        assert found and int(found.group(1)) > 0, banner
        assert "2 scene(s) (oval, generated_track)" in banner and "real time" in banner
        with GymStyleClient("127.0.0.1", int(found.group(1)), "generated_track") as client:
            client.wait_loaded()
            start = client.observe()[1]["pos"]
            for _ in range(20):
                image, info = client.step(0.0, 0.5)
            assert image.shape == (120, 160, 3) and math.dist(start, info["pos"]) > 0.1
        # The line said when the client left (disconnected, or reset with frames unread).
        assert wait_for(lambda: any(" frames, " in line for line in lines), timeout_s=10)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)  # (not communicate(): the reader thread owns stderr)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    assert proc.returncode == 130, lines
    assert lines[-1].strip() == "stopped (Ctrl-C): served 1 client(s), refused 0"
    assert "Traceback" not in "".join(lines) and stdout == ""


@pytest.mark.parametrize(("extra", "message"), [
    (["--port", "PORT"], "is in use"),
    (["--track", "nope"], "no track 'nope'"),
    (["--track", "=x"], "write NAME=TRACK"),
    (["--track", "oval=x"], "no track 'x'"),
    (["--track", "oval", "--track", "oval"], "two scenes are called 'oval'"),
    (["--track", "a=oval", "--track", "a=technical"], "two scenes are called 'a'"),
    (["--host", "203.0.113.5", "--port", "0"], "--host 203.0.113.5: not an address of this"),
])
def test_bad_serve_flags_get_one_line_errors(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             extra: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        argv = [str(taken.getsockname()[1]) if a == "PORT" else a for a in extra]
        if "--track" not in argv:
            argv += ["--track", "oval"]
        code = main(["sim", "serve", *argv])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err
