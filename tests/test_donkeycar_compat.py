"""Tubs move both ways between donkeycar 5.3.0 and this project.

donkeycar 5.3.0 needs numpy < 2, so it lives in its own cached virtualenv that this test
builds under .cache/ (about a minute, once). The test skips only when the package registry
cannot be reached; any other failure to build that virtualenv fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from car.cli import main
from car.config.donkey_import import DEFAULTS, read_myconfig
from car.tub import Tub, TubWriter
from car.tub.check import check_tub
from car.tub.repair import check_and_repair
from tests.conftest import frame

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "donkeycar-5.3.0"
REQUIREMENTS = ["donkeycar==5.3.0", "numpy<2", "typing_extensions"]
SIDE = Path(__file__).with_name("donkeycar_side.py")


def _pip(python: Path | str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def donkey_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    python = VENV / "bin" / "python"
    ready = VENV / ".complete"
    if ready.exists() and python.exists():
        return python
    probe = _pip(sys.executable, "download", "--no-deps", "-q", "-d",
                 str(tmp_path_factory.mktemp("probe")), "donkeycar==5.3.0", timeout=300)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"package registry unreachable, cannot install donkeycar 5.3.0: {last}")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    install = _pip(python, "install", "-q", *REQUIREMENTS)
    assert install.returncode == 0, f"installing donkeycar failed:\n{install.stderr[-3000:]}"
    ready.write_text(" ".join(REQUIREMENTS) + "\n")
    return python


def donkey(python: Path, action: str, tub: Path, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / f"{action}.json"
    env = {**os.environ, "LOGLEVEL": "WARNING"}
    result = subprocess.run([str(python), str(SIDE), action, str(tub), str(out)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def our_image_means(tub: Tub, names: dict[str, Any]) -> dict[str, Any]:
    by_name = {r["cam/image_array"]: r for r in tub.records(include_deleted=True)}
    out = {}
    for name in names:
        image = tub.load_image(by_name[name])
        out[name] = [list(image.shape), float(image.astype(np.float64).mean())]
    return out


@pytest.mark.slow
def test_donkeycar_tub_reads_here(donkey_python: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "donkey_tub"
    seen = donkey(donkey_python, "write", path, tmp_path)
    assert seen["len"] == 1234 + 10 - 8
    tub = Tub(path)
    assert len(tub) == seen["len"]
    assert list(tub.records()) == seen["records"]  # same records, same order, same values
    assert len({r["_session_id"] for r in tub.records()}) == 2
    assert [s.id for s in tub.sessions()] == tub.manifest.sessions["all_full_ids"]
    for name, (shape, mean) in our_image_means(tub, seen["images"]).items():
        assert shape == seen["images"][name][0] and abs(mean - seen["images"][name][1]) < 1.0
    assert check_tub(path).problems == []
    assert main(["tub", "info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["records"] == seen["len"] and info["deleted"] == 8


@pytest.mark.slow
def test_our_tub_reads_in_donkeycar(donkey_python: Path, tmp_path: Path) -> None:
    path = tmp_path / "our_tub"
    inputs = ["cam/image_array", "user/angle", "user/throttle", "user/mode", "count", "flag",
              "imu/list", "imu/array"]
    types = ["image_array", "float", "float", "str", "int", "boolean", "list", "nparray"]
    with TubWriter(path, inputs, types, {"car": "ours"}, drop_when_full=False) as writer:
        for i in range(1500):
            writer.write({"cam/image_array": frame(i), "user/angle": (i % 7 - 3) / 3,
                          "user/throttle": 0.5, "user/mode": "user", "count": i,
                          "flag": bool(i % 2), "imu/list": [i, 1.5],
                          "imu/array": np.array([i / 10, 2.0])})
        writer.delete(range(100, 120)).result(timeout=10)
    # a crash leaves an image without its line: the index becomes a deleted tombstone
    (path / "images" / "1500_cam_image_array_.jpg").write_bytes(
        (path / "images" / "0_cam_image_array_.jpg").read_bytes())
    with TubWriter(path) as writer:
        for i in range(7):
            writer.write({"cam/image_array": frame(i), "user/angle": 0.0, "user/mode": "user"})
        writer.delete_last(2).result(timeout=10)
    ours = Tub(path)
    seen = donkey(donkey_python, "read", path, tmp_path)
    assert seen["len"] == len(ours) == 1500 - 20 + 7 - 2
    assert seen["records"] == list(ours.records())  # donkeycar skips exactly what we skip
    for name, (shape, mean) in our_image_means(ours, seen["images"]).items():
        assert shape == seen["images"][name][0] and abs(mean - seen["images"][name][1]) < 1.0

    after = donkey(donkey_python, "append", path, tmp_path)  # donkeycar adds a session
    assert after["len"] == len(ours) + 5
    reader = Tub(path)
    assert len(reader) == after["len"] and reader.damage == []
    assert reader.indexes() == list(range(1508 + 5))
    assert len(reader.sessions()) == 3
    assert check_tub(path).problems == []


@pytest.mark.slow
def test_donkeycar_agrees_with_us_after_a_repair(donkey_python: Path, tmp_path: Path) -> None:
    """Repairs keep line N holding index N, so donkeycar's position-based deletes still match."""
    path = tmp_path / "repaired"
    inputs = ["cam/image_array", "user/angle", "user/mode"]
    with TubWriter(path, inputs, ["image_array", "float", "str"], max_len=10,
                   drop_when_full=False) as writer:
        for i in range(35):
            writer.write({"cam/image_array": frame(i), "user/angle": i / 35, "user/mode": "user"})
        writer.delete([7, 12, 31]).result(timeout=10)
    catalog = path / "catalog_0.catalog"  # damage: the last line of a catalog is garbage,
    lines = catalog.read_text().splitlines(keepends=True)
    lines[9] = "garbage\n"
    catalog.write_text("".join(lines))
    (path / "catalog_2.catalog").unlink()  # a whole catalog is gone,
    (path / "images" / "15_cam_image_array_.jpg").write_bytes(b"")  # and an image is empty
    report, _ = check_and_repair(path)
    assert {"bad_line", "missing_catalog", "unreadable_image"} <= report.kinds()
    ours = Tub(path)
    seen = donkey(donkey_python, "read", path, tmp_path)
    assert seen["records"] == list(ours.records())
    assert seen["len"] == len(ours) == 35 - 3 - 1 - 10 - 1


@pytest.mark.slow
def test_a_crashed_donkeycar_session_is_repaired(donkey_python: Path, tmp_path: Path) -> None:
    path = tmp_path / "reused"
    donkey(donkey_python, "reuse", path, tmp_path)  # index 5 written twice, over a rollover
    report, _ = check_and_repair(path)
    assert "duplicate_index" in report.kinds()
    ours = Tub(path)
    seen = donkey(donkey_python, "read", path, tmp_path)
    assert seen["records"] == list(ours.records())
    assert ours.indexes() == list(range(9)) and ours.record(5)["count"] == 100
    assert check_tub(path).problems == []


@pytest.mark.slow
def test_donkeycar_reads_a_tub_killed_mid_recording(donkey_python: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from crash_demo import kill_rounds

    def donkeycar_reads_what_we_read(tub: Path) -> None:
        seen = donkey(donkey_python, "read", tub, tmp_path)  # fails if donkeycar cannot open it
        ours = {r["_index"]: r for r in Tub(tub).records()}
        assert all(ours.get(r["_index"]) == r for r in seen["records"])

    path = tmp_path / "killed"
    kill_rounds(path, rounds=6, seed=5, max_len=7, log=False,
                after_kill=donkeycar_reads_what_we_read)
    TubWriter(path).close()  # reopening repairs what the last kill left
    seen = donkey(donkey_python, "read", path, tmp_path)
    assert seen["records"] == list(Tub(path).records())


def test_config_import_defaults_are_donkeycars(donkey_python: Path) -> None:
    """The defaults `car config import` assumes for keys a myconfig.py leaves out are the ones
    in donkeycar's own cfg_complete.py (read the same way: parsed, never run)."""
    where = subprocess.run([str(donkey_python), "-c", "import importlib.util as u; print(u."
                            "find_spec('donkeycar').submodule_search_locations[0])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    theirs, _ = read_myconfig(Path(where) / "templates" / "cfg_complete.py")
    compared = [key for key in DEFAULTS if key in theirs]
    assert {"DRIVE_TRAIN_TYPE", "PWM_STEERING_THROTTLE", "IMAGE_W", "DRIVE_LOOP_HZ",
            "PCA9685_I2C_ADDR"} <= set(compared)
    assert {key: theirs[key] for key in compared} == {key: DEFAULTS[key] for key in compared}
