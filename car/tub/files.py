"""Writing a tub's files: never through a symlink, and whole or not at all.

Every open for writing uses ``O_NOFOLLOW``, so a link planted in a tub cannot make a writer
change a file outside it (the writers also refuse such a tub on open: see
``car.tub.scan.require_inside``). A write that fails (a full disk, say) raises a TubError
that names the file and says what is left, and what it says is true: ``atomic_write``
leaves the old content in place, ``append`` cuts the file back to its old length.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from car.errors import TubError

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # absent on Windows: there the checks on open stand alone
UNCHANGED = "nothing was lost: it holds what it held before"
FIX_LINK = "replace the link with a regular copy of what it points to, then run again"


def link_what(path: Path) -> str:
    """``is a symlink to TARGET``."""
    try:
        return f"is a symlink to {os.readlink(path)}"
    except OSError:
        return "is a symlink"


def link_error(path: Path, what: str | None = None) -> TubError:
    """The refusal for a tub file that is a symlink (or, as ``what`` says, not a regular
    file or folder)."""
    what = what or link_what(path)
    if what.startswith("is a symlink"):
        return TubError(f"{path} {what}: a tub's files must be inside it; {FIX_LINK}")
    return TubError(f"{path} {what}: a tub's files must be regular files inside it; move it "
                    "out of the tub, then run again")


def write_error(path: Path, exc: OSError, kept: str) -> TubError:
    """A failed write as one line: which file, why, what is left (``kept``), what to do."""
    reason = exc.strerror or str(exc)
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    hint = "free some disk space and run again" if full else "check the disk, then run again"
    return TubError(f"{path}: could not be written ({reason}); {kept}; {hint}")


def refuse_link(path: Path) -> None:
    """Raise ``link_error`` if ``path`` is a symlink (the folder images are written into)."""
    if path.is_symlink():
        raise link_error(path)


def open_for_writing(path: Path, flags: int, kept: str = "nothing was changed") -> int:
    """``os.open`` that never follows a symlink; failures name the file (FileExistsError,
    which callers of ``O_EXCL`` expect, is raised as it is)."""
    try:
        return os.open(path, flags | NOFOLLOW, 0o644)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP or path.is_symlink():
            raise link_error(path) from None
        raise write_error(path, exc, kept) from None


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def temp_name(path: Path) -> Path:
    """Where ``atomic_write`` stages ``path``."""
    return path.with_name(path.name + ".tmp")


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file so that a crash or a failure at any point leaves the old or the new
    content. A failure removes the temp file and raises a TubError naming ``path``."""
    tmp = temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP or tmp.is_symlink():
            raise link_error(tmp) from None
        raise write_error(path, exc, UNCHANGED) from None
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc, UNCHANGED) from None
    fsync_dir(path.parent)


def append_at(fd: int, path: Path, data: bytes, size: int) -> None:
    """Append ``data`` to the file open as ``fd`` (``O_APPEND``), ``size`` bytes long so far.

    A failure cuts the file back to ``size`` bytes, so no torn line is left behind.
    """
    try:
        write_all(fd, data)
    except OSError as exc:
        try:
            os.ftruncate(fd, size)
        except OSError:
            raise write_error(path, exc, "its last line may be torn; the next open of the "
                              "tub removes it (kept in repair_log.jsonl)") from None
        raise write_error(path, exc, "nothing was lost: it was cut back to what it held "
                          "before") from None


def append(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (created if need be) and make it durable."""
    fd = open_for_writing(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        append_at(fd, path, data, os.fstat(fd).st_size)
        sync(fd, path)
    finally:
        os.close(fd)


def sync(fd: int, path: Path) -> None:
    """``os.fsync``; a failure names the file."""
    try:
        os.fsync(fd)
    except OSError as exc:
        raise write_error(path, exc, "what was written before its last sync is safe") from None


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (new names, renames) durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (and Windows) cannot fsync a directory
    finally:
        os.close(fd)
