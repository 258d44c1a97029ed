"""What every engine shares: ``ManifestEngine`` and ``EngineError``.

One model file plus its manifest in, a pilot that maps camera frames to (steering,
throttle) out. The base class holds what the manifest defines: the numpy/OpenCV
preprocessing, the ring of the last T frames for ``3d`` models, the hidden state for
``rnn`` models, the checks that the model file is the one its manifest records (sha256,
read once a swap an export left committed is finished: deploy.model_swap) and takes the
inputs and gives the outputs its manifest names, the output columns by name, and a warm-up
on load. A concrete engine
(onnx_engine, tensorrt_engine, torch_engine) only says how to run one step of the model
(``_run``) on its runtime and how to release that runtime (``close``).

The concrete engines import this module; deploy.engine (the Engine protocol and
``load_engine``) imports them. Nothing here imports a runtime library.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deploy.manifest import Manifest, ManifestError, file_sha256, load_manifest, manifest_path
from deploy.model_swap import next_path, recover

TENSORRT_SUFFIXES = (".trt", ".engine", ".plan")
MODEL_SUFFIXES = (".onnx", *TENSORRT_SUFFIXES, ".pt2")
WARM_UP_RUNS = 3
SWAP_TRIES, SWAP_WAIT_S = 5, 0.1  # a pair caught mid-swap is read again, this many times
Identity = tuple[tuple[int, int, int] | None, ...]


def _identity(*paths: Path) -> Identity:
    """What changes when a file is replaced (inode, mtime, size), per path; None if absent."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


class EngineError(RuntimeError):
    """A model that cannot be loaded or run here. The message says what to do."""


def _fixed(dim: object) -> int | None:
    """A declared dimension as an int, or None when symbolic (a name, None or -1)."""
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 else None


class ManifestEngine:
    """What every engine shares; subclasses implement ``_input_shapes``,
    ``_output_shapes`` and ``_run``, and extend ``close`` to release their runtime."""

    name = "engine"
    provider = "cpu"
    precision = "fp32"
    # (manifest section, key) whose sha256 names the model file, or None
    digest_key: tuple[str, str] | None = None
    digest_required = False  # refuse a manifest that records no digest for the file
    load_bytes = False  # the runtime loads ``self._model_bytes``: the very bytes hashed
    # what to do about a model file that does not match its manifest
    remedy = "the model file and its .json do not belong together (re-export with `car export`)"

    def __init__(self, path: str | os.PathLike):
        self._closed = False
        self._frames: deque[np.ndarray] = deque()
        self._state: dict[str, np.ndarray] = {}
        self.path = Path(path)
        self._model_bytes: bytes | None = None
        if not self.path.is_file() and not recover(self.path):
            raise EngineError(f"{self.path}: no such model file")
        self.manifest: Manifest = self._load_pair()
        try:
            steering, throttle = self.manifest.control_columns()
        except ManifestError as exc:
            raise EngineError(f"{manifest_path(self.path)}: {exc}") from None
        self._steering_column, self._throttle_column = steering, throttle
        self._controls_shape = (1, len(self.manifest.output_names))
        self._frames = deque(maxlen=self.manifest.sequence_length)
        self._outputs = [self.manifest.output_name, *(s.output for s in self.manifest.state)]

    def _load_pair(self) -> Manifest:
        """The manifest, once the model file is checked against it (``_digest_problem``).
        Finishes a swap a stopped export or build committed (deploy.model_swap) first; a pair
        caught while a writer swaps it is read again. Keeps the identity of the file checked
        (``self._identity``) and, with ``load_bytes``, its bytes (``self._model_bytes``)."""
        paths = (self.path, manifest_path(self.path))
        problem = "the model file kept changing while it loaded"
        for _ in range(SWAP_TRIES):
            recover(self.path)
            before = _identity(*paths)
            try:
                manifest = load_manifest(self.path)
                data = self.path.read_bytes() if self.load_bytes else None
                found = self._digest_problem(manifest, data)
            except ManifestError as exc:
                raise EngineError(str(exc)) from None
            except OSError as exc:
                raise EngineError(f"{self.path}: cannot read the model file: "
                                  f"{exc.strerror or exc}") from None
            if found is None and _identity(*paths) == before:
                self._identity, self._model_bytes = before[0], data
                return manifest
            problem = found or problem
            if _identity(*paths) == before and not next_path(paths[1]).exists():
                break  # nothing is being swapped: the pair is simply wrong
            time.sleep(SWAP_WAIT_S)
        raise EngineError(f"{self.path}: {problem}")

    def _digest_problem(self, manifest: Manifest, data: bytes | None) -> str | None:
        """Why the model file is not the one its manifest records (by sha256), or None."""
        if self.digest_key is None:
            return None
        section, key = self.digest_key
        expected = getattr(manifest, section).get(key)
        name = manifest_path(self.path).name
        if not expected:
            if not self.digest_required:
                return None
            return (f"its manifest {name} records no sha256 for it ({section}.{key}), so "
                    f"nothing pairs the two; {self.remedy}")
        digest = (hashlib.sha256(data).hexdigest() if data is not None
                  else file_sha256(self.path))
        if digest != expected:
            return (f"its manifest {name} belongs to another model file (the sha256 "
                    "differs); copy a model and its .json together")
        return None

    def _check_unchanged(self) -> None:
        """For a runtime that reads the model file itself: EngineError if the file was
        replaced since its digest was checked (an export swapping it in meanwhile)."""
        if _identity(self.path)[0] != self._identity:
            raise EngineError(f"{self.path}: the model file was replaced while it loaded; "
                              "load it again")

    def _ready(self) -> None:
        """Call at the end of a subclass's ``__init__``: check the inputs and outputs, then
        warm up (a model that fails on a blank frame, or whose output does not have the
        manifest's layout, is refused here, not mid-drive)."""
        self._check_inputs()
        self._check_outputs()
        self.reset()
        p = self.manifest.preprocess
        blank = np.zeros((p.source_height, p.source_width, 3), np.uint8)
        try:
            for _ in range(WARM_UP_RUNS):  # first runs pay for allocations, kernel choice
                self.predict(blank)  # infer checks the output's shape each time
        except EngineError:
            raise
        except Exception as exc:  # the runtime's own error types
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise EngineError(f"{self.path}: the model fails on a blank frame: "
                              f"{type(exc).__name__}: {first}") from None
        self.reset()

    # ---------------------------------------------------------------- runtime specific
    def _input_shapes(self) -> dict[str, Sequence[int | str | None]]:
        """Input name → shape as the model file declares it (symbolic dims as str/None)."""
        raise NotImplementedError

    def _output_shapes(self) -> dict[str, Sequence[int | str | None]]:
        """Output name → shape as the model file declares it."""
        raise NotImplementedError

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One step: inputs by name → the outputs named in ``self._outputs``, in order."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the engine holds; it cannot run after. Safe to call twice.
        Subclasses release their runtime first, then call this."""
        self._closed = True
        self._frames.clear()
        self._state = {}

    # ---------------------------------------------------------------- checks at load
    def _check_outputs(self) -> None:
        """The model must give the outputs its manifest names, the controls as one row
        of exactly as many columns as the manifest names (``output_names``)."""
        found = self._output_shapes()
        missing = [name for name in self._outputs if name not in found]
        if missing:
            raise EngineError(f"{self.path}: the model has no output {missing[0]!r} that its "
                              f"manifest names (it has {sorted(found)}); {self.remedy}")
        declared = list(found[self.manifest.output_name])
        if len(declared) != 2:
            raise EngineError(f"{self.path}: its output {self.manifest.output_name!r} is "
                              f"{declared}, not (batch, columns); {self.remedy}")
        self._check_controls_layout([_fixed(d) for d in declared], "declares")

    def _check_controls_layout(self, shape: Sequence[int | None], verb: str) -> None:
        """EngineError unless ``shape`` (None: symbolic) fits (1, len(output_names))."""
        names = self.manifest.output_names
        rows, columns = shape[0], shape[-1]
        if len(shape) == 2 and rows == 1 and columns == len(names):
            return
        if len(shape) != 2:
            problem = f"shape {list(shape)} where (1, {len(names)}) is expected"
        elif columns is not None and columns != len(names):
            problem = (f"{columns} column(s) where its manifest names {len(names)} "
                       f"({', '.join(names)})")
        elif rows is not None and rows != 1:
            problem = f"a batch of {rows} rows where batch 1 is expected"
        else:
            return  # symbolic dimensions: the warm-up runs check the real array
        raise EngineError(f"{self.path}: the model {verb} {self.manifest.output_name!r} with "
                          f"{problem}; {self.remedy}")

    def _check_inputs(self) -> None:
        """The model file must take what its manifest says it takes."""
        m = self.manifest
        expected = {m.input_name: list(m.input_shape),
                    **{st.input: list(st.shape) for st in m.state}}
        found = self._input_shapes()
        for name, shape in expected.items():
            got = found.get(name)
            if got is None or len(got) != len(shape) or any(
                    isinstance(g, int) and g not in (e, -1) for g, e in zip(got, shape)):
                raise EngineError(f"{self.path}: the model's input {name!r} is "
                                  f"{None if got is None else list(got)}, but its manifest "
                                  f"says {shape}; {self.remedy}")
        extra = sorted(set(found) - set(expected))
        if extra:
            raise EngineError(f"{self.path}: the model takes inputs {extra} that its manifest "
                              "does not name; re-export with `car export`")

    # ---------------------------------------------------------------- running
    def reset(self) -> None:
        """Forget temporal state (on a mode change, a reset or a gap in the frames)."""
        self._frames.clear()
        self._state = {s.input: np.zeros(s.shape, np.float32) for s in self.manifest.state}

    def preprocess(self, frame: np.ndarray) -> np.ndarray:
        """One (H, W, 3) uint8 RGB camera frame → the (1, 3, h, w) float32 model input."""
        return self.manifest.preprocess(frame)

    def infer(self, x: np.ndarray) -> tuple[float, float]:
        """Run one preprocessed frame; updates the temporal state. May return NaN."""
        if self._closed:
            raise EngineError(f"{self.path}: the engine was closed; load the model again")
        m = self.manifest
        if m.model_type == "3d":
            if not self._frames:  # start of a stretch: fill the ring with the first frame
                self._frames.extend([x[0]] * m.sequence_length)
            else:
                self._frames.append(x[0])
            x = np.stack(self._frames)[None]
        results = self._run({m.input_name: x, **self._state})
        controls = np.asarray(results[0])
        if controls.shape != self._controls_shape:  # never silently take row 0
            self._check_controls_layout(controls.shape, "gives")
        for s, value in zip(m.state, results[1:]):
            self._state[s.input] = np.asarray(value, np.float32).reshape(s.shape)
        return (float(controls[0, self._steering_column]),
                float(controls[0, self._throttle_column]))

    def predict(self, frame: np.ndarray) -> tuple[float, float]:
        return self.infer(self.preprocess(frame))

    def describe(self) -> str:
        """One line: file, model type, runtime, provider and precision."""
        return (f"{self.path.name} ({self.manifest.model_type}) on {self.name} "
                f"[{self.provider}, {self.precision}]")
