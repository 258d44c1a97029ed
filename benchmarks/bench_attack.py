"""The drive loop and the page under web attacks, loopback only and bounded.

    python benchmarks/bench_attack.py [--seconds 8] [--hz 20]

Each row is one `car record --sim oval --controller web` run in its own process, under an
open-file limit of 1024 (as a Jetson's default shell), while an attacker in this process
hits the page from 127.0.0.2. The driver's page (127.0.0.1) connects first and drives for
3 s while the attack runs; 1 s into the attack another browser opens the page. The
baseline row is the same run with no attack. Columns: the loop's rate and tick p99,
overruns, the browser's connect time during the attack (page load + WebSocket hello),
whether the driver kept control throughout, records lost (ticks not recorded: must be 0;
every tick is kept), tracebacks printed, and what the server counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import re
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

TOKEN = "bench-attack-token-0123456789"
ATTACKER = "127.0.0.2"
FD_LIMIT = 1024
Attack = Callable[[int, threading.Event], None]


def half_open(port: int, stop: threading.Event, count: int = 1100) -> None:
    """Connections that send half a request line and then nothing, held open."""
    held = []
    while len(held) < count and not stop.is_set():
        s = socket.socket()
        s.bind((ATTACKER, 0))
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: car\r\n")
        except OSError:
            pass
        held.append(s)
    stop.wait()
    for s in held:
        s.close()


def token_guessing(port: int, stop: threading.Event) -> None:
    """Requests with wrong tokens, one after the other, as fast as they are answered."""
    n = 0
    while not stop.is_set():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2,
                                          source_address=(ATTACKER, 0))
        try:
            conn.request("GET", f"/?token=guess{n}")
            conn.getresponse().read()
        except OSError:
            pass
        finally:
            conn.close()
        n += 1


def _ws_handshake(port: int, origin: str | None = None) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=2,
                                 source_address=(ATTACKER, 0))
    extra = f"Origin: {origin}\r\n" if origin else ""
    s.sendall((f"GET /ws?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}"
               "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
               "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    s.recv(4096)
    return s


def _frame(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = b"\x01\x02\x03\x04"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


def message_flood(port: int, stop: threading.Event) -> None:
    """A viewer with the token sending control messages as fast as it can (it is closed
    after 200 in a second), reconnecting each time."""
    msg = _frame(b'{"type":"control","steering":1,"throttle":1}')
    while not stop.is_set():
        try:
            s = _ws_handshake(port)
            for _ in range(400):
                s.sendall(msg)
            s.close()
        except OSError:
            pass
        stop.wait(0.05)


def ping_flood_reset(port: int, stop: threading.Event) -> None:
    """Thousands of pings, then a reset (SO_LINGER 0) while the pongs go out."""
    while not stop.is_set():
        try:
            s = _ws_handshake(port)
            s.sendall(_frame(b"ping", 0x9) * 2000)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        except OSError:
            pass
        stop.wait(0.05)


def cross_origin(port: int, stop: threading.Event) -> None:
    """WebSocket handshakes from another site's page (with the token)."""
    while not stop.is_set():
        with contextlib.suppress(OSError):
            _ws_handshake(port, origin="http://evil.example").close()


ATTACKS: dict[str, Attack | None] = {
    "none (baseline)": None, "half-open x1100": half_open, "token guessing": token_guessing,
    "message flood": message_flood, "ping flood + reset": ping_flood_reset,
    "cross-origin sockets": cross_origin}


async def connect_time(session: aiohttp.ClientSession, base: str) -> float:
    """A browser opening the page: page load + WebSocket hello, in seconds."""
    t0 = time.perf_counter()
    assert (await session.get(f"{base}/?token={TOKEN}")).status == 200
    async with session.ws_connect(f"{base}/ws?token={TOKEN}") as ws:
        while json.loads((await ws.receive()).data)["type"] != "hello":
            pass
        return time.perf_counter() - t0


async def driver(port: int, attack_on: threading.Event) -> tuple[float, bool]:
    """The driver's page connects first and drives at 0.3 for 3 s while the attack runs;
    1 s into the attack another browser connects. Returns that browser's connect time and
    whether the driver owned control in every status it got."""
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        ws = await session.ws_connect(f"{base}/ws?token={TOKEN}&client=driver-aaaa")
        owned = []

        async def read() -> None:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    if data["type"] in ("hello", "status"):
                        owned.append(bool(data["owner"]))

        reader = asyncio.get_running_loop().create_task(read())
        attack_on.set()
        connect_s = None
        for n in range(75):
            await ws.send_str(json.dumps({"type": "control", "steering": 0.0,
                                          "throttle": 0.0 if n == 0 else 0.3}))
            await asyncio.sleep(0.04)
            if n == 25:
                connect_s = await connect_time(session, base)
        await ws.close()
        reader.cancel()
    assert connect_s is not None
    return connect_s, bool(owned) and all(owned)


def limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def one_run(attack: Attack | None, seconds: float, hz: float, tub: Path) -> dict:
    cmd = [sys.executable, "-m", "car.cli", "record", "--sim", "oval", "--out", str(tub),
           "--duration", str(seconds), "--hz", str(hz), "--json", "--controller", "web",
           "--set", "web.port=0", "--set", f"web.token={TOKEN}",
           "--set", "web.host=127.0.0.1", "--set", "record.auto_record_throttle=0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=limit_fds)
    assert proc.stderr is not None
    port, lines = None, []
    for line in proc.stderr:
        lines.append(line)
        found = re.search(r"open http://127\.0\.0\.1:(\d+)/", line)
        if found:
            port = int(found.group(1))
            break
    if port is None:
        raise SystemExit("".join(lines))
    rest = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    rest.start()
    stop, attack_on = threading.Event(), threading.Event()

    def attacker() -> None:
        attack_on.wait()
        if attack is not None:
            attack(port, stop)

    threading.Thread(target=attacker, daemon=True).start()
    connect_s, owner = asyncio.run(driver(port, attack_on))
    out, _ = proc.communicate(timeout=seconds + 60)
    stop.set()
    rest.join(5)
    stderr = "".join(lines)
    if proc.returncode != 0 or not out.strip():
        return {"failed": f"exit {proc.returncode}: {stderr.strip()[-300:]}"}
    summary = json.loads(out)
    return {"summary": summary, "connect_s": connect_s, "owner": owner,
            "tracebacks": stderr.count("Traceback")}


def failsafe_trial(period_s: float, horizon_s: float, stop_after: float) -> float:
    """One trial in this process: a page sends controls every 40 ms and stops; a loop thread
    polls at 1/period_s. Returns how long after the last control arrived the last live
    command stayed in force (until the next poll replaced it), in ms."""
    from car.config import WebConfig
    from car.controllers.web import WebController

    web = WebController(WebConfig(host="127.0.0.1", port=0, token=TOKEN), start_mode=None)
    web._state.horizon_s = horizon_s
    web.start()
    polls: list[tuple[float, float]] = []
    done = threading.Event()

    def loop() -> None:
        next_s = time.monotonic()
        while not done.is_set():
            polls.append((time.monotonic(), web.poll(0.0).throttle))
            next_s += period_s
            time.sleep(max(0.0, next_s - time.monotonic()))

    async def page() -> None:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"http://127.0.0.1:{web.port}/ws?token={TOKEN}") as ws:
            t0 = time.monotonic()
            n = 0
            while time.monotonic() - t0 < stop_after:
                await ws.send_str(json.dumps({"type": "control", "steering": 0.0,
                                              "throttle": 0.0 if n == 0 else 0.3}))
                n += 1
                await asyncio.sleep(0.04)
            await asyncio.sleep(0.6)
            last.append(web._state._last_s)  # before the close resets it

    last: list[float | None] = []
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    asyncio.run(page())
    done.set()
    thread.join()
    last_control = last[0]
    web.close()
    assert last_control is not None
    live = [i for i, (_, throttle) in enumerate(polls) if throttle != 0.0]
    ends = polls[live[-1] + 1][0]  # the next poll replaced the last live command
    return 1000.0 * (ends - last_control)


def failsafe_table(period_s: float, trials: int = 12) -> None:
    print(f"\nweb failsafe (web.failsafe_ms 250, loop {1 / period_s:g} Hz, {trials} trials, "
          "the page stops at a random phase): time from the last control's arrival to the "
          "end of the last live command\n")
    print("| rule | min ms | max ms |")
    print("|---|---|---|")
    for name, horizon in (("checked at the poll (before)", 0.0),
                          ("counts the tick the command lasts (now)", period_s)):
        got = [failsafe_trial(period_s, horizon, 0.6 + 0.0037 * k) for k in range(trials)]
        print(f"| {name} | {min(got):.0f} | {max(got):.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--hz", type=float, default=20.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    print(f"loopback; car under ulimit -n {FD_LIMIT}; {args.hz:g} Hz, {args.seconds:g} s "
          "per run\n")
    print("| attack | loop Hz | tick p99 ms | overruns | browser connect ms | driver kept "
          "control | records lost | tracebacks | server counted |")
    print("|---|---|---|---|---|---|---|---|---|")
    with TemporaryDirectory() as tmp:
        for i, (name, attack) in enumerate(ATTACKS.items()):
            r = one_run(attack, args.seconds, args.hz, Path(tmp) / f"tub{i}")
            if "failed" in r:
                print(f"| {name} | FAILED: {r['failed']} |||||||")
                continue
            s = r["summary"]
            web = s.get("web", {})
            counted = ", ".join(f"{k} {v}" for k, v in web.items() if v and k in (
                "refused", "token_limited", "cross_origin", "pending_closed",
                "header_timeouts", "rate_limited", "over_budget", "loop_errors"))
            lost = s["ticks"] - s["record"]["written"]
            print(f"| {name} | {s['hz']:.2f} | {s['latency_ms']['tick']['p99']:.2f} | "
                  f"{s['overruns']} | {1000 * r['connect_s']:.0f} | {r['owner']} | {lost} | "
                  f"{r['tracebacks']} | {counted or '-'} |", flush=True)
    failsafe_table(1.0 / args.hz)


if __name__ == "__main__":
    main()
