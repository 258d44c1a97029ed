"""`car bench`: preprocessing and inference latency of one model on every engine and
provider this machine has, with the reason for each one it lacks."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from car.latency import LatencyHistogram
from deploy.engine import TENSORRT_SUFFIXES, Engine, EngineError, load_engine


@dataclass
class BenchRow:
    engine: str
    provider: str
    file: str
    load_s: float | None = None
    preprocess_ms: dict[str, Any] | None = None
    infer_ms: dict[str, Any] | None = None
    skipped: str | None = None  # why this engine did not run

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def candidates(model: Path) -> list[tuple[str, Path, str | None]]:
    """(engine kind, file, provider) for the model and its siblings: ONNX Runtime on each
    provider, the exported torch program (``.pt2``), and any TensorRT engine built from it."""
    out: list[tuple[str, Path, str | None]] = []
    stem = model.with_suffix("")
    onnx = stem.with_suffix(".onnx")
    if onnx.is_file():
        for provider in ("cpu", "cuda", "tensorrt"):
            out.append(("onnxruntime", onnx, provider))
    for suffix in TENSORRT_SUFFIXES:
        if stem.with_suffix(suffix).is_file():
            out.append(("tensorrt", stem.with_suffix(suffix), None))
    if stem.with_suffix(".pt2").is_file():
        out.append(("torch", stem.with_suffix(".pt2"), "cpu"))
        out.append(("torch", stem.with_suffix(".pt2"), "cuda"))
    if not out:
        out.append(("?", model, None))
    return out


def _available(kind: str, provider: str | None) -> str | None:
    """None if the engine can be tried here, else why not."""
    if kind == "onnxruntime":
        from deploy.onnx_engine import PROVIDERS, available_providers

        if PROVIDERS[provider or "cpu"] not in available_providers():
            return "provider not in this onnxruntime build"
    if kind == "torch" and importlib.util.find_spec("torch") is None:
        return "torch not installed"  # (no CUDA GPU: the torch engine says so at load)
    if kind == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        return "tensorrt not installed"
    return None


def time_engine(engine: Engine, frames: list[np.ndarray], runs: int
                ) -> tuple[LatencyHistogram, LatencyHistogram]:
    """(preprocess, infer) latency over ``runs`` frames, cycling through ``frames``."""
    pre, inf = LatencyHistogram(), LatencyHistogram()
    engine.reset()
    for k in range(runs):
        t0 = time.perf_counter()
        x = engine.preprocess(frames[k % len(frames)])
        t1 = time.perf_counter()
        engine.infer(x)
        t2 = time.perf_counter()
        pre.add(t1 - t0)
        inf.add(t2 - t1)
    return pre, inf


def bench_model(model: Path, runs: int = 300, seed: int = 0) -> list[BenchRow]:
    rows = []
    frames: list[np.ndarray] | None = None
    for kind, path, provider in candidates(model):
        row = BenchRow(kind, provider or ("gpu" if kind == "tensorrt" else "-"), path.name)
        rows.append(row)
        reason = "no such model file" if kind == "?" else _available(kind, provider)
        if reason:
            row.skipped = reason
            continue
        t0 = time.perf_counter()
        try:
            engine = load_engine(path, provider)
        except EngineError as exc:
            row.skipped = str(exc)
            continue
        row.load_s = round(time.perf_counter() - t0, 3)
        row.provider = engine.provider
        if frames is None:
            p = engine.manifest.preprocess
            rng = np.random.default_rng(seed)
            frames = [rng.integers(0, 256, (p.source_height, p.source_width, 3), np.uint8)
                      for _ in range(8)]
        try:
            pre, inf = time_engine(engine, frames, runs)
        finally:
            engine.close()  # one engine's session or GPU buffers at a time
        row.preprocess_ms, row.infer_ms = pre.summary(), inf.summary()
    return rows


def format_table(rows: list[BenchRow]) -> str:
    """Two header lines: what is timed (in ms, load in s), then the columns."""
    lines = [f"{'':<40}{'preprocess ms':>17}{'inference ms':>19}{'load':>8}",
             f"{'engine':<12}{'provider':<28}{'p50':>9}{'p99':>8}{'p50':>11}{'p99':>8}"
             f"{'s':>8}"]
    for r in rows:
        if r.skipped:
            lines.append(f"{r.engine:<12}{r.provider:<28}  skipped: {r.skipped}")
            continue
        assert r.preprocess_ms is not None and r.infer_ms is not None
        lines.append(f"{r.engine:<12}{r.provider[:27]:<28}{r.preprocess_ms['p50']:>9.3f}"
                     f"{r.preprocess_ms['p99']:>8.3f}{r.infer_ms['p50']:>11.3f}"
                     f"{r.infer_ms['p99']:>8.3f}{r.load_s:>8.2f}")
    return "\n".join(lines)
