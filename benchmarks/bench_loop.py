"""Drive-loop overhead and rate, with the simulator's camera in real time.

    python benchmarks/bench_loop.py [--seconds 20]

Rows:

- ``linear @ 60 Hz``: the loop's overhead per tick (everything from the start of the tick
  to the command, minus inference: capture with physics and rendering, preprocessing,
  mode/safety, actuation), and the overrun rate;
- baseline, same run: the same capture + preprocess + actuate calls back to back with no
  loop around them, i.e. the floor the overhead cannot go below; ``loop machinery`` is
  the difference;
- ``resnet18 @ 30 Hz``: whether a ResNet-18 (untrained, same cost) holds 30 Hz on this
  machine's CPU cores with ONNX Runtime.

Targets (issue 5): overhead p99 <= 1 ms; < 0.5% overruns at 60 Hz with linear; ResNet-18
holding 30 Hz on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from car.config import Config  # noqa: E402
from car.controllers import ScriptedController  # noqa: E402
from car.frames import Mode  # noqa: E402
from car.latency import LatencyHistogram  # noqa: E402
from car.loop import DriveLoop, Ratekeeper  # noqa: E402
from car.modes import Arbiter  # noqa: E402
from car.sim.link import SimLink  # noqa: E402
from car.sim.tracks import load_track  # noqa: E402
from car.sim.world import Simulator  # noqa: E402
from deploy.engine import load_engine  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "pilot_linear.onnx"


def drive(model: Path, hz: float, seconds: float) -> dict:
    config = Config()
    sim = Simulator(load_track("diyrobocars", 0.39), config.sim)
    link = SimLink(sim, 1.0 / hz, lockstep=False)
    engine = load_engine(model)
    loop = DriveLoop(link.camera, link.actuator, ScriptedController(Mode.LOCAL),
                     Arbiter(config.drive, hz, Mode.LOCAL), engine, clock=link.clock)
    keeper = Ratekeeper(hz)
    end = time.monotonic() + seconds
    loop.run(keeper, should_stop=lambda: time.monotonic() >= end)
    return loop.summary(keeper, seconds)


def floor(model: Path, count: int) -> LatencyHistogram:
    """capture + preprocess + actuate, back to back, without the loop."""
    config = Config()
    sim = Simulator(load_track("diyrobocars", 0.39), config.sim)
    link = SimLink(sim, 1.0 / 60, lockstep=False)
    engine = load_engine(model)
    hist = LatencyHistogram()
    from car.frames import Command

    for _ in range(count):
        t0 = time.perf_counter()
        frame = link.camera.read()
        engine.preprocess(frame.image)
        link.actuator.send(Command(0.0, 0.3))
        hist.add(time.perf_counter() - t0)
        time.sleep(1 / 60)
    return hist


def resnet18(folder: Path) -> Path:
    from training.export import export_untrained

    return export_untrained("resnet18", folder / "resnet18")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(f"CPU cores: {os.cpu_count()}; {args.seconds:g} s per row\n")
    print(f"{'ROW':<30}{'p50 ms':>9}{'p99 ms':>9}{'Hz':>8}{'overruns':>10}")
    s = drive(FIXTURE, 60.0, args.seconds)
    lat = s["latency_ms"]
    base = floor(FIXTURE, int(args.seconds * 30)).summary()
    over = lat["overhead"]
    print(f"{'linear @ 60 Hz: overhead':<30}{over['p50']:>9.3f}{over['p99']:>9.3f}"
          f"{s['hz']:>8.1f}{s['overrun_pct']:>9.2f}%")
    for stage in ("capture", "preprocess", "decide", "actuate", "infer", "frame_to_command"):
        print(f"{'  ' + stage:<30}{lat[stage]['p50']:>9.3f}{lat[stage]['p99']:>9.3f}")
    print(f"{'baseline: same calls, no loop':<30}{base['p50']:>9.3f}{base['p99']:>9.3f}")
    print(f"{'loop machinery (difference)':<30}{over['p50'] - base['p50']:>9.3f}"
          f"{over['p99'] - base['p99']:>9.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        r = drive(resnet18(Path(tmp)), 30.0, args.seconds)
    inf = r["latency_ms"]["infer"]
    print(f"{'resnet18 @ 30 Hz: infer':<30}{inf['p50']:>9.3f}{inf['p99']:>9.3f}"
          f"{r['hz']:>8.1f}{r['overrun_pct']:>9.2f}%")


if __name__ == "__main__":
    main()
