"""Hot model reload: watch the model file and its manifest; when they change and have
settled, load the new engine on a background thread (warm-up included) and hand it to the
loop, which swaps it in between two ticks. A model that fails to load is reported and the
loop keeps the one it has."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from deploy.engine import Engine
from deploy.manifest import manifest_path

log = logging.getLogger(__name__)
Signature = tuple[tuple[int, int], ...]


def _signature(paths: tuple[Path, ...]) -> Signature:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((-1, -1))
    return tuple(out)


class ModelWatcher:
    """Polls ``path`` (and its manifest) every ``poll_s``; a change that holds still for
    one poll is loaded with ``load(path)`` and passed to ``on_ready(engine)``."""

    def __init__(self, path: str | os.PathLike, load: Callable[[Path], Engine],
                 on_ready: Callable[[Engine], None], poll_s: float = 0.5):
        self.path = Path(path)
        self._paths = (self.path, manifest_path(self.path))
        self._load = load
        self._on_ready = on_ready
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._seen = _signature(self._paths)
        self.reloads = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)

    def start(self) -> ModelWatcher:
        self._thread.start()
        return self

    def check(self) -> bool:
        """One poll; True when a new engine was handed over. (The thread calls this.)"""
        now = _signature(self._paths)
        if now == self._seen or (-1, -1) in now:
            return False  # unchanged, or mid-replacement (a file briefly missing)
        if self._stop.wait(self._poll_s) or _signature(self._paths) != now:
            return False  # still being written: look again next poll
        self._seen = now
        try:
            engine = self._load(self.path)
        except Exception as exc:  # keep driving with the model we have
            self.failures += 1
            log.error("model changed but the new one does not load, keeping the old one: %s",
                      exc)
            return False
        self.reloads += 1
        self._on_ready(engine)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            self.check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
