"""A model's files and their manifest are replaced as one (deploy.model_swap): an export
killed (SIGKILL) before any of its renames leaves the old set, loadable; killed after its
commit point, the new one, which the car's loader finishes swapping in. The next writer
removes what a stopped one left, one info line each; a loader never deletes anything."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.engine import EngineError, load_engine
from deploy.manifest import file_sha256
from deploy.model_swap import ModelSwap, clean, folder_lock, recover, roll_forward

ROOT = Path(__file__).resolve().parent.parent
FILES = ("pilot.onnx", "pilot.pt2")  # the model files of one set, beside pilot.json
RENAMES = len(FILES) * 2 + 2  # each to .next, the commit, each to its name, the manifest
COMMIT = len(FILES)  # the commit point is this os.replace call (0-based)

# Runs in a child, which SIGKILLs itself just before os.replace call number KILL_AT.
KILLER = """
import os, signal, sys
kill_at, calls, real_replace = int(sys.argv[1]), [0], os.replace
def replace(source, target):
    if calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    calls[0] += 1
    real_replace(source, target)
os.replace = replace
"""
SWAP = KILLER + """
from pathlib import Path
from deploy.manifest import load_manifest
from deploy.model_swap import ModelSwap
source, target = Path(sys.argv[2]), Path(sys.argv[3])
with ModelSwap(target / "pilot.onnx") as swap:
    for name in ("pilot.onnx", "pilot.pt2"):
        swap.stage(target / name).write_bytes((source / name).read_bytes())
    swap.commit(load_manifest(source / "pilot.onnx"))
"""
EXPORT = KILLER + """
from pathlib import Path
from training.export import reexport
reexport(Path(sys.argv[2]))
"""


def run_killed(script: str, kill_at: int, *args: Path) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script, str(kill_at), *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.returncode


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two exports of a linear model with different weights: the old and the new set."""
    from training.export import export_untrained

    root = tmp_path_factory.mktemp("sets")
    return {name: export_untrained("linear", root / name).parent for name in ("old", "new")}


def which(folder: Path, sets: dict[str, Path]) -> str:
    """"old" or "new": which set every file in ``folder`` belongs to; fails on a mix."""
    manifest = json.loads((folder / "pilot.json").read_text())["export"]
    found = {n: file_sha256(folder / n) for n in FILES}
    assert (manifest["sha256"], manifest["pt2_sha256"]) == tuple(found.values())
    names = [n for n, s in sets.items() if file_sha256(s / "pilot.onnx") == found["pilot.onnx"]]
    assert len(names) == 1
    return names[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".next", ".partial")))


@pytest.mark.parametrize("kill_at", range(RENAMES + 1))
def test_a_swap_killed_at_any_step_leaves_the_old_or_the_new_set(kill_at, sets, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(sets["old"], target)
    code = run_killed(SWAP, kill_at, sets["new"], target)
    assert code == (0 if kill_at == RENAMES else -signal.SIGKILL)
    committed = kill_at > COMMIT
    if not committed:
        assert which(target, sets) == "old"  # untouched: nothing to recover
    left = leftovers(target)
    # The car's loader: both engines load the one set, finished if it was committed.
    engines = [load_engine(target / name, "cpu") for name in FILES]
    assert which(target, sets) == ("new" if committed else "old")
    assert all(e.manifest.export["sha256"] == file_sha256(target / "pilot.onnx")
               for e in engines)
    assert leftovers(target) == ([] if committed else left)  # a loader never deletes
    # The next writer removes what an uncommitted swap left, one line each.
    lines: list[str] = []
    with ModelSwap(target / "pilot.onnx", lines.append):
        pass
    assert leftovers(target) == [] and which(target, sets) == ("new" if committed else "old")
    stale = [] if committed else left
    assert len(lines) == len(stale)
    assert all(any(name in line for line in lines) for name in stale)


def test_a_killed_export_is_finished_by_the_loader(sets, tmp_path):
    """End to end: `car export` killed just after its commit point."""
    target = tmp_path / "model"
    shutil.copytree(sets["old"], target)
    shutil.copy(sets["new"] / "pilot.pt", target / "pilot.pt")  # re-exported in place
    assert run_killed(EXPORT, COMMIT + 1, target / "pilot.pt") == -signal.SIGKILL
    assert (target / "pilot.json.next").exists()
    load_engine(target / "pilot.pt2", "cpu")  # consistent after the loader's recovery
    assert which(target, sets) == "new" and leftovers(target) == []


def test_the_loader_leaves_a_swap_to_the_writer_that_holds_the_folder(sets, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(sets["old"], target)
    run_killed(SWAP, RENAMES - 1, sets["new"], target)  # all renamed but the manifest
    with folder_lock(target):  # as if that writer were still at work
        assert recover(target / "pilot.onnx") is False
        start = time.monotonic()
        with pytest.raises(EngineError, match="belongs to another model file"):
            load_engine(target / "pilot.onnx", "cpu")  # read again a few times, then refused
        assert time.monotonic() - start < 5
    assert recover(target / "pilot.onnx") is True
    assert which(target, sets) == "new"


def test_a_rename_another_process_already_made_is_not_an_error(sets, tmp_path, monkeypatch):
    target = tmp_path / "model"
    shutil.copytree(sets["old"], target)
    run_killed(SWAP, COMMIT + 1, sets["new"], target)  # committed, nothing rolled forward
    import deploy.model_swap as model_swap

    listed = model_swap._names(target)
    os.replace(target / "pilot.onnx.next", target / "pilot.onnx")  # the other process
    monkeypatch.setattr(model_swap, "_names", lambda folder: listed)
    assert roll_forward(target / "pilot.json") is True
    assert which(target, sets) == "new"


def test_a_failed_export_leaves_the_old_set_and_no_partial_files(sets, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(sets["old"], target)
    with pytest.raises(RuntimeError, match="check failed"), \
            ModelSwap(target / "pilot.onnx") as swap:
        swap.stage(target / "pilot.onnx").write_bytes(b"half an export")
        raise RuntimeError("check failed")
    assert which(target, sets) == "old" and leftovers(target) == []
    with pytest.raises(ValueError, match="not a model file of"):
        swap.stage(target / "other.onnx")


def test_training_removes_what_a_stopped_run_left_one_line_each(tmp_path, caplog):
    from training.train import remove_leftovers

    out = tmp_path / "run"
    out.mkdir()
    stray = [".pilot.pt.tmp", "best.pth", ".pilot.onnx.partial", "pilot.pt2.next",
             ".pilot.json.tmp", ".pilot_dynamic.onnx.partial"]
    kept = ["notes.txt", ".other.onnx.partial", "pilot.onnx", "history.csv"]
    for name in stray + kept:
        (out / name).write_bytes(b"x")
    with caplog.at_level(logging.INFO):
        remove_leftovers(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(kept)
    removed = [r.getMessage() for r in caplog.records if "removed" in r.getMessage()]
    assert len(removed) == len(stray)
    assert all(any(str(out / name) in line for line in removed) for name in stray)
    clean(out / "other.onnx")  # another set's own writer removes its leftovers
    assert not (out / ".other.onnx.partial").exists()


def test_a_frame_cache_build_that_was_stopped_is_removed_by_the_next(tmp_path, caplog):
    from training.cache import STALE_S, _remove_abandoned

    gone = tmp_path / ".0123abcd.999999999.tmp"  # above any pid_max: no such process
    fresh = tmp_path / ".0123abcd.json.999999998.tmp"
    mine = tmp_path / f".0123abcd.{os.getpid()}.tmp"
    for path in (gone, fresh, mine):
        path.write_bytes(b"frames")
    old = time.time() - STALE_S - 1
    for path in (gone, mine):
        os.utime(path, (old, old))
    with caplog.at_level(logging.INFO):
        _remove_abandoned(tmp_path)
    assert not gone.exists() and fresh.exists() and mine.exists()
    assert [r.getMessage() for r in caplog.records] == [
        f"removed {gone}, left by a frame cache build that was stopped"]
