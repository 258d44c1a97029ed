"""One writer per tub: an advisory lock that the kernel drops when its process dies."""

from __future__ import annotations

import os
from pathlib import Path

from car.errors import TubError
from car.tub.format import LOCK

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no fcntl; there we do not lock
    fcntl = None  # type: ignore[assignment]


class TubLock:
    """Held while a process changes a tub. A kill -9 releases it; it never goes stale."""

    def __init__(self, tub: Path):
        self.path = tub / LOCK
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(self._fd)
            self._fd = None
            raise TubError(
                f"{tub}: another process (pid {holder}) is writing this tub; stop it first"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
