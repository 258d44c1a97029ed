"""Shared fixtures: the real donkeycar tub, fresh tub folders, synthetic frames, the MCU
emulator on a pseudo-terminal, and headless Chromium for the browser tests."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from car.mcu.emulator import Emulator, PtyEmulator

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
REAL_TUB_ARCHIVE = FIXTURES / "donkeycar_real_tub_2020.tar.gz"

DRIVE_INPUTS = ["cam/image_array", "user/angle", "user/throttle", "user/mode"]
DRIVE_TYPES = ["image_array", "float", "float", "str"]


@pytest.fixture(scope="session")
def test_config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A car.toml whose only setting keeps the models database out of the checkout."""
    root = tmp_path_factory.mktemp("config")
    path = root / "car.toml"
    path.write_text(f'[paths]\nmodels_dir = "{root / "models"}"\n', encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _models_outside_the_checkout(test_config_file: Path, monkeypatch: pytest.MonkeyPatch
                                 ) -> None:
    """Commands that read car.toml (`car sim eval` records scores, `car train` models) find
    the test config through $CAR_CONFIG; tests of the config's own lookup unset it."""
    monkeypatch.setenv("CAR_CONFIG", str(test_config_file))


@pytest.fixture(scope="session")
def real_tub_pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared real tub, extracted once; tests must not modify it (use ``real_tub``)."""
    root = tmp_path_factory.mktemp("real")
    with tarfile.open(REAL_TUB_ARCHIVE) as archive:
        archive.extractall(root, filter="data")
    return root / "tub"


@pytest.fixture
def real_tub(real_tub_pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the real tub that a test may change."""
    return Path(shutil.copytree(real_tub_pristine, tmp_path / "tub"))


def frame(seed: int, height: int = 120, width: int = 160) -> np.ndarray:
    """A smooth RGB test frame (compresses well, so JPEG round trips stay close)."""
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    offset = seed % 50
    r = 200 * x + offset
    g = 40 + 150 * y + offset
    b = np.full_like(x, 20.0 + offset)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def drive_record(i: int, image: bool = True) -> dict:
    record = {"user/angle": ((i % 21) - 10) / 10.0, "user/throttle": 0.3, "user/mode": "user"}
    if image:
        record["cam/image_array"] = frame(i)
    return record


@contextlib.contextmanager
def writer_in_another_process(path: Path) -> Iterator[int]:
    """Another process holding the tub at ``path`` open for writing; yields its pid."""
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r})\n"
            "from car.tub import TubWriter\n"
            f"w = TubWriter({str(path)!r}); print('ready', flush=True); time.sleep(60)")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield process.pid
    finally:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def sim_tub_pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulator tub with two sessions (oval, then technical), 10 Hz, about 700 records.
    Read-only: copy it (``sim_tub``) before changing it."""
    from car.cli import main

    path = tmp_path_factory.mktemp("sim") / "tub"
    for track, seed in (("oval", "1"), ("technical", "2")):
        code = main(["sim", "record", "--track", track, "--laps", "1", "--hz", "10",
                     "--out", str(path), "--seed", seed])
        assert code == 0
    return path


@pytest.fixture
def sim_tub(sim_tub_pristine: Path, tmp_path: Path) -> Path:
    path = tmp_path / "sim_tub"
    shutil.copytree(sim_tub_pristine, path)
    return path


@pytest.fixture
def emu() -> Iterator[PtyEmulator]:
    """An MCU emulator on a pty (telemetry at 100 Hz), stopped after the test."""
    with PtyEmulator(Emulator(start_s=time.monotonic(), telemetry_hz=100)) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium through Playwright, one per test module (a module that
    uses it calls tests.browser.require_browser() first, so both are there)."""
    from playwright.sync_api import sync_playwright

    from tests.browser import ARGS, CHROMIUM

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()
