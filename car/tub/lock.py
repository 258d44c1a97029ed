"""One writer per tub: an advisory lock that the kernel drops when its process dies."""

from __future__ import annotations

import os
from pathlib import Path

from car.errors import TubError
from car.tub.files import NOFOLLOW, open_for_writing
from car.tub.format import LOCK

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no fcntl; there we do not lock
    fcntl = None  # type: ignore[assignment]


class TubLock:
    """Held while a process changes a tub. A kill -9 releases it; it never goes stale."""

    def __init__(self, tub: Path):
        self.path = tub / LOCK
        self._fd: int | None = open_for_writing(self.path, os.O_RDWR | os.O_CREAT)
        if fcntl is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(self._fd)
            os.close(self._fd)
            self._fd = None
            who = "this process already has it open" if holder == os.getpid() else \
                f"another process (pid {holder or '?'}) is writing it"
            raise TubError(f"{tub}: {who}; close that writer first") from None
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds all the same; only its pid (a hint) is lost

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def lock_holder(tub: Path) -> int | None:
    """The pid writing the tub right now, or None. Creates nothing, changes nothing."""
    if fcntl is None:
        return None
    try:
        fd = os.open(tub / LOCK, os.O_RDONLY | NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or -1
    finally:
        os.close(fd)  # also drops the shared lock if we got it
    return None


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
