"""The half-open attack on a whole `car record` run (loopback only, bounded): 1,100 idle
connections that never finish their headers, under an open-file limit of 256, while the
driver's page connects and drives. Recording goes on (every tick kept), the driver keeps
control, the run ends with its summary, and no traceback is printed."""

from __future__ import annotations

import asyncio
import json
import re
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp

from car.tub.reader import Tub

TOKEN = "attack-test-token-0123456789"
ATTACKER = "127.0.0.2"
ATTACK_CONNECTIONS = 1100
FD_LIMIT = 256


def limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


class HalfOpen(threading.Thread):
    """Opens connections from ATTACKER that send half a request line and wait, as fast as
    it can, up to ``count``; holds them until ``stop``."""

    def __init__(self, port: int, count: int):
        super().__init__(daemon=True)
        self.port, self.count = port, count
        self.sockets: list[socket.socket] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while len(self.sockets) < self.count and not self.stop.is_set():
            s = socket.socket()
            s.bind((ATTACKER, 0))
            try:
                s.connect(("127.0.0.1", self.port))
                s.sendall(b"GET / HTTP/1.1\r\nHost: car\r\n")
            except OSError:  # the server reset it already: open the next
                pass
            self.sockets.append(s)
        self.stop.wait(30)
        for s in self.sockets:
            s.close()


async def drive_page(port: int) -> dict:
    """The driver: load the page, connect, centre, then drive at 0.4 for 2 s."""
    base = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as session:
        page = await session.get(f"{base}/?token={TOKEN}")
        assert page.status == 200
        ws = await session.ws_connect(f"{base}/ws?token={TOKEN}&client=driver-aaaa")
        connect_s = time.monotonic() - t0
        hello = None
        while hello is None:
            msg = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
            hello = msg if msg["type"] == "hello" else None
        for n in range(50):
            await ws.send_str(json.dumps({"type": "control", "steering": 0.0,
                                          "throttle": 0.0 if n == 0 else 0.4}))
            await asyncio.sleep(0.04)
        await ws.close()
    return {"connect_s": connect_s, "owner": hello["owner"]}


def test_half_open_connections_leave_recording_the_driver_and_the_summary(
        tmp_path: Path) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(4096, resource.getrlimit(
        resource.RLIMIT_NOFILE)[0]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    tub = tmp_path / "tub"
    cmd = [sys.executable, "-m", "car.cli", "record", "--sim", "oval", "--out", str(tub),
           "--duration", "9", "--json", "--controller", "web", "--set", "web.port=0",
           "--set", f"web.token={TOKEN}", "--set", "web.host=127.0.0.1",
           "--set", "record.auto_record_throttle=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limit_fds)
    err_lines: list[str] = []
    port = None
    assert proc.stderr is not None
    for line in proc.stderr:
        err_lines.append(line)
        found = re.search(r"open http://127\.0\.0\.1:(\d+)/", line)
        if found:
            port = int(found.group(1))
            break
    assert port, "".join(err_lines)
    reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
    reader.start()
    attack = HalfOpen(port, ATTACK_CONNECTIONS)
    attack.start()
    try:
        while len(attack.sockets) < ATTACK_CONNECTIONS // 2:  # the driver comes mid-attack
            time.sleep(0.05)
        driver = asyncio.run(drive_page(port))
        out, _ = proc.communicate(timeout=60)
    finally:
        attack.stop.set()
        proc.kill()
    reader.join(5)
    stderr = "".join(err_lines)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "Too many open files" not in stderr, stderr
    summary = json.loads(out)
    assert driver["owner"] is True
    assert summary["record"]["written"] == summary["ticks"] > 100  # every tick kept
    assert summary["record"]["dropped"] == 0 and summary["safety"]["record_errors"] == 0
    web = summary["web"]
    assert web["pending_closed"] + web["header_timeouts"] >= ATTACK_CONNECTIONS // 2
    assert web["connections"] == 1
    records = list(Tub(tub).records())
    assert len(records) == summary["ticks"]
    assert max(r["user/throttle"] for r in records) > 0.3  # the driver drove
