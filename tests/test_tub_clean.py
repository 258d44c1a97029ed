"""`car tub clean`'s server over real HTTP: the token, frames, delete / restore / undo as
`car tub delete` makes them, refused tubs and ranges, and the command itself (the port from
the config, Ctrl-C)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from car.cli import main
from car.config import WebConfig
from car.errors import TubError
from car.tub import Tub, TubWriter
from car.tubclean import CleanServer, CleanSession
from tests.conftest import (
    DRIVE_INPUTS,
    DRIVE_TYPES,
    ROOT,
    drive_record,
    writer_in_another_process,
)

TOKEN = "clean-token-0123456789"
FIXTURES = Path(__file__).parent / "fixtures"


def small_tub(path: Path, count: int = 30) -> Path:
    with TubWriter(path, DRIVE_INPUTS, DRIVE_TYPES) as writer:
        for i in range(count):
            writer.write(drive_record(i))
    return path


class Client:
    """Requests to a running CleanServer: (status, body) whatever the status."""

    def __init__(self, server: CleanServer):
        self.base = f"http://127.0.0.1:{server.port}"

    def get(self, path: str, token: str = TOKEN) -> tuple[int, bytes]:
        return self._send(urllib.request.Request(f"{self.base}{path}?token={token}"))

    def post(self, path: str, body: Any = None, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        data = raw if raw is not None else json.dumps(body or {}).encode()
        request = urllib.request.Request(f"{self.base}{path}?token={TOKEN}", data=data,
                                         method="POST", headers=headers or {})
        status, reply = self._send(request)
        return status, json.loads(reply)

    def _send(self, request: urllib.request.Request) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


@pytest.fixture
def tub(tmp_path: Path) -> Path:
    return small_tub(tmp_path / "tub")


def serve(path: Path, pilot: dict[str, Any] | None = None) -> CleanServer:
    server = CleanServer(CleanSession(path), WebConfig(host="127.0.0.1", port=0, token=TOKEN),
                         pilot)
    server.start()
    return server


@pytest.fixture
def client(tub: Path) -> Iterator[Client]:
    server = serve(tub)
    yield Client(server)
    server.close()


def test_the_token_is_required(client: Client) -> None:
    status, body = client.get("/", token="wrong")
    assert status == 403 and b"wrong or missing token" in body
    status, body = client.get("/api/tub", token="")
    assert status == 403
    status, body = client.get("/")
    assert status == 200 and b"tub clean" in body and TOKEN.encode() in body
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}")[0] == 200
    assert client.get("/static/secret.py")[0] == 404


def test_too_many_wrong_tokens_are_limited(client: Client) -> None:
    for _ in range(10):
        assert client.get("/", token="nope")[0] == 403
    assert client.get("/")[0] == 429  # even with the right token, for a while


def test_the_tub_and_its_frames(client: Client, tub: Path) -> None:
    status, body = client.get("/api/tub")
    data = json.loads(body)
    assert status == 200 and data["count"] == 30 and data["indexes"] == list(range(30))
    assert data["steering"][:3] == [-1.0, -0.9, -0.8] and data["throttle"][0] == 0.3
    assert data["deleted"] == [0] * 30 and data["live"] == 30 and data["undo"] == 0
    assert data["pilot"] is None
    reader = Tub(tub)
    status, jpeg = client.get("/frame/7")
    assert status == 200 and jpeg == reader.image_path(reader.record(7)).read_bytes()
    status, body = client.get("/frame/30")
    assert status == 404 and b"no record with index 30" in body
    assert client.get("/frame/-1")[0] == 404
    assert client.get("/frame/" + "9" * 5000)[0] == 404  # not a 500 from int()


def test_delete_is_car_tub_delete(client: Client, tub: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    twin = small_tub(tmp_path / "twin")
    assert main(["tub", "delete", str(twin), "5:9", "20:22"]) == 0
    capsys.readouterr()
    for start, end in ((5, 9), (20, 22)):
        status, reply = client.post("/api/delete", {"start": start, "end": end})
        assert status == 200, reply
    assert reply["message"] == "deleted 2 record(s) (20..21)"
    ours, theirs = Tub(tub), Tub(twin)
    assert ours.deleted_indexes == theirs.deleted_indexes == {5, 6, 7, 8, 20, 21}
    assert [r["_index"] for r in ours.records()] == [r["_index"] for r in theirs.records()]
    assert len(ours) == 24 and reply["live"] == 24 and reply["undo"] == 2
    assert reply["deleted"] == [1 if i in {5, 6, 7, 8, 20, 21} else 0 for i in range(30)]
    manifest = json.loads((tub / "manifest.json").read_text().splitlines()[4])
    assert sorted(manifest["deleted_indexes"]) == [5, 6, 7, 8, 20, 21]  # donkeycar's field


def test_restore_and_undo(client: Client, tub: Path) -> None:
    client.post("/api/delete", {"start": 5, "end": 15})
    status, reply = client.post("/api/restore", {"start": 8, "end": 10})
    assert status == 200 and reply["message"] == "restored 2 record(s) (8..9)"
    assert Tub(tub).deleted_indexes == {5, 6, 7, 10, 11, 12, 13, 14}
    status, reply = client.post("/api/restore", {"start": 8, "end": 10})
    assert status == 200 and reply["message"].startswith("nothing changed") \
        and reply["undo"] == 2  # a no-op is not an edit to undo
    status, reply = client.post("/api/undo")
    assert status == 200 and reply["message"] == "undid: restored 2 record(s) (8..9)"
    assert Tub(tub).deleted_indexes == set(range(5, 15))
    client.post("/api/undo")
    assert Tub(tub).deleted_indexes == set() and len(Tub(tub)) == 30
    status, reply = client.post("/api/undo")
    assert status == 400 and reply["error"] == "nothing to undo"


def test_undo_reverts_only_what_the_edit_changed(client: Client, tub: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tub", "delete", str(tub), "3:5"]) == 0  # before the page's edit
    capsys.readouterr()
    client.post("/api/delete", {"start": 0, "end": 10})
    client.post("/api/undo")
    assert Tub(tub).deleted_indexes == {3, 4}


@pytest.mark.parametrize(("body", "error"), [
    ({"start": 10, "end": 5}, "range 10:5: need 0 <= start < end"),
    ({"start": -1, "end": 5}, "range -1:5: need 0 <= start < end"),
    ({"start": "1", "end": 5}, "start '1' is not a whole number"),
    ({"start": 1.5, "end": 5}, "start 1.5 is not a whole number"),
    ({"start": True, "end": 5}, "start True is not a whole number"),
    ({"end": 5}, "start None is not a whole number"),
    ({"start": 100, "end": 200}, "no records in 100:200: this tub's indexes are 0..29"),
    ([1, 2], "send a JSON object"),
])
def test_bad_ranges_are_refused(client: Client, tub: Path, body: Any, error: str) -> None:
    status, reply = client.post("/api/delete", body)
    assert status == 400 and reply["error"].startswith(error), reply
    assert Tub(tub).deleted_indexes == set() and reply["undo"] == 0


def test_malformed_bodies_are_refused(client: Client) -> None:
    status, reply = client.post("/api/delete", raw=b"start=1&end=2")
    assert status == 400 and "send JSON like" in reply["error"]
    status, reply = client.post("/api/delete", raw=b"[" * 10000)
    assert status == 413 and "at most 4096 bytes" in reply["error"]


def test_an_edit_from_another_site_is_refused(client: Client, tub: Path) -> None:
    status, reply = client.post("/api/delete", {"start": 0, "end": 5},
                                headers={"Origin": "http://evil.example"})
    assert status == 403 and "cross-origin" in reply["error"]
    assert Tub(tub).deleted_indexes == set()


def test_a_tub_being_recorded_is_refused(tub: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    with writer_in_another_process(tub) as pid:
        with pytest.raises(TubError, match=f"being recorded by pid {pid}; stop the recorder"):
            CleanSession(tub)
        assert main(["tub", "clean", str(tub), "--port", "0"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"being recorded by pid {pid}" in err


def test_an_edit_while_a_recorder_holds_the_tub_is_refused(client: Client, tub: Path) -> None:
    with writer_in_another_process(tub) as pid:
        status, reply = client.post("/api/delete", {"start": 0, "end": 5})
    assert status == 409 and f"another process (pid {pid}) is writing it" in reply["error"]
    assert reply["undo"] == 0 and Tub(tub).deleted_indexes == set()
    assert client.post("/api/delete", {"start": 0, "end": 5})[0] == 200  # once it is gone


def test_the_pilot_series(tmp_path: Path) -> None:
    from car.config import DriveConfig
    from car.tubclean.predictions import pilot_series

    path = small_tub(tmp_path / "tub", 12)
    session = CleanSession(path)
    pilot = pilot_series(FIXTURES / "pilot_linear.onnx", session, DriveConfig())
    assert pilot["name"] == "pilot_linear.onnx" and pilot["skipped"] == 0
    assert len(pilot["steering"]) == len(pilot["throttle"]) == 12
    assert all(isinstance(v, float) and -1 <= v <= 1 for v in pilot["steering"])
    server = serve(path, pilot)
    try:
        data = json.loads(Client(server).get("/api/tub")[1])
    finally:
        server.close()
    assert data["pilot"]["steering"] == pilot["steering"]


def test_the_help_names_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["tub", "clean", "--help"])
    out = capsys.readouterr().out
    for option in ("--model", "--port", "--host", "--steering-key", "--throttle-key",
                   "--config", "--set"):
        assert option in out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_command_serves_on_the_configured_port_until_ctrl_c(tub: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "car.cli", "tub", "clean", str(tub), "--set",
         f"web.port={port}", "--set", "web.host=127.0.0.1", "--set", f"web.token={TOKEN}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2)]
        assert lines[0].startswith(f"cleaning {tub}: 30 records, 0 deleted")
        assert lines[1].strip() == f"open http://127.0.0.1:{port}/?token={TOKEN}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/tub?token={TOKEN}",
                                    timeout=10) as response:
            assert json.loads(response.read())["count"] == 30
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "stopped after 0 edit(s); 30 live records, 0 deleted" in out
    assert "Traceback" not in err
