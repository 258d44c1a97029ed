"""Replacing a model's files and their manifest as one (export, `car build`), so that a kill
at any moment leaves on disk either the old set or the new set, never a mix.

A set is a manifest (``pilot.json``) and the files of the same stem it describes
(``pilot.onnx``, ``pilot.pt2``, ``pilot.trt``). A writer (``ModelSwap``):

1. writes each file as ``.NAME.partial``, then the manifest (which records the files'
   sha256), and fsyncs them all;
2. renames each model file's partial to ``NAME.next``, fsyncs the folder, and renames the
   manifest's partial to ``pilot.json.next``: **the commit point**;
3. rolls forward: renames each ``NAME.next`` to ``NAME``, the manifest last, and fsyncs the
   folder.

``recover`` finishes step 3 for a set whose ``pilot.json.next`` exists (a writer stopped
after its commit point); engines call it before they load, writers before they write.
Without ``pilot.json.next`` the old set is untouched, and only a writer (``clean``) deletes
the uncommitted ``.next`` and ``.partial`` files it finds, never a loader, which could race
with an export running beside a driving car. Writers hold an exclusive ``flock`` on the
folder (where the platform has one), so two never interleave; a loader rolls forward only
if it gets that lock at once, and otherwise leaves the work to the writer holding it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from deploy.manifest import Manifest, manifest_path, manifest_text

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; writers must not overlap there
    fcntl = None  # type: ignore[assignment]

PARTIAL, NEXT, TMP = ".partial", ".next", ".tmp"
# the suffixes of files that writers used to stage as ``.NAME.tmp`` (the checkpoint's still)
TMP_SUFFIXES = (".onnx", ".pt2", ".pt", ".json", ".trt", ".engine", ".plan")
Log = Callable[[str], Any]
logger = logging.getLogger(__name__)


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{PARTIAL}")


def next_path(path: Path) -> Path:
    return path.with_name(f"{path.name}{NEXT}")


def in_set(name: str, manifest: Path) -> bool:
    """Whether the file name ``name`` is the manifest or a file it describes."""
    named = Path(name)
    return name == manifest.name or (named.suffix != "" and named.stem == manifest.stem)


@contextlib.contextmanager
def folder_lock(folder: Path, wait: bool = True, log: Log | None = None) -> Iterator[bool]:
    """Hold the writers' lock on ``folder``; yields False (without it) when ``wait`` is
    False and another process holds it. Not reentrant: never nest two in one process."""
    if fcntl is None:
        yield True
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            held = False
        if not held and wait:
            (log or logger.info)(f"waiting for another export or build writing in {folder}")
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = True
        yield held
    finally:
        os.close(fd)  # releases the lock


def sync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename(source: Path, target: Path) -> None:
    """``os.replace``; a source already gone was renamed by another process finishing the
    same swap."""
    with contextlib.suppress(FileNotFoundError):
        os.replace(source, target)


def _names(folder: Path) -> list[str]:
    try:
        return [entry.name for entry in os.scandir(folder)]
    except OSError:
        return []


def roll_forward(manifest: Path) -> bool:
    """Step 3 for a committed set (``pilot.json.next`` exists); True if there was one.
    The caller holds the folder's lock or is the writer that committed."""
    committed = next_path(manifest)
    if not committed.exists():
        return False
    for name in _names(manifest.parent):
        final = name[:-len(NEXT)]
        if name.endswith(NEXT) and final != manifest.name and in_set(final, manifest):
            _rename(manifest.parent / name, manifest.parent / final)
    _rename(committed, manifest)
    sync_folder(manifest.parent)
    return True


def recover(model_path: str | os.PathLike) -> bool:
    """The loader's side: finish a swap of the set of ``model_path`` that a writer committed
    and did not finish, if no writer is at work there. Never deletes anything."""
    manifest = manifest_path(model_path)
    if not next_path(manifest).exists():
        return False
    try:
        with folder_lock(manifest.parent, wait=False) as held:
            return held and roll_forward(manifest)
    except OSError as exc:  # a read-only folder: load what is there; digests will tell
        logger.warning("cannot finish replacing %s: %s", manifest, exc.strerror or exc)
        return False


def clean(model_path: str | os.PathLike, log: Log | None = None) -> None:
    """The writer's side, under the folder lock: finish a committed swap, or delete what an
    uncommitted one left (and older writers' ``.NAME.tmp`` files), one log line each."""
    log = log or logger.info
    manifest = manifest_path(model_path)
    folder = manifest.parent
    if roll_forward(manifest):
        log(f"finished replacing {manifest} and its model files (a previous export or build "
            "stopped after writing them)")
    for name in _names(folder):
        hidden = name[1:] if name.startswith(".") else None
        if hidden is not None and hidden.endswith(PARTIAL):
            leftover = in_set(hidden[:-len(PARTIAL)], manifest)
        elif hidden is not None and hidden.endswith(TMP):
            final = hidden[:-len(TMP)]
            leftover = in_set(final, manifest) and Path(final).suffix in TMP_SUFFIXES
        else:
            leftover = name.endswith(NEXT) and in_set(name[:-len(NEXT)], manifest)
        if leftover:
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
                log(f"removed {folder / name}, left by an export, build or training that "
                    "was stopped")


class ModelSwap:
    """Writes a set of model files and their manifest, then swaps them in as one::

        with ModelSwap(onnx_path) as swap:
            write(swap.stage(onnx_path)); write(swap.stage(pt2_path))
            swap.commit(manifest)  # records the staged files' sha256

    Entering takes the folder's lock and cleans up after stopped writers; leaving without
    a commit deletes what was staged, and the old set stays as it was."""

    def __init__(self, model_path: str | os.PathLike, log: Log | None = None):
        self.manifest = manifest_path(model_path)
        self.log = log or logger.info
        self.committed = False
        self._staged: list[Path] = []
        self._lock: contextlib.AbstractContextManager[bool] | None = None

    def __enter__(self) -> ModelSwap:
        lock = folder_lock(self.manifest.parent, log=self.log)
        lock.__enter__()
        self._lock = lock
        try:
            clean(self.manifest, self.log)
        except BaseException:
            lock.__exit__(None, None, None)
            raise
        return self

    def stage(self, path: str | os.PathLike) -> Path:
        """Where to write the new ``path`` (a file of this set, not the manifest)."""
        final = Path(path)
        if final == self.manifest or manifest_path(final) != self.manifest:
            raise ValueError(f"{final} is not a model file of {self.manifest}")
        self._staged.append(final)
        return partial_path(final)

    def commit(self, manifest: Manifest) -> None:
        """Write the manifest and swap the staged files and it in (steps 1 to 3)."""
        partial_path(self.manifest).write_text(manifest_text(manifest), encoding="utf-8")
        for final in (*self._staged, self.manifest):
            sync_file(partial_path(final))
        for final in self._staged:
            os.replace(partial_path(final), next_path(final))
        sync_folder(self.manifest.parent)
        os.replace(partial_path(self.manifest), next_path(self.manifest))  # the commit point
        self.committed = True
        roll_forward(self.manifest)

    def __exit__(self, *exc: object) -> None:
        try:
            if not self.committed:
                for final in (*self._staged, self.manifest):
                    partial_path(final).unlink(missing_ok=True)
                    next_path(final).unlink(missing_ok=True)
        finally:
            if self._lock is not None:
                self._lock.__exit__(None, None, None)
                self._lock = None
