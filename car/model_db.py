"""The models database: ``<paths.models_dir>/database.jsonl``, one JSON object a line.

`car train` appends a ``"train"`` entry for each model it trains (type, data, validation
metrics, epochs, duration, git commit, where the files are and the sha256 of the model
file); `car sim eval` appends an ``"eval"`` entry for each closed-loop evaluation of a
model file (track, autonomy, laps, lap time against the expert, mean |cte|). `car models`
joins them: one row per model, newest first, with its latest closed-loop score.

An evaluation belongs to a trained model when it ran that very file (same sha256) or a
file built from it: a ``pilot.trt`` shares ``pilot.onnx``'s manifest, whose export section
records the ONNX file's sha256. Lines written before entries had a ``kind`` are read as
training entries. The file is per user (it lives with their models), never in the repo.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from car.datafile import parse_json
from car.errors import CarError
from deploy.manifest import ManifestError, file_sha256, load_manifest

DATABASE_NAME = "database.jsonl"
MAX_LINE_BYTES = 1024 * 1024  # an entry is well under 4 kB


def database_path(models_dir: str | os.PathLike) -> Path:
    return Path(models_dir) / DATABASE_NAME


def record_training(models_dir: str | os.PathLike, model_path: str | os.PathLike,
                    model_type: str, training: dict[str, Any], duration_s: float
                    ) -> dict[str, Any]:
    """Append a training entry for ``model_path`` (the pilot.onnx a training wrote);
    ``training`` is its manifest's training section. Returns the entry."""
    model = Path(model_path).resolve()
    entry = {"kind": "train", "time": _now(), "type": model_type,
             "tubs": list(training.get("tubs", [])), "records": training.get("records", {}),
             "validation": training.get("validation", {}),
             "epochs": training.get("epochs_run"), "duration_s": round(duration_s, 1),
             "git_commit": _git_commit(), "out": str(model.parent), "model": str(model),
             "sha256": file_sha256(model) if model.is_file() else None}
    _append(models_dir, entry)
    return entry


def record_eval(models_dir: str | os.PathLike, model_path: str | os.PathLike,
                eval_json: dict[str, Any]) -> dict[str, Any]:
    """Append an eval entry: ``eval_json`` is `car sim eval --json`'s object for the model
    file ``model_path`` (with ``lap_time_vs_expert_pct`` when run with --vs-expert).
    Returns the entry."""
    model = Path(model_path).resolve()
    try:
        manifest = load_manifest(model)
    except ManifestError:
        manifest = None  # a model without its manifest is still scored, joined by its digest
    entry = {"kind": "eval", "time": _now(), "model": str(model),
             "sha256": file_sha256(model) if model.is_file() else None,
             "source_sha256": manifest.export.get("sha256") if manifest else None,
             "type": manifest.model_type if manifest else None,
             "track": eval_json.get("track"), "autonomy_pct": eval_json.get("autonomy_pct"),
             "laps": eval_json.get("laps"), "laps_completed": eval_json.get("laps_completed"),
             "lap_time_vs_expert_pct": eval_json.get("lap_time_vs_expert_pct"),
             "mean_abs_cte_m": eval_json.get("mean_abs_cte_m")}
    _append(models_dir, entry)
    return entry


def read_entries(path: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """(the entries in file order, how many lines were corrupt and skipped). A line that is
    not a JSON object, or is hostile (over MAX_LINE_BYTES, a number of 5,000 digits, arrays
    nested 5,000 deep), counts as corrupt."""
    entries, corrupt = [], 0
    with open(path, "rb") as f:
        for line in _lines(f, MAX_LINE_BYTES):
            if line is not None and not line.strip():
                continue
            try:
                entry = parse_json(line.decode("utf-8", "replace"), str(path)) if line else None
            except CarError:
                entry = None
            if isinstance(entry, dict):
                entries.append(entry)
            else:
                corrupt += 1
    return entries, corrupt


def _lines(f: BinaryIO, limit: int) -> Iterator[bytes | None]:
    """Each line of ``f``; None for one longer than ``limit`` bytes (read past, not kept)."""
    while line := f.readline(limit + 1):
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := f.readline(limit)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield line


@dataclass
class ModelRow:
    """One model of the database, with its latest closed-loop evaluation if any."""

    time: str
    type: str
    tubs: int
    records: int | None
    steering_mae: float | None
    throttle_mae: float | None
    model: str
    eval: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def model_rows(entries: list[dict[str, Any]]) -> list[ModelRow]:
    """One row per trained model, newest first, joined with its latest evaluation; then
    models that were evaluated here but trained elsewhere."""
    trainings = [e for e in entries if _kind(e) == "train"]
    evals = [e for e in entries if _kind(e) == "eval"]
    rows, claimed = [], set()
    for entry in reversed(trainings):
        matches = [k for k, e in enumerate(evals) if _belongs(e, entry)]
        claimed.update(matches)
        validation = entry.get("validation")
        validation = validation if isinstance(validation, dict) else {}
        tubs = entry.get("tubs")
        rows.append(ModelRow(
            time=str(entry.get("time", "")), type=str(entry.get("type", "?")),
            tubs=len(tubs) if isinstance(tubs, list) else 0,
            records=_record_count(entry.get("records")),
            steering_mae=_number(validation.get("steering_mae")),
            throttle_mae=_number(validation.get("throttle_mae")),
            model=str(entry.get("model") or Path(str(entry.get("out", "?"))) / "pilot.onnx"),
            eval=_score(evals[matches[-1]]) if matches else None))
    latest: dict[str, dict[str, Any]] = {}
    for k, e in enumerate(evals):
        if k not in claimed:
            latest[str(e.get("sha256") or e.get("model"))] = e
    for e in sorted(latest.values(), key=lambda e: str(e.get("time", "")), reverse=True):
        rows.append(ModelRow(time=str(e.get("time", "")), type=str(e.get("type") or "?"),
                             tubs=0, records=None, steering_mae=None, throttle_mae=None,
                             model=str(e.get("model", "?")), eval=_score(e)))
    return rows


def _kind(entry: dict[str, Any]) -> str | None:
    if "kind" in entry:
        return entry["kind"] if entry["kind"] in ("train", "eval") else None
    return "train" if "type" in entry and "validation" in entry else None  # first format


def _belongs(evaluation: dict[str, Any], training: dict[str, Any]) -> bool:
    digest = training.get("sha256")
    if digest:
        return digest in (evaluation.get("sha256"), evaluation.get("source_sha256"))
    out = training.get("out")  # a first-format entry: no digest, only its folder
    return bool(out) and str(Path(str(evaluation.get("model", ""))).parent) == str(out)


def _record_count(records: Any) -> int | None:
    if not isinstance(records, dict):
        return None
    if isinstance(records.get("usable"), int):
        return records["usable"]
    parts = [records.get(k) for k in ("train", "validation")]
    counts = [p for p in parts if isinstance(p, int)]
    return sum(counts) if counts else None


def _score(evaluation: dict[str, Any]) -> dict[str, Any]:
    keys = ("time", "model", "track", "autonomy_pct", "laps", "laps_completed",
            "lap_time_vs_expert_pct", "mean_abs_cte_m")
    numbers = ("autonomy_pct", "lap_time_vs_expert_pct", "mean_abs_cte_m")
    return {k: _number(evaluation.get(k)) if k in numbers else evaluation.get(k) for k in keys}


def _number(value: Any) -> float | None:
    """A number read from the file, or None for anything else (a string, true, a list)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return value if ok else None


def _append(models_dir: str | os.PathLike, entry: dict[str, Any]) -> None:
    """One line, one write; a line left unfinished by a crash is not joined to this one."""
    path = database_path(models_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(entry, default=str) + "\n"
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode("utf-8"))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _git_commit() -> str | None:
    """The commit of the code that trained the model, when it runs from a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None
