"""`car build` swaps the engine and its manifest in as one (deploy.model_swap), against the
fake TensorRT: a build stopped at any rename leaves the old engine or the new one, and a
model exported again during a build keeps its own manifest. tests/test_export_swap.py
kills real processes; here a rename raises instead, and nothing is cleaned up after it."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from deploy.engine import load_engine
from deploy.manifest import load_manifest, save_manifest
from tests import fake_tensorrt as fake
from tests.test_tensorrt import LINEAR, write_onnx

RENAMES, COMMIT = 4, 1  # engine → .next, the manifest's commit, engine, manifest


class Killed(BaseException):
    """Stands in for SIGKILL: raised from inside a rename, with no clean-up after it."""


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch) -> fake.FakeTensorRT:
    return fake.install(monkeypatch)


@pytest.mark.parametrize("kill_at", range(RENAMES + 1))
def test_a_build_killed_mid_swap_leaves_the_old_or_the_new_engine(trt, tmp_path: Path,
                                                                  kill_at: int) -> None:
    import deploy.model_swap as model_swap
    from deploy.build import build_engine

    onnx_path = write_onnx(tmp_path / "pilot.onnx")
    build_engine(onnx_path, tmp_path / "pilot.trt", log=print)  # the old engine: fp32
    calls, replace = [0], os.replace

    def dying_replace(source: Path, target: Path) -> None:
        if calls[0] == kill_at:
            raise Killed
        calls[0] += 1
        replace(source, target)

    def exit_without_cleaning(self: model_swap.ModelSwap, *exc: object) -> None:
        self._lock.__exit__(None, None, None)  # the kernel drops a dead process's lock

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_swap.os, "replace", dying_replace)
        patch.setattr(model_swap.ModelSwap, "__exit__", exit_without_cleaning)
        if kill_at < RENAMES:
            with pytest.raises(Killed):
                build_engine(onnx_path, tmp_path / "pilot.trt", fp16=True, log=print)
        else:
            build_engine(onnx_path, tmp_path / "pilot.trt", fp16=True, log=print)
    engine = load_engine(tmp_path / "pilot.trt")  # finishes a committed swap
    assert engine.precision == ("fp16" if kill_at > COMMIT else "fp32")
    assert load_engine(onnx_path).manifest.engine["precision"] == engine.precision
    lines: list[str] = []
    build_engine(onnx_path, tmp_path / "pilot.trt", log=lines.append)  # the next build
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".next", ".partial"))]
    removed = [line for line in lines if line.startswith("removed")]
    # killed at the commit: the engine's .next and the manifest's .partial; before any
    # rename: the two .partial files; after the commit point: nothing left to remove
    assert len(removed) == {0: 2, 1: 2}.get(kill_at, 0), removed


def test_a_model_exported_again_during_the_build_keeps_its_manifest(
        trt, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy.build import BuildError, build_engine

    onnx_path = write_onnx(tmp_path / "pilot.onnx")
    build = fake.Builder.build_serialized_network

    def export_meanwhile(self: fake.Builder, *args: object) -> object:
        save_manifest(dataclasses.replace(LINEAR, training={"run": 2}), onnx_path)
        return build(self, *args)

    monkeypatch.setattr(fake.Builder, "build_serialized_network", export_meanwhile)
    with pytest.raises(BuildError, match="exported again while the engine was built"):
        build_engine(onnx_path, tmp_path / "pilot.trt", log=print)
    assert not (tmp_path / "pilot.trt").exists()
    assert load_manifest(onnx_path).training == {"run": 2}
