"""Tubs to LeRobot v3.0 datasets and back (`car tub export|import --format lerobot`).

The tests marked slow check compatibility with the outside implementation: lerobot 0.4.4's
own ``LeRobotDataset`` loads our export, and a dataset written with LeRobot's own API comes
into a tub. lerobot brings its own torch (about 8 GB), so it lives in a cached virtualenv
under .cache/ that the first run builds (a few minutes, once), as the donkeycar tests do.
They skip only when the package registry cannot be reached; any other failure to build that
virtualenv fails them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from car.cli import main
from car.errors import TubError
from car.tub import Tub, TubWriter
from car.tub.lerobot_export import export_lerobot
from car.tub.lerobot_import import import_lerobot
from tests.conftest import frame

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "lerobot-0.4.4"
REQUIREMENTS = ["lerobot==0.4.4"]  # its torch, torchvision, datasets, av and pandas come along
SIDE = Path(__file__).with_name("lerobot_side.py")
INPUTS = ["cam/image_array", "user/angle", "user/throttle", "user/mode", "sim/speed",
          "sim/lap", "pilot/angle"]
TYPES = ["image_array", "float", "float", "str", "float", "int", "float"]
SESSIONS = (40, 25)  # records per session; the first loses 3 to a delete
DELETED = [5, 6, 7]


def make_tub(path: Path) -> Tub:
    """Two sessions at 20 Hz capture (written faster, as a lock-step simulator does)."""
    start = 1000.0
    for s, count in enumerate(SESSIONS):
        with TubWriter(path, INPUTS, TYPES, drop_when_full=False) as writer:
            for i in range(count):
                writer.write({"cam/image_array": frame(i + 11 * s),
                              "user/angle": ((i * 7) % 13 - 6) / 6.1,
                              "user/throttle": 0.2 + i / 97, "user/mode": "user",
                              "sim/speed": i / 10, "sim/lap": s, "pilot/angle": 0.5},
                             capture_time=start + 60 * s + i / 20)
            if s == 0:
                writer.delete(DELETED).result(timeout=10)
    return Tub(path)


@pytest.fixture
def tub(tmp_path: Path) -> Tub:
    return make_tub(tmp_path / "tub")


def export(tub: Tub, out: Path, *extra: str) -> None:
    assert main(["tub", "export", str(tub.path), "--format", "lerobot", "--out", str(out),
                 *extra]) == 0


def test_round_trip_keeps_records_actions_images_and_sessions(
        tub: Tub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset, back_path = tmp_path / "dataset", tmp_path / "back"
    export(tub, dataset)
    said = capsys.readouterr().out
    assert "62 frames in 2 episode(s) at 20 fps (the capture rate)" in said
    assert "observation.state = [sim/speed, sim/lap]" in said
    assert main(["tub", "import", str(dataset), "--format", "lerobot", "--out",
                 str(back_path)]) == 0
    back = Tub(back_path)
    ours = list(tub.records())
    theirs = list(back.records())
    assert len(theirs) == len(ours) == sum(SESSIONS) - len(DELETED)
    assert [s.records for s in back.sessions()] == [s.records for s in tub.sessions()]
    for a, b in zip(ours, theirs):
        for key in ("user/angle", "user/throttle"):
            assert b[key] == float(np.float32(a[key]))  # float32 exactly, as LeRobot has it
        assert b["sim/speed"] == float(np.float32(a["sim/speed"]))
        assert b["sim/lap"] == a["sim/lap"]
        assert abs(b["_capture_timestamp_ms"] - a["_capture_timestamp_ms"]) < 0.01
        assert b["user/mode"] == "user"
    errors = [np.abs(back.load_image(b).astype(float) - tub.load_image(a).astype(float)).mean()
              for a, b in zip(ours, theirs)]
    assert max(errors) < 4.0  # H.264 at CRF 18, then JPEG again: close, not equal
    assert "pilot/angle" not in back.inputs


def test_the_dataset_is_laid_out_as_lerobot_v3(tub: Tub, tmp_path: Path) -> None:
    import av

    out = tmp_path / "dataset"
    summary = export_lerobot([tub.path], out)
    assert (summary.frames, summary.episodes, summary.fps) == (62, 2, 20)
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert (info["fps"], info["total_frames"], info["total_episodes"]) == (20, 62, 2)
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == ("videos/{video_key}/chunk-{chunk_index:03d}/"
                                  "file-{file_index:03d}.mp4")
    features = info["features"]
    assert features["action"] == {"dtype": "float32", "shape": [2],
                                  "names": ["steering", "throttle"]}
    assert features["observation.state"]["names"] == ["sim/speed", "sim/lap"]
    assert features["observation.images.cam"]["shape"] == [120, 160, 3]
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert features[key]["shape"] == [1]

    data = pq.read_table(out / "data/chunk-000/file-000.parquet").to_pydict()
    assert data["index"] == list(range(62))
    assert data["episode_index"] == [0] * 37 + [1] * 25
    assert data["frame_index"] == list(range(37)) + list(range(25))
    assert np.allclose(data["timestamp"], np.array(data["frame_index"]) / 20)
    records = list(tub.records())
    assert data["action"][10] == [np.float32(records[10]["user/angle"]),
                                  np.float32(records[10]["user/throttle"])]
    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in episodes] == [(0, 37),
                                                                                   (37, 62)]
    assert episodes[1]["videos/observation.images.cam/from_timestamp"] == 37 / 20
    tasks = pq.read_table(out / "meta/tasks.parquet").to_pydict()
    assert tasks == {"task_index": [0], "__index_level_0__": ["drive"]}
    stats = json.loads((out / "meta/stats.json").read_text())
    assert stats["action"]["count"] == [62] and len(stats["action"]["q50"]) == 2
    assert np.array(stats["observation.images.cam"]["mean"]).shape == (3, 1, 1)
    with av.open(str(out / "videos/observation.images.cam/chunk-000/file-000.mp4")) as video:
        stream = video.streams.video[0]
        assert (stream.codec_context.name, stream.format.name) == ("h264", "yuv420p")
        assert stream.average_rate == 20
        assert [round(float(f.time) * 20) for f in video.decode(stream)] == list(range(62))


@pytest.mark.slow
def test_a_donkeycar_tub_without_sessions_or_capture_times(real_tub_pristine: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    summary = export_lerobot([real_tub_pristine], out)
    real = Tub(real_tub_pristine)
    assert (summary.episodes, summary.frames, summary.state_names) == (1, len(real), [])
    assert summary.fps == 20 and "the default" in summary.fps_source  # written at 333 Hz
    info = json.loads((out / "meta/info.json").read_text())
    assert "observation.state" not in info["features"]
    back = import_lerobot(out, tmp_path / "back")
    assert back.frames == len(real) and back.state_fields == []
    assert Tub(tmp_path / "back").inputs == ["cam/image_array", "user/angle", "user/throttle",
                                             "user/mode"]


def test_state_keys_and_other_action_keys(tub: Tub, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    export(tub, out, "--state-keys", "sim/lap", "--steering-key", "pilot/angle", "--fps", "10")
    info = json.loads((out / "meta/info.json").read_text())
    assert info["fps"] == 10 and info["features"]["observation.state"]["names"] == ["sim/lap"]
    data = pq.read_table(out / "data/chunk-000/file-000.parquet").to_pydict()
    assert {a[0] for a in data["action"]} == {0.5}
    export(tub, tmp_path / "stateless", "--state-keys", "")
    info = json.loads((tmp_path / "stateless/meta/info.json").read_text())
    assert "observation.state" not in info["features"]


def test_export_refuses_what_it_cannot_do(tub: Tub, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("mine")
    with pytest.raises(TubError, match="exists and is not empty"):
        export_lerobot([tub.path], taken)
    assert (taken / "file").read_text() == "mine"
    with pytest.raises(TubError, match="no numeric field sim/nothing"):
        export_lerobot([tub.path], tmp_path / "a", state_keys=["sim/nothing"])
    with pytest.raises(TubError, match="no number in 'user/gone'"):
        export_lerobot([tub.path], tmp_path / "b", throttle_key="user/gone")
    imageless = tmp_path / "imageless"
    with TubWriter(imageless, ["user/angle"], ["float"]) as writer:
        writer.write({"user/angle": 0.1})
    with pytest.raises(TubError, match="no colour camera field"):
        export_lerobot([imageless], tmp_path / "c")
    assert not list(tmp_path.glob(".*.partial")) and not (tmp_path / "a").exists()


def test_import_refuses_what_it_cannot_read(tub: Tub, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good"
    export_lerobot([tub.path], good)
    info_path = good / "meta/info.json"
    info = json.loads(info_path.read_text())

    def fails(match: str, out: Path | None = None) -> None:
        with pytest.raises(TubError, match=match):
            import_lerobot(good, out or tmp_path / "tub_out")
        assert not (tmp_path / "tub_out").exists()
        assert not list(tmp_path.glob(".*.partial"))

    fails("exists and is not empty", tub.path)
    assert len(Tub(tub.path)) == 62
    for change, match in [
        ({"codebase_version": "v2.1"}, "codebase_version is v2.1.*convert_dataset_v21_to_v30"),
        ({"fps": None}, "'fps' is missing"),
        ({"features": {k: v for k, v in info["features"].items() if k != "action"}},
         "no 'action' feature"),
        ({"features": {**info["features"], "action": {"dtype": "float32", "shape": [3]}}},
         "needs 2 floats"),
        ({"features": {k: v for k, v in info["features"].items()
                       if k != "observation.images.cam"}}, "no camera video"),
    ]:
        info_path.write_text(json.dumps({**info, **change}))
        fails(match)
    info_path.write_text(json.dumps(info))
    video = good / "videos/observation.images.cam/chunk-000/file-000.mp4"
    video.rename(video.with_suffix(".bak"))
    fails("file-000.mp4: missing")
    video.with_suffix(".bak").rename(video)
    for episodes in (good / "meta/episodes").rglob("*.parquet"):
        episodes.unlink()
    fails("no episode metadata")
    info_path.unlink()
    fails("not a LeRobot dataset .no meta/info.json")
    assert main(["tub", "import", str(good), "--format", "lerobot", "--out",
                 str(tmp_path / "x")]) == 1
    assert "not a LeRobot dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tub", "import", str(good), "--format", "rosbag", "--out", str(tmp_path / "y")])


def test_the_car_runtime_loads_neither_pyarrow_nor_av(monkeypatch: pytest.MonkeyPatch,
                                                      tub: Tub, tmp_path: Path) -> None:
    code = ("import sys, car.cli, car.commands.tub_lerobot; "
            "print(sorted(m for m in ('pyarrow', 'av', 'torch', 'lerobot') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    with pytest.raises(TubError, match=r"needs pyarrow: pip install 'car-autopilot\[lerobot\]'"):
        export_lerobot([tub.path], tmp_path / "out")


# ------------------------------------------------------------------ the lerobot library itself


def _pip(python: Path | str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def lerobot_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    python = VENV / "bin" / "python"
    ready = VENV / ".complete"
    if ready.exists() and python.exists():
        return python
    probe = _pip(sys.executable, "download", "--no-deps", "-q", "-d",
                 str(tmp_path_factory.mktemp("probe")), REQUIREMENTS[0], timeout=300)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"package registry unreachable, cannot install {REQUIREMENTS[0]}: {last}")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    install = _pip(python, "install", "-q", *REQUIREMENTS, timeout=2400)
    assert install.returncode == 0, f"installing lerobot failed:\n{install.stderr[-3000:]}"
    ready.write_text(" ".join(REQUIREMENTS) + "\n")
    return python


def lerobot(python: Path, action: str, root: Path, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / f"{action}.json"
    result = subprocess.run([str(python), str(SIDE), action, str(root), str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.timeout(3000)  # the first run installs lerobot and its torch
def test_lerobot_loads_our_export(lerobot_python: Path, tub: Tub, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    export_lerobot([tub.path], out)
    seen = lerobot(lerobot_python, "read", out, tmp_path)
    assert (seen["len"], seen["num_episodes"], seen["fps"]) == (62, 2, 20)
    assert seen["episode_lengths"] == [37, 25]
    assert seen["video_keys"] == ["observation.images.cam"]
    assert "observation.images.cam" in seen["stats_keys"]
    records = list(tub.records())
    for index, item in seen["items"].items():
        record = records[int(index)]
        assert item["action"] == [float(np.float32(record["user/angle"])),
                                  float(np.float32(record["user/throttle"]))]
        assert item["state"] == [float(np.float32(record["sim/speed"])), record["sim/lap"]]
        assert item["episode_index"] == (0 if int(index) < 37 else 1)
        assert item["index"] == int(index) and item["task"] == "drive"
        assert item["timestamp"] == pytest.approx(item["frame_index"] / 20, abs=1e-6)
        assert item["image_shape"] == [3, 120, 160]
        ours = tub.load_image(record).astype(np.float64).mean()
        assert abs(item["image_mean"] - ours) < 2.0


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_we_import_a_dataset_lerobot_wrote(lerobot_python: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "made_by_lerobot"
    made = lerobot(lerobot_python, "write", root, tmp_path)
    assert main(["tub", "import", str(root), "--format", "lerobot", "--out",
                 str(tmp_path / "tub")]) == 0
    assert "from observation.images.front at 10 fps" in capsys.readouterr().out
    tub = Tub(tmp_path / "tub")
    records = list(tub.records())
    assert len(records) == len(made["frames"]) == sum(made["episodes"])
    assert [s.records for s in tub.sessions()] == made["episodes"]
    assert tub.inputs[-1] == "state/speed"
    for record, expected in zip(records, made["frames"]):
        assert [record["user/angle"], record["user/throttle"]] == [
            float(np.float32(v)) for v in expected["action"]]
        image = tub.load_image(record)
        assert image.shape == (48, 64, 3)
        assert abs(image.astype(np.float64).mean() - expected["image_mean"]) < 4.0
    steps = np.diff([r["_capture_timestamp_ms"] for r in records[:made["episodes"][0]]])
    assert np.allclose(steps, 100.0, atol=0.01)  # the dataset's 10 fps timestamps
