"""Opening a pilot for the car: the engine for a model file, refused in one line when it
cannot run here, was trained on frames of another size than the camera gives, or is too
slow for the loop's rate."""

from __future__ import annotations

import math
import os
import statistics
import time

import numpy as np

from car.errors import CarError
from deploy.engine import Engine, EngineError, load_engine

PILOT_SHARE = 0.8  # of the loop period the pilot (preprocess + inference) may take
TIMED_RUNS = 5  # after the engine's own warm-up


def open_pilot(path: str | os.PathLike, provider: str | None = None, *,
               frame_size: tuple[int, int] | None = None, threads: int | None = None,
               rate_hz: float | None = None) -> Engine:
    """The engine for ``path`` (see ``deploy.engine.load_engine``), checked against the
    camera's ``frame_size`` (width, height) and the loop's ``rate_hz`` when given."""
    try:
        engine = load_engine(path, provider, threads=threads)
    except EngineError as exc:
        raise CarError(str(exc)) from None
    try:
        if frame_size is not None:
            check_frame_size(engine, *frame_size)
        if rate_hz is not None:
            check_pilot_rate(engine, rate_hz)
    except CarError:
        engine.close()
        raise
    return engine


def check_frame_size(engine: Engine, width: int, height: int) -> None:
    """A model drives only on frames of the size it was trained on."""
    p = engine.manifest.preprocess
    if (p.source_width, p.source_height) != (width, height):
        raise CarError(f"{engine.path.name} was trained on {p.source_width}x{p.source_height} "
                       f"frames but the camera gives {width}x{height}; set [camera] width and "
                       "height in car.toml to match")


def pilot_latency_s(engine: Engine, runs: int = TIMED_RUNS) -> float:
    """The median time of preprocess + inference on a blank frame, after the engine's
    warm-up; its temporal state is reset after."""
    p = engine.manifest.preprocess
    blank = np.zeros((p.source_height, p.source_width, 3), np.uint8)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        engine.infer(engine.preprocess(blank))
        times.append(time.perf_counter() - t0)
    engine.reset()
    return statistics.median(times)


def check_pilot_rate(engine: Engine, rate_hz: float) -> float:
    """Refuse a pilot that cannot answer within ``PILOT_SHARE`` of a loop period here: its
    commands would come from frames older than the loop allows. Returns its latency."""
    latency_s = pilot_latency_s(engine)
    budget_s = PILOT_SHARE / rate_hz
    if latency_s > budget_s:
        holds = math.floor(PILOT_SHARE / latency_s)
        can = f"drive at --hz {holds} or less" if holds >= 1 else \
            "it cannot hold even 1 Hz here"
        raise CarError(f"{engine.path.name} takes {latency_s * 1000:.0f} ms per frame on "
                       f"{engine.describe()}, more than the {budget_s * 1000:.0f} ms a "
                       f"{rate_hz:g} Hz loop allows it: {can}, or use a faster model or "
                       "provider")
    return latency_s
