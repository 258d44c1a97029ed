"""The web page's video: what it costs the loop and the phone's Wi-Fi.

    python benchmarks/bench_web.py [--frames 200]

Rows: ``publish()`` on the loop's thread (it only hands the frame over) with one browser
connected; JPEG encoding of a simulator frame on the server's thread, and the bytes per
frame and per second at the loop rate. Baseline, same run: the raw RGB frame's size, and a
bare ``cv2.imencode`` of the same frame.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import cv2  # noqa: E402

from car.config import Config, WebConfig  # noqa: E402
from car.controllers.web import WebController  # noqa: E402
from car.frames import Frame  # noqa: E402
from car.sim.tracks import load_track  # noqa: E402
from car.sim.world import Simulator  # noqa: E402


def sim_frames(n: int) -> list:
    sim = Simulator(load_track("diyrobocars", 0.39), Config().sim)
    frames = []
    for _ in range(n):
        sim.command(0.0, 0.4)
        sim.run_until(sim.time_s + 0.05)
        frames.append(sim.render())
    return frames


def client(url: str, received: list[int], stop: threading.Event) -> None:
    async def run() -> None:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(url.replace("http", "ws").replace("/?", "/ws?")) as ws:
            while not stop.is_set():
                try:
                    msg = await asyncio.wait_for(ws.receive(), 0.2)
                except asyncio.TimeoutError:
                    continue
                if msg.type == aiohttp.WSMsgType.BINARY:
                    received.append(len(msg.data))
                await ws.send_json({"type": "control", "steering": 0.0, "throttle": 0.0})

    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200)
    args = parser.parse_args()
    frames = sim_frames(args.frames)
    quality = WebConfig().jpeg_quality
    encode = []
    for image in frames:
        start = time.perf_counter()
        cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                     [cv2.IMWRITE_JPEG_QUALITY, quality])
        encode.append((time.perf_counter() - start) * 1000)
    web = WebController(WebConfig(host="127.0.0.1", port=0))
    url = web.start()
    received: list[int] = []
    stop = threading.Event()
    thread = threading.Thread(target=client, args=(url, received, stop), daemon=True)
    thread.start()
    time.sleep(1.0)
    publish = []
    for i, image in enumerate(frames):
        start = time.perf_counter()
        web.publish(Frame(image, time.monotonic(), i), {"hz": 20.0})
        publish.append((time.perf_counter() - start) * 1000)
        time.sleep(0.05)
    time.sleep(0.5)
    stop.set()
    thread.join(timeout=5)
    web.close()
    raw = frames[0].nbytes
    size = statistics.median(received) if received else float("nan")
    print("| path | p50 | note |\n|---|---|---|")
    print(f"| baseline: raw RGB frame 160x120 | {raw / 1024:.1f} KiB | {raw * 20 / 1024:.0f} "
          "KiB/s at 20 Hz |")
    print(f"| baseline: cv2.imencode q{quality} | {statistics.median(encode):.3f} ms | |")
    print(f"| publish() on the loop thread | {statistics.median(publish):.3f} ms | p99 "
          f"{sorted(publish)[int(0.99 * len(publish))]:.3f} ms |")
    print(f"| JPEG sent to the page | {size / 1024:.1f} KiB | {size * 20 / 1024:.0f} KiB/s at "
          f"20 Hz; {len(received)}/{len(frames)} frames received |")


if __name__ == "__main__":
    main()
