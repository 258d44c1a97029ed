"""The donkey simulator client (car.sim.donkey.client, link, eval): against `car sim serve`
in the same process (lock-step eval equal to the embedded eval, `car drive`, `car record`,
interventions, reconnects), and against a scripted fake simulator (tests/fake_donkey_sim.py)
for what our server never sends: comma decimals, byte-by-byte writes, bad messages, silence,
a sim already in a scene, other lap messages."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from car.camera import CameraError
from car.cli import main
from car.config import Config
from car.controllers import ScriptedController
from car.errors import CarError
from car.frames import Command, Mode
from car.loop import DriveLoop, Ratekeeper
from car.modes import Arbiter
from car.run import RunSpec, drive
from car.sim.donkey.client import DonkeyClient
from car.sim.donkey.link import DonkeyLink, is_donkey_address, parse_address
from car.sim.donkey.server import DonkeyServer
from car.sim.donkey.session import ServeOptions
from car.sim.eval import evaluate
from car.sim.link import SimLink
from car.sim.track import Track
from car.sim.tracks import load_track
from car.sim.world import Simulator
from car.tub.check import check_tub
from car.tub.reader import Tub
from deploy.engine import load_engine
from tests.fake_donkey_sim import FakeSim, Peer, jpeg_b64, telemetry
from tests.loop_fakes import FakeEngine
from tests.sim_helpers import TURN_RADIUS_M
from tests.waiting import wait_for

FIXTURE = Path(__file__).parent / "fixtures" / "pilot_linear.onnx"
EVAL_KEYS = {"track", "laps", "laps_completed", "lap_times_s", "mean_lap_time_s", "finished",
             "autonomy_pct", "interventions", "mean_abs_cte_m", "max_abs_cte_m", "elapsed_s",
             "pilot", "latency", "stop_reason", "loop"}


@pytest.fixture(scope="module")
def scenes() -> dict[str, Track]:
    return {name: load_track(name, TURN_RADIUS_M) for name in ("diyrobocars", "oval")}


@contextlib.contextmanager
def serving(scenes: dict[str, Track], port: int = 0, **options) -> Iterator[DonkeyServer]:
    """`car sim serve` on a thread of this process."""
    server = DonkeyServer(scenes, Config().sim, ServeOptions(**options), port=port).start()
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connect(port: int, **kw) -> DonkeyClient:
    kw.setdefault("connect_timeout_s", 2.0)
    kw.setdefault("answer_timeout_s", 30.0)  # loading a scene on a loaded CI machine
    return DonkeyClient("127.0.0.1", port, **kw).connect()


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# -- 1. lock-step loopback: the same score as the embedded simulator --------------------------

@pytest.fixture(scope="module")
def direct_eval(scenes: dict[str, Track]):
    sim = Simulator(scenes["diyrobocars"], Config().sim)
    return evaluate(SimLink(sim, 0.05, lockstep=True, latency_s=0.0), load_engine(FIXTURE),
                    Config(), laps=1, rate_hz=20)


def test_a_lock_step_lap_through_the_protocol_scores_as_the_embedded_eval(scenes, direct_eval):
    """Measured: the same lap time (30.55 s) and autonomy; mean |cte| differs by ~0.0006 m
    (JPEG frames). The tolerances leave a wide margin."""
    with serving(scenes) as server:
        client = connect(server.port, scene="diyrobocars", lockstep=True, time_step_s=0.05)
        link = DonkeyLink(client, 0.05)
        try:
            remote = evaluate(link, load_engine(FIXTURE), Config(), laps=1, rate_hz=20)
        finally:
            link.close()
    direct = direct_eval
    assert direct.laps_completed == 1 and remote.stop_reason == "laps done", remote
    assert remote.laps_completed == direct.laps_completed
    assert remote.lap_times_s[0] == pytest.approx(direct.lap_times_s[0], rel=0.02)
    assert remote.autonomy_pct == direct.autonomy_pct
    assert remote.interventions == direct.interventions
    assert abs(remote.mean_abs_cte_m - direct.mean_abs_cte_m) < 0.01
    assert remote.latency == "none: lock-step"
    assert client.counts.bad_images == 0 and client.stream.counts.malformed == 0
    assert client.counts.reconnects == 0 and not client.counts.unknown


def test_car_sim_eval_on_a_donkey_simulator_prints_the_embedded_schema(
        scenes, direct_eval, capsys):
    with serving(scenes) as server:
        code = main(["sim", "eval", "--sim", f"donkey://127.0.0.1:{server.port}", "--scene",
                     "diyrobocars", "--lockstep", "--laps", "1", "--json", "--model",
                     str(FIXTURE)])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out)  # exactly one JSON object
    assert set(data) >= EVAL_KEYS
    embedded = direct_eval.to_json()
    assert set(data) == set(embedded)
    assert set(data["loop"]) == set(embedded["loop"])
    assert set(data["loop"]["latency_ms"]) == {"p50", "p99"}
    assert data["track"] == f"diyrobocars at donkey://127.0.0.1:{server.port}"
    assert data["laps_completed"] == 1 and data["finished"]
    assert data["lap_times_s"][0] == pytest.approx(embedded["lap_times_s"][0], rel=0.02)
    assert data["latency"] == "none: lock-step"


# -- 2. car drive / car record in real time; interventions -----------------------------------

def test_car_drive_on_a_donkey_simulator(scenes, capsys):
    with serving(scenes) as server:
        address = f"donkey://127.0.0.1:{server.port}"
        code = main(["drive", "--model", str(FIXTURE), "--sim", address, "--scene", "oval",
                     "--duration", "3", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["stop_reason"] == "done"
    assert data["ticks"] > 0 and data["mode"] == "local"
    assert data["sim"]["track"] == f"oval at {address}"
    assert server.served == 1


def test_recording_on_a_donkey_simulator_writes_a_valid_tub(scenes, tmp_path):
    person = ScriptedController(Mode.USER, steering=0.1, throttle=0.3)
    out = tmp_path / "tub"
    with serving(scenes) as server:
        summary = drive(RunSpec(sim=f"donkey://127.0.0.1:{server.port}", scene="oval",
                                controller=person, duration_s=2, record=str(out),
                                auto_record=True, mode="user"), Config())
    assert summary["stop_reason"] == "done" and summary["ticks"] > 0
    assert summary["mode"] == "user"
    assert summary["sim"]["track"].startswith("oval at donkey://")
    records = list(Tub(out).records())
    assert 0 < len(records) == summary["record"]["written"]
    assert {"cam/image_array", "user/throttle", "sim/cte", "sim/speed"} <= set(records[-1])
    assert all(r["user/throttle"] == pytest.approx(0.3) for r in records)
    assert records[-1]["sim/speed"] > 0.0  # the throttle reached the served car
    assert check_tub(out).problems == []


def test_car_record_with_nobody_driving_still_leaves_a_valid_tub(scenes, tmp_path, capsys):
    out = tmp_path / "tub"
    with serving(scenes) as server:
        code = main(["record", "--sim", f"donkey://127.0.0.1:{server.port}", "--scene", "oval",
                     "--controller", "none", "--duration", "1", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0 and "nobody drives" in captured.err
    assert "ticks in" in captured.out and "sim oval at donkey://" in captured.out
    assert list(Tub(out).records()) == []  # nothing moved: auto-record kept nothing
    assert check_tub(out).problems == []


def test_a_car_off_the_track_is_put_back_at_the_nearest_node(scenes):
    """Steering full right leaves the oval again and again: each departure is a hit
    (off_track), an intervention, and node_position + set_position put the car back on the
    centreline at rest."""
    with serving(scenes) as server:
        client = connect(server.port, scene="oval", lockstep=True)
        link = DonkeyLink(client, 0.05)
        after: list[tuple[float, float]] = []  # |cte| and speed once put back
        put_back = link.put_back

        def watched() -> None:
            put_back()
            t = client.telemetry
            after.append((abs(t.cte), t.speed))

        link.put_back = watched  # type: ignore[method-assign]
        pilot = FakeEngine(lambda n: (1.0, 0.5))
        try:
            result = evaluate(link, pilot, Config(), laps=1, rate_hz=20,
                              should_stop=lambda: link.status.time_s > 20)
        finally:
            link.close()
    assert result.stop_reason == "interrupted" and result.laps_completed == 0
    assert result.interventions >= 2 and len(after) == result.interventions
    assert {cause for *_, cause in result.intervention_points} == {"hit off_track"}
    assert pilot.resets == result.interventions == link.resets
    assert all(cte < 0.05 and speed < 0.05 for cte, speed in after), after
    assert result.autonomy_pct < 100.0


def test_put_back_falls_back_to_reset_car_when_node_position_gets_no_answer(monkeypatch):
    monkeypatch.setattr("car.sim.donkey.link.REPLY_S", 0.2)

    def script(peer: Peer) -> None:
        peer.handshake(frame=telemetry(activeNode=7))
        peer.send(telemetry(hit="wall", activeNode=7, cte=0.3))
        while True:  # a Unity build without node_position: silence, but reset_car works
            for message in peer.poll():
                if message["msg_type"] == "reset_car":
                    peer.send(telemetry(activeNode=0, cte=0.0))

    reports: list[str] = []
    with FakeSim(script) as fake:
        client = connect(fake.port, report=reports.append)
        link = DonkeyLink(client, 0.05)
        try:
            assert wait_for(lambda: client.telemetry.hit == "wall")
            assert link.lost() == "hit wall"
            assert link.lost() is None  # a hit is taken once
            link.put_back()
            assert client.telemetry.cte == 0.0
            link.put_back()
            peer = fake.peers[0]
            kinds = [m["msg_type"] for m in peer.received]
            # asked once: after no answer, reset_car at once (no 1 s wait each time)
            assert kinds.count("node_position") == 1 and kinds.count("reset_car") == 2
            assert peer.received[kinds.index("node_position")]["index"] == "7"
        finally:
            link.close()
    warnings = [r for r in reports if "does not answer node_position" in r]
    assert len(warnings) == 1 and "reset_car" in warnings[0]
    assert link.resets == 2 and not fake.errors


# -- 3. comma decimals and partial reads ------------------------------------------------------

def comma_telemetry(image: str, cte: str) -> bytes:
    """Telemetry as a Unity sim in a comma locale writes it (not valid JSON)."""
    return ('{"msg_type":"telemetry","steering_angle":0,25,"throttle":0,3,"speed":1,5,'
            f'"image":"{image}","hit":"none","pos_x":12,5,"pos_y":0,"pos_z":-3,75,'
            f'"yaw":180,0,"cte":{cte},"activeNode":3,"time":1,35}}\n').encode()


def test_comma_decimal_numbers_from_the_simulator_are_read_right():
    looked = threading.Event()

    def script(peer: Peer) -> None:
        peer.handshake(frame=comma_telemetry(jpeg_b64(), "-0,125"))
        looked.wait(10)
        peer.send(b'{"msg_type":"collision_with_starting_line","starting_line_index":0,'
                  b'"timeStamp":1,5}\n')
        peer.send(b'{"msg_type":"collision_with_starting_line","starting_line_index":0,'
                  b'"timeStamp":12,25}\n')
        peer.send(comma_telemetry(jpeg_b64(), "0,5"))
        peer.hold()

    with FakeSim(script) as fake:
        client = connect(fake.port)
        try:
            first = client.telemetry
            looked.set()
            assert wait_for(lambda: client.telemetry.seq == 1)
            second = client.telemetry
        finally:
            client.close()
    assert (first.steering, first.throttle, first.speed) == (0.25, 0.3, 1.5)
    assert (first.x, first.y, first.cte, first.time_s) == (12.5, -3.75, -0.125, 1.35)
    assert first.yaw == pytest.approx(-1.5707963) and first.active_node == 3  # facing -x
    assert second.cte == 0.5
    assert client.laps == 1 and client.lap_times_s == [pytest.approx(10.75)]
    assert client.stream.counts.comma_decimals == 4
    assert client.stream.counts.malformed == 0


def test_a_simulator_that_writes_one_byte_at_a_time():
    def script(peer: Peer) -> None:
        peer.byte_by_byte = True
        peer.handshake(scenes=("warehouse", "oval"), frame=telemetry(jpeg_b64(32, 24)))
        for i in range(1, 4):
            peer.send(telemetry(jpeg_b64(32, 24, 40 * i), cte=0.1 * i))
        peer.hold()

    with FakeSim(script) as fake:
        client = connect(fake.port, scene="oval", size=(32, 24))
        try:
            assert client.scenes == ["warehouse", "oval"]
            assert wait_for(lambda: client.frame.seq == 3)
            assert client.telemetry.cte == pytest.approx(0.3)
            assert client.frame.image.shape == (24, 32, 3)
        finally:
            client.close()
    assert client.stream.counts.malformed == 0 and client.counts.bad_images == 0
    assert not fake.errors


def test_the_client_speaks_like_gym_donkeycar():
    """Strings for numbers, no newline after an object, the configs the Unity sim reads,
    and step_mode only in lock-step."""
    cams: list[dict] = []

    def script(peer: Peer) -> None:
        cams.append(peer.handshake())
        peer.expect("step_mode")
        peer.hold()

    with FakeSim(script) as fake:
        client = connect(fake.port, scene="oval", size=(160, 120), lockstep=True,
                         car_name="ours")
        client.send({"msg_type": "control", "steering": "0.5", "throttle": "0.25",
                     "brake": "0.0"})
        peer = fake.peers[0]
        assert wait_for(lambda: any(m.get("steering") == "0.5" for m in peer.received))
        client.close()
    kinds = [m["msg_type"] for m in peer.received]
    assert kinds[:6] == ["get_scene_names", "load_scene", "control", "car_config",
                         "cam_config", "step_mode"]
    assert peer.received[1]["scene_name"] == "oval"
    assert peer.received[2] == {"msg_type": "control", "steering": "0.0", "throttle": "0.0",
                                "brake": "1.0"}
    assert peer.received[3]["car_name"] == "ours"
    assert (cams[0]["img_w"], cams[0]["img_h"], cams[0]["img_enc"]) == ("160", "120", "JPG")
    assert peer.received[5] == {"msg_type": "step_mode", "step_mode": "synchronous",
                                "time_step": "0.05"}
    assert b"\n" not in peer.raw and peer.stream.counts.malformed == 0
    assert all(isinstance(v, str) for m in peer.received for v in m.values())


# -- 4. bad input ------------------------------------------------------------------------------

def test_bad_messages_are_counted_and_the_last_good_frame_kept(caplog):
    checked = threading.Event()

    def script(peer: Peer) -> None:
        peer.handshake(frame=telemetry(cte=0.2))
        peer.send(b'{not json}\n{"no_type": 1}\ngarbage\n')
        peer.send({"msg_type": "weird_thing", "x": 1})
        peer.send({"msg_type": "weird_thing", "x": 2})
        peer.send(telemetry(image="!!!not base64!!!", cte=9.0))
        peer.send(telemetry(image=base64.b64encode(b"hello").decode(), cte=9.0))
        peer.send(telemetry(image="", cte=9.0))
        bare = telemetry(cte=9.0)
        del bare["image"]
        peer.send(bare)
        peer.send({"msg_type": "marker"})
        checked.wait(10)
        peer.send(b'{"msg_type":"telemetry","image":"' + jpeg_b64().encode()
                  + b'","cte":NaN,"speed":Infinity,"hit":"none"}\n')
        peer.hold()

    caplog.set_level(logging.WARNING, logger="car.sim.donkey")
    with FakeSim(script) as fake:
        client = connect(fake.port)
        try:
            assert wait_for(lambda: client.counts.unknown["marker"] == 1)
            assert client.frame.seq == 0 and client.telemetry.cte == 0.2  # kept
            checked.set()
            assert wait_for(lambda: client.frame.seq == 1)
            assert client.telemetry.cte == 0.0 and client.telemetry.speed == 0.0  # NaN, inf
            assert client.fault is None and client.failed is None
        finally:
            client.close()
    c = client.counts
    assert c.bad_images == 4 and c.unknown["weird_thing"] == 2 and c.telemetry == 2
    assert client.stream.counts.malformed == 2 and client.stream.counts.skipped_bytes == 7
    logged = caplog.text
    assert logged.count("unknown msg_type 'weird_thing'") == 1  # once, then counted
    assert logged.count("does not decode") == 1


@pytest.mark.parametrize("lockstep, message", [
    (False, "sent no telemetry for 0.5 s: the simulator has stopped answering"),
    (True, "sent no frame for 0.5 s in lock-step: has it stopped answering?"),
])
def test_a_simulator_that_goes_silent_stops_the_camera(lockstep, message, monkeypatch):
    monkeypatch.setattr("car.sim.donkey.link.SILENT_S", 0.5)

    def script(peer: Peer) -> None:
        peer.handshake()
        peer.hold()  # connected, and not another frame

    with FakeSim(script) as fake:
        link = DonkeyLink(connect(fake.port, lockstep=lockstep), 0.05)
        try:
            assert link.camera.read().seq == 0
            with pytest.raises(CameraError, match=re.escape(message)):
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    link.camera.read()
        finally:
            link.close()

def test_frames_of_another_size_are_resized_with_one_warning():
    def script(peer: Peer) -> None:
        peer.handshake(frame=telemetry(jpeg_b64(64, 48)))
        peer.send(telemetry(jpeg_b64(64, 48)))
        peer.hold()

    reports: list[str] = []
    with FakeSim(script) as fake:
        client = connect(fake.port, report=reports.append)
        try:
            assert wait_for(lambda: client.frame.seq == 1)
            assert client.frame.image.shape == (120, 160, 3)
        finally:
            client.close()
    assert [r for r in reports if "64x48" in r] == [
        f"{fake.address} sends 64x48 frames, not the 160x120 asked for: resizing here"]


def test_a_simulator_that_accepts_but_never_answers():
    with FakeSim(lambda peer: peer.hold()) as fake, \
            pytest.raises(CarError, match="accepted the connection but sent no") as err:
        connect(fake.port, answer_timeout_s=0.5)
    assert fake.address in str(err.value) and "0.5 s" in str(err.value)


def test_a_simulator_that_goes_silent_after_the_scene_list():
    def script(peer: Peer) -> None:
        peer.send({"msg_type": "scene_selection_ready", "loaded": "1"})
        peer.expect("get_scene_names")
        peer.send({"scene_names": ["oval"], "msg_type": "scene_names"})
        peer.hold()  # and never car_loaded

    with FakeSim(script) as fake, pytest.raises(CarError, match="sent no") as err:
        connect(fake.port, scene="oval", answer_timeout_s=0.5)
    assert "oval" in str(err.value)


def test_a_simulator_that_closes_the_connection():
    with FakeSim(lambda peer: None) as fake, \
            pytest.raises(CarError, match="closed the connection during the handshake"):
        connect(fake.port)


def test_nothing_listening():
    port = free_port()
    with pytest.raises(CarError, match=f"nothing answers at donkey://127.0.0.1:{port}"):
        DonkeyClient("127.0.0.1", port, connect_timeout_s=0.3).connect()


def test_an_ipv6_address_is_written_so_that_it_can_be_passed_back():
    port = free_port()
    with pytest.raises(CarError) as err:
        DonkeyClient("::1", port, connect_timeout_s=0.2).connect()
    address = f"donkey://[::1]:{port}"
    assert f"nothing answers at {address} " in str(err.value)
    assert parse_address(address) == ("::1", port)


def test_an_unknown_scene_lists_the_valid_ones(scenes, capsys):
    with serving(scenes) as server:
        with pytest.raises(CarError, match="has no scene 'moon'; its scenes are "
                                           "diyrobocars, oval: pass one with --scene"):
            connect(server.port, scene="moon")
        code = main(["sim", "eval", "--sim", f"donkey://127.0.0.1:{server.port}", "--scene",
                     "moon", "--model", str(FIXTURE)])
    assert code == 1 and "its scenes are diyrobocars, oval" in one_line_error(capsys)


def test_a_second_client_is_told_why_it_is_refused(scenes):
    with serving(scenes) as server:
        first = connect(server.port, scene="oval")
        try:
            with pytest.raises(CarError, match=re.escape(
                    "refused the connection: this simulator is driven by 127.0.0.1:")):
                connect(server.port, scene="oval")
        finally:
            first.close()
    assert server.refused == 1


def test_a_refusal_that_follows_another_message_still_gives_the_reason():
    """Two messages in one read during the handshake: neither may be skipped."""
    def script(peer: Peer) -> None:
        peer.send(b'{"msg_type":"ping"}\n{"msg_type":"refused","reason":"race in progress"}\n')

    with FakeSim(script) as fake, \
            pytest.raises(CarError, match="refused the connection: race in progress"):
        connect(fake.port)


@pytest.mark.parametrize("first", ["car_loaded", "need_car_config"])
def test_a_simulator_already_in_a_scene(first):
    def script(peer: Peer) -> None:
        peer.handshake(first=first, frame=telemetry(cte=0.4))
        peer.hold()

    reports: list[str] = []
    with FakeSim(script) as fake:
        client = connect(fake.port, scene="oval", report=reports.append)
        client.close()
    assert client.telemetry.cte == 0.4 and client.scenes == []
    assert reports == [f"{fake.address} is already in a scene, so --scene oval was not "
                       "applied (the car was loaded where the simulator is)"]
    assert "get_scene_names" not in [m["msg_type"] for m in fake.peers[0].received]


def test_without_a_scene_the_first_one_is_loaded_and_said(scenes):
    reports: list[str] = []
    with serving(scenes) as server:
        client = connect(server.port, report=reports.append)
        client.close()
    assert client.scene == "diyrobocars"
    assert reports == ["no --scene given: loading 'diyrobocars' (this simulator has "
                       "diyrobocars, oval)"]


@pytest.mark.parametrize("spec, address", [
    ("donkey://host", ("host", 9091)),
    ("donkey://host:9091", ("host", 9091)),
    ("donkey://10.0.0.2:9092/", ("10.0.0.2", 9092)),
    ("donkey://[::1]:9091", ("::1", 9091)),
    ("donkey://[::1]", ("::1", 9091)),
])
def test_parse_address(spec, address):
    assert is_donkey_address(spec) and parse_address(spec) == address


@pytest.mark.parametrize("spec", ["donkey://host:99999", "donkey://", "donkey://host:abc",
                                  "donkey://host:0", "donkey://host:", "donkey://::1:9091",
                                  "donkey://host:9091/x"])
def test_parse_address_refuses(spec):
    with pytest.raises(CarError, match=re.escape("write donkey://HOST:PORT, for example "
                                                 "donkey://127.0.0.1:9091")):
        parse_address(spec)
    assert not is_donkey_address("oval") and not is_donkey_address(None)


@pytest.mark.parametrize("argv, message", [
    (["drive", "--model", str(FIXTURE), "--scene", "oval"],
     "--scene picks a scene of a donkey simulator: add --sim donkey://HOST:PORT"),
    (["drive", "--model", str(FIXTURE), "--sim", "oval", "--scene", "oval"],
     "--scene picks a scene of a donkey simulator"),
    (["record", "--out", "unused", "--sim", "--scene", "oval"],
     "--scene picks a scene of a donkey simulator"),
    (["sim", "eval", "--model", str(FIXTURE), "--scene", "oval"],
     "--scene is for a donkey simulator: add --sim donkey://HOST:PORT"),
    (["sim", "eval", "--model", str(FIXTURE), "--lockstep"], "--lockstep is for a donkey"),
    (["sim", "eval", "--expert", "--sim", "donkey://127.0.0.1:1"],
     "--expert cannot be used with --sim: the expert drives the embedded simulator only"),
    (["sim", "eval", "--model", str(FIXTURE), "--vs-expert", "--sim", "donkey://127.0.0.1:1"],
     "--vs-expert cannot be used with --sim"),
    (["sim", "eval", "--model", str(FIXTURE), "--plot", "map.png", "--sim",
      "donkey://127.0.0.1:1"], "--plot cannot be used with --sim"),
    (["sim", "eval", "--model", str(FIXTURE), "--latency-ms", "2", "--sim",
      "donkey://127.0.0.1:1"], "--latency-ms cannot be used with --sim"),
    (["sim", "eval", "--model", str(FIXTURE), "--sim", "notdonkey"],
     "--sim notdonkey: car sim eval takes donkey://HOST:PORT here"),
    (["sim", "eval", "--model", str(FIXTURE), "--sim", "donkey://host:abc"],
     "--sim donkey://host:abc: write donkey://HOST:PORT"),
    (["drive", "--model", str(FIXTURE), "--sim", "donkey://host:99999"],
     "--sim donkey://host:99999: write donkey://HOST:PORT"),
])
def test_cli_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    assert message in one_line_error(capsys)


# -- 5. reconnecting ---------------------------------------------------------------------------

def test_the_client_reconnects_when_the_simulator_comes_back(scenes):
    port = free_port()
    reports: list[str] = []
    with serving(scenes, port=port) as first:
        client = connect(port, scene="oval", reconnect_s=30.0, report=reports.append)
        link = DonkeyLink(client, 0.05)
    try:
        assert first.served == 1
        assert wait_for(lambda: client.fault is not None)  # the server stopped
        assert link.actuator.fault == client.fault
        assert "link lost: the simulator closed the connection" in client.fault
        stale = link.camera.read()
        assert link.camera.read().seq == stale.seq  # no new frames meanwhile
        link.actuator.send(Command(0.0, 0.5))  # dropped, not raised, while reconnecting
        with serving(scenes, port=port) as second:
            assert wait_for(lambda: client.fault is None, timeout_s=15)
            assert wait_for(lambda: client.frame.seq > stale.seq + 3)
            assert link.camera.read().seq > stale.seq
            assert second.served == 1 and client.scene == "oval"
            assert client.failed is None
            assert (client.counts.losses, client.counts.reconnects) == (1, 1)
    finally:
        link.close()
    assert any("reconnected" in r for r in reports)


def test_a_simulator_that_stays_away_fails_the_camera_and_stops_the_loop(scenes):
    port = free_port()
    server = DonkeyServer(scenes, Config().sim, ServeOptions(), port=port).start()
    client = connect(port, scene="oval", reconnect_s=1.5, answer_timeout_s=10.0,
                     report=lambda line: None)
    link = DonkeyLink(client, 0.05)
    loop = DriveLoop(link.camera, link.actuator, ScriptedController(Mode.USER),
                     Arbiter(Config().drive, 20.0))
    deadline = time.monotonic() + 20.0

    def on_tick(result) -> bool:
        if loop.ticks == 5:
            server.stop()
        return False

    try:
        reason = loop.run(Ratekeeper(20.0), on_tick=on_tick,
                          should_stop=lambda: time.monotonic() > deadline)
        assert reason.startswith("device failed: the donkey simulator at "
                                 f"donkey://127.0.0.1:{port} is gone"), reason
        assert "reconnecting for 1.5 s failed (nothing answers" in reason
        assert client.failed is not None and loop.ticks > 5
        with pytest.raises(CameraError, match="is gone"):
            link.camera.read()
    finally:
        server.stop()
        link.close()


# -- 6. lap counting ---------------------------------------------------------------------------

def crossing(stamp: float) -> dict:
    return {"msg_type": "collision_with_starting_line", "starting_line_index": 0,
            "timeStamp": stamp}


def cross_start(lap: str) -> dict:
    return {"msg_type": "cross_start", "lap_time": lap}


@pytest.mark.parametrize("events, laps", [
    ([crossing(1.0), crossing(11.5), crossing(20.25)], [10.5, 8.75]),
    ([cross_start("0"), cross_start("12.5"), cross_start("11,75")], [12.5, 11.75]),
    ([crossing(2.0), crossing(12.0), cross_start("10.000"), crossing(21.5),
      cross_start("9.500")], [10.0, 9.5]),  # as `car sim serve` sends: counted once
    ([crossing(3.0), crossing(3.0), {"msg_type": "race_start"}, crossing(13.0)], [10.0]),
], ids=["starting-line", "cross_start-only", "both", "same-stamp"])
def test_laps_are_counted_from_the_lap_messages(events, laps):
    def script(peer: Peer) -> None:
        peer.handshake()
        for event in events:
            peer.send(event)
        peer.send(telemetry(cte=0.7))  # after the events: the test waits for this one
        peer.hold()

    with FakeSim(script) as fake:
        client = connect(fake.port)
        try:
            assert wait_for(lambda: client.frame.seq == 1)
            link = DonkeyLink(client, 0.05)
            status = link.status
        finally:
            client.close()
    assert client.laps == len(laps) == status.lap
    assert client.lap_times_s == pytest.approx(laps)
    assert list(status.lap_times_s) == client.lap_times_s


def drop_after_car_loaded(peer: Peer) -> None:
    """A simulator that crashes while loading the scene: it resets the connection right
    after car_loaded, as the client sends its configs."""
    peer.send({"msg_type": "scene_selection_ready", "loaded": "1"})
    peer.expect("get_scene_names")
    peer.send({"scene_names": ["oval"], "msg_type": "scene_names"})
    peer.expect("load_scene")
    peer.send({"msg_type": "car_loaded"})
    peer.reset()


def test_a_simulator_that_drops_the_connection_during_the_handshake():
    with FakeSim(drop_after_car_loaded) as fake, \
            pytest.raises(CarError, match="dropped the connection during the handshake"):
        connect(fake.port)


def test_a_reconnect_to_a_simulator_that_drops_during_the_handshake_ends_failed():
    """The reader thread must survive a reconnect attempt that fails while it sends."""
    port = free_port()
    leave = threading.Event()

    def script(peer: Peer) -> None:
        if fake.connections == 1:
            peer.handshake()
            leave.wait(10)  # then close: the client reconnects
        else:
            drop_after_car_loaded(peer)

    with FakeSim(script, port=port) as fake:
        client = connect(port, reconnect_s=1.5, report=lambda line: None)
        try:
            leave.set()
            assert wait_for(lambda: client.failed is not None, timeout_s=10)
            assert fake.connections >= 2
            assert "reconnecting for 1.5 s failed" in client.failed
            assert "dropped the connection during the handshake" in client.failed
        finally:
            client.close()
