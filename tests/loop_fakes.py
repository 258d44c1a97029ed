"""Fakes for drive-loop tests: a camera, an engine and a clock that do exactly what a test
says, so safety and timing can be checked tick by tick."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from car.camera import CameraError, EndOfFrames
from car.frames import Frame


class FakeClock:
    """Time moves only when the test (or the fake camera) says so."""

    def __init__(self, start_s: float = 100.0):
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.now_s += seconds


class FakeCamera:
    """Frames stamped ``age_s(seq)`` seconds before the clock's now; fails or ends on cue."""

    def __init__(self, clock: FakeClock, *, age_s: Callable[[int], float] = lambda seq: 0.0,
                 fail_at: int | None = None, end_at: int | None = None):
        self.clock = clock
        self.age_s = age_s
        self.fail_at = fail_at
        self.end_at = end_at
        self.seq = 0
        self.closed = False

    def read(self) -> Frame:
        if self.fail_at is not None and self.seq >= self.fail_at:
            raise CameraError("fake camera unplugged")
        if self.end_at is not None and self.seq >= self.end_at:
            raise EndOfFrames
        image = np.full((120, 160, 3), self.seq % 256, np.uint8)
        frame = Frame(image, self.clock() - self.age_s(self.seq), self.seq)
        self.seq += 1
        return frame

    def close(self) -> None:
        self.closed = True


class FakeEngine:
    """Returns ``outputs(n)`` on its n-th inference; counts resets and closes."""

    name = "fake"
    provider = "test"
    precision = "fp32"
    manifest = None

    def __init__(self, outputs: Callable[[int], tuple[float, float]] = lambda n: (0.1, 0.3),
                 label: str = "fake"):
        self.outputs = outputs
        self.label = label
        self.path = Path(label)
        self.calls = 0
        self.resets = 0
        self.closed = 0

    def preprocess(self, frame: np.ndarray) -> np.ndarray:
        return frame

    def infer(self, x: np.ndarray) -> tuple[float, float]:
        self.calls += 1
        return self.outputs(self.calls - 1)

    def predict(self, frame: np.ndarray) -> tuple[float, float]:
        return self.infer(frame)

    def reset(self) -> None:
        self.resets += 1

    def describe(self) -> str:
        return self.label

    def close(self) -> None:
        self.closed += 1
