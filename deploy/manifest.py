"""The model manifest: ``pilot.json`` next to ``pilot.onnx`` / ``pilot.pt2`` / ``pilot.trt``.

It says everything an engine needs to run the model file and nothing about how it was
built: model type, input shape and preprocessing, sequence length and recurrent state,
outputs and their ranges, plus what it was trained on and how its export was checked.
Versioned: a loader refuses a manifest newer than it understands.

Outputs: the model gives one (1, N) tensor (``output_name``) whose N columns are named by
``output_names``; engines find steering and throttle by the names ``"steering"`` and
``"throttle"``, not by position. ``output_ranges`` gives each column's (low, high) in
normalised units: steering -1 = full left, +1 = full right; throttle -1 = full reverse,
+1 = full forward; a range must lie within [-1, 1] (the tanh head's span), and engines
refuse a manifest whose ranges do not.

A ``categorical`` model declares its bins per column (``"bins": 15``, centred on
``linspace(low, high, bins)`` of the column's range) and names the (1, bins) tensor of its
bin probabilities (``"probabilities": "steering_probs"``); its ``controls`` are already
decoded (``"decode": "expected"``: the expected bin centre), so engines read them like any
other model's. Manifests without bins (every other family) load as before.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploy.json_file import read_json
from deploy.preprocess import Preprocess, PreprocessError

FORMAT = "car-pilot-manifest"
VERSION = 1
MODEL_TYPES = ("linear", "categorical", "resnet18", "resnet34", "3d", "rnn")
MAX_SEQUENCE_LENGTH = 1000  # frames in a 3d model's window; far above any real one
MAX_BINS = 1000  # per output column of a categorical model
DECODE = "expected"  # how a categorical model's controls come from its bins


class ManifestError(ValueError):
    """A manifest that is missing, unreadable, or not one this code understands."""


@dataclass(frozen=True)
class StateTensor:
    """A recurrent state the model takes and returns each step (rnn models)."""

    input: str  # ONNX input name, e.g. "h_in"
    output: str  # ONNX output name, e.g. "h_out"
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Manifest:
    model_type: str
    preprocess: Preprocess
    sequence_length: int = 1  # frames per inference: T for "3d", 1 otherwise
    input_name: str = "image"
    output_name: str = "controls"  # one (batch, columns) tensor; its columns:
    output_names: tuple[str, ...] = ("steering", "throttle")
    output_ranges: tuple[tuple[float, float], ...] = ((-1.0, 1.0), (-1.0, 1.0))
    bins: tuple[int, ...] = ()  # categorical: bins per output column; () otherwise
    probabilities: tuple[str, ...] = ()  # categorical: each column's (1, bins) output
    state: tuple[StateTensor, ...] = ()
    training: dict[str, Any] = field(default_factory=dict)  # tubs, records, metrics, ...
    export: dict[str, Any] = field(default_factory=dict)  # opset, max_abs_diff, ...
    engine: dict[str, Any] = field(default_factory=dict)  # TensorRT version, GPU, precision

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ManifestError(f"unknown model type {self.model_type!r}; known: "
                                f"{', '.join(MODEL_TYPES)}")
        if not 1 <= self.sequence_length <= MAX_SEQUENCE_LENGTH:
            raise ManifestError(f"sequence_length must be 1 to {MAX_SEQUENCE_LENGTH}, got "
                                f"{self.sequence_length}")
        if len(self.output_names) != len(self.output_ranges):
            raise ManifestError("output_names and output_ranges differ in length")
        self._check_bins()

    def _check_bins(self) -> None:
        """A categorical manifest declares whole bins for every column; no other does."""
        if (self.model_type == "categorical") != bool(self.bins):
            raise ManifestError("a categorical model declares the bins of every output column "
                                "and no other model declares any (re-export with `car "
                                "export`)")
        if not self.bins:
            return
        if len(self.bins) != len(self.output_names):
            raise ManifestError(f"bins are declared for {len(self.bins)} of the "
                                f"{len(self.output_names)} output columns; a categorical "
                                "model declares them for every column")
        for name, n in zip(self.output_names, self.bins):
            if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= MAX_BINS:
                raise ManifestError(f"output column {name!r} declares {n!r} bins; a "
                                    f"categorical column has a whole number of bins from 2 "
                                    f"to {MAX_BINS}")
        if len(self.probabilities) != len(self.bins) or not all(
                isinstance(p, str) and p for p in self.probabilities):
            raise ManifestError("a categorical manifest names each column's probabilities "
                                "output (\"probabilities\": \"steering_probs\")")

    def control_columns(self) -> tuple[int, int]:
        """(steering column, throttle column) of the output, found by name; ManifestError
        if either name is missing or a column's range is not within [-1, 1]."""
        names = list(self.output_names)
        if "steering" not in names or "throttle" not in names:
            raise ManifestError(f"the manifest names the output columns {names}; a pilot's "
                                "manifest names one \"steering\" and one \"throttle\" "
                                "column (re-export with `car export`)")
        for name, (low, high) in zip(names, self.output_ranges):
            if not -1.0 <= low <= high <= 1.0:
                raise ManifestError(f"the manifest gives output {name!r} the range "
                                    f"[{low:g}, {high:g}]; ranges are in normalised units "
                                    "within [-1, 1] (re-export with `car export`)")
        return names.index("steering"), names.index("throttle")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The model file's input shape at batch 1: (1, 3, h, w), or (1, T, 3, h, w) for 3d."""
        c, h, w = self.preprocess.input_shape
        if self.model_type == "3d":
            return (1, self.sequence_length, c, h, w)
        return (1, c, h, w)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model_type": self.model_type,
            "input": {"name": self.input_name, "shape": list(self.input_shape),
                      "dtype": "float32", "colour": self.preprocess.colour},
            "preprocess": self.preprocess.to_dict(),
            "sequence_length": self.sequence_length,
            "output": self._output_dict(),
            "state": [asdict(s) | {"shape": list(s.shape)} for s in self.state],
            "training": self.training,
            "export": self.export,
            "engine": self.engine,
        }

    def _output_dict(self) -> dict[str, Any]:
        columns: list[dict[str, Any]] = [
            {"name": n, "range": list(r)} for n, r in zip(self.output_names, self.output_ranges)]
        if not self.bins:
            return {"name": self.output_name, "columns": columns}
        for column, n, probabilities in zip(columns, self.bins, self.probabilities):
            column.update(bins=n, probabilities=probabilities)
        return {"name": self.output_name, "decode": DECODE, "columns": columns}

    @classmethod
    def from_dict(cls, data: Any, where: str = "manifest") -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ManifestError(f"{where}: not a model manifest (no \"format\": \"{FORMAT}\")")
        version = data.get("version")
        if not isinstance(version, int) or version < 1:
            raise ManifestError(f"{where}: bad manifest version {version!r}")
        if version > VERSION:
            raise ManifestError(f"{where}: manifest version {version} is newer than this "
                                f"software understands ({VERSION}); update car")
        try:
            outputs = data["output"]["columns"]
            return cls(
                model_type=data["model_type"],
                preprocess=Preprocess.from_dict(data["preprocess"]),
                sequence_length=int(data.get("sequence_length", 1)),
                input_name=data["input"]["name"],
                output_name=data["output"]["name"],
                output_names=tuple(o["name"] for o in outputs),
                output_ranges=tuple((float(o["range"][0]), float(o["range"][1]))
                                    for o in outputs),
                bins=tuple(o["bins"] for o in outputs if "bins" in o),
                probabilities=tuple(o["probabilities"] for o in outputs
                                    if "probabilities" in o),
                state=tuple(StateTensor(s["input"], s["output"], tuple(s["shape"]))
                            for s in data.get("state", [])),
                training=dict(data.get("training", {})),
                export=dict(data.get("export", {})),
                engine=dict(data.get("engine", {})),
            )
        except (KeyError, TypeError, IndexError, ValueError, OverflowError,
                PreprocessError) as exc:
            if isinstance(exc, ManifestError):  # from __post_init__: say which file
                raise ManifestError(f"{where}: {exc}") from None
            raise ManifestError(f"{where}: malformed manifest: {type(exc).__name__}: "
                                f"{exc}") from None


def manifest_path(model_path: str | os.PathLike) -> Path:
    """The manifest that travels with a model file: same folder, same stem, ``.json``."""
    return Path(model_path).with_suffix(".json")


def load_manifest(model_path: str | os.PathLike) -> Manifest:
    path = manifest_path(model_path)
    if not path.is_file():
        raise ManifestError(f"{path}: the model's manifest is missing; a model file travels "
                            "with its .json manifest (re-export with `car export`)")
    data = read_json(path, "manifest", ManifestError)  # one line naming the file and key
    return Manifest.from_dict(data, str(path))


def manifest_text(manifest: Manifest) -> str:
    """The manifest as the text of its ``.json`` file."""
    return json.dumps(manifest.to_dict(), indent=2) + "\n"


def save_manifest(manifest: Manifest, model_path: str | os.PathLike) -> Path:
    """Write the manifest alone beside the model file, atomically. Export and `car build`,
    which replace a model file with it, go through deploy.model_swap instead."""
    path = manifest_path(model_path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(manifest_text(manifest), encoding="utf-8")
    os.replace(tmp, path)
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file: manifests record it to pair themselves with their model."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
