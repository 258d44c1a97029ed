"""The recorder's tub writer: the caller queues, a background thread encodes and writes.

``write()`` only checks and copies the record and puts it on a bounded queue, so the drive
loop never waits for a JPEG encoder or a disk. When the queue is full the record is dropped,
counted in ``stats.dropped`` and logged (at most once a second); it is never silent. An
error on the writer thread (a full disk, say) is raised by the next call into the writer.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from car.errors import TubError
from car.tub.appender import TubAppender
from car.tub.format import DEFAULT_MAX_LEN
from car.tub.values import prepare_record

log = logging.getLogger(__name__)


@dataclass
class WriterStats:
    submitted: int = 0  # records accepted by write()
    written: int = 0  # records on disk (not yet necessarily fsynced)
    dropped: int = 0  # records refused because the queue was full
    max_queue_depth: int = 0

    def summary(self) -> str:
        text = f"{self.written} records written"
        if self.dropped:
            text += f", {self.dropped} DROPPED (queue full: the disk or CPU is too slow)"
        return text


_STOP = object()


class TubWriter:
    """Records into a tub on a background thread. Use as a context manager, or call close()."""

    def __init__(self, path: str | os.PathLike, inputs: list[str] | None = None,
                 types: list[str] | None = None, metadata: Mapping[str, Any] | None = None,
                 *, queue_size: int = 120, jpeg_quality: int = 90,
                 checkpoint_interval_s: float = 1.0, max_len: int = DEFAULT_MAX_LEN,
                 drop_when_full: bool = True, session_info: Mapping[str, Any] | None = None):
        self._appender = TubAppender(path, inputs, types, metadata, jpeg_quality=jpeg_quality,
                                     max_len=max_len, session_info=session_info)
        self.path = self._appender.path
        self.session_id = self._appender.session_id
        self.repairs = self._appender.repairs
        self.input_types = dict(self._appender.input_types)
        self.stats = WriterStats()
        self._interval_s = checkpoint_interval_s
        self._drop_when_full = drop_when_full
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._closed = False
        self._last_drop_log = 0.0
        # Capture times arrive on time.monotonic(); the tub stores wall-clock milliseconds.
        self._wall_minus_mono_s = time.time() - time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"tub-writer:{self.path.name}",
                                        daemon=True)
        self._thread.start()
        atexit.register(self._close_at_exit)  # a program that forgets close() loses nothing
        for line in self.repairs:
            log.warning("repaired tub %s: %s", self.path, line)

    # ------------------------------------------------------------------ caller side

    def write(self, record: Mapping[str, Any], capture_time: float | None = None) -> bool:
        """Queue one record; False if it was dropped because the queue is full.

        With ``drop_when_full=False`` (offline recording, a lock-step simulator) it waits for
        room instead, and never drops.

        ``capture_time`` is the frame's ``time.monotonic()`` capture time; it is stored as
        ``_capture_timestamp_ms`` on the wall clock.
        """
        self._raise_if_failed()
        values = prepare_record(self.input_types, record)
        timestamp_ms = round(time.time() * 1000)
        capture_ms = None
        if capture_time is not None:
            capture_ms = (capture_time + self._wall_minus_mono_s) * 1000.0
        item = ("record", (values, timestamp_ms, capture_ms), None)
        self.stats.submitted += 1
        if not self._drop_when_full:
            self._put_waiting(item)
            self._note_depth()
            return True
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.stats.submitted -= 1
            self.stats.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log >= 1.0:
                self._last_drop_log = now
                log.warning("tub writer queue full: %d records dropped so far (%s)",
                            self.stats.dropped, self.path)
            return False
        self._note_depth()
        return True

    def _note_depth(self) -> None:
        depth = self._queue.qsize()
        if depth > self.stats.max_queue_depth:
            self.stats.max_queue_depth = depth

    def delete_last(self, count: int) -> Future[list[int]]:
        """Soft-delete the last ``count`` records, after those already queued."""
        return self._command("delete_last", count)

    def erase_last(self, count: int) -> Future[list[int]]:
        """Soft-delete the last ``count`` records of this session, after those queued."""
        return self._command("erase_last", count)

    def delete(self, indexes: Iterable[int]) -> Future[list[int]]:
        return self._command("delete", list(indexes))

    def restore(self, indexes: Iterable[int]) -> Future[list[int]]:
        return self._command("restore", list(indexes))

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far is written and durable."""
        self._command("checkpoint", None).result(timeout)

    def _command(self, name: str, arg: Any) -> Future[Any]:
        self._raise_if_failed()
        future: Future[Any] = Future()
        self._put_waiting((name, arg, future))  # commands are rare: they wait for room
        return future

    def _put_waiting(self, item: tuple[Any, Any, Any]) -> None:
        while True:
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                self._raise_if_failed()

    def _stopped(self) -> TubError:
        error = TubError(f"{self.path}: the tub writer stopped: {self._error}; records "
                         "before the error are safe")
        error.__cause__ = self._error
        return error

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._stopped()
        if self._closed:
            raise TubError(f"{self.path}: the tub writer is closed")
        if not self._thread.is_alive():
            raise TubError(f"{self.path}: the tub writer thread has died; records before "
                           "this are safe; reopen the tub")

    def close(self) -> WriterStats:
        """Write everything still queued, make it durable, release the tub."""
        if self._closed:
            return self.stats
        self._closed = True
        atexit.unregister(self._close_at_exit)
        while self._thread.is_alive():  # it drains the queue, even after an error
            try:
                self._queue.put((_STOP, None, None), timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join()
        if self.stats.dropped:
            log.warning("%s: %s", self.path, self.stats.summary())
        if self._error is not None:
            raise self._stopped()
        return self.stats

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except TubError as exc:
            log.error("%s", exc)

    def __enter__(self) -> TubWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        appender = self._appender
        next_checkpoint = time.monotonic() + self._interval_s
        while True:
            timeout = max(0.0, next_checkpoint - time.monotonic())
            try:
                kind, arg, future = self._queue.get(timeout=timeout)
            except queue.Empty:
                kind, arg, future = "checkpoint", None, None
            if kind is _STOP:
                break
            if future is not None and not future.set_running_or_notify_cancel():
                continue  # the caller cancelled this command before it ran
            if self._error is not None:  # after a failure, refuse everything until close()
                if future is not None:
                    future.set_exception(self._stopped())
                continue
            try:
                result = None
                if kind == "record":
                    appender.append(*arg)
                    self.stats.written += 1
                elif kind == "checkpoint":
                    next_checkpoint = 0.0  # now
                else:
                    result = getattr(appender, kind)(arg)
                if time.monotonic() >= next_checkpoint:
                    appender.checkpoint()
                    next_checkpoint = time.monotonic() + self._interval_s
            except BaseException as exc:  # reported to the caller by its next call
                self._error = exc
                log.error("tub writer for %s stopped: %s", self.path, exc)
                result = None
            if future is not None:
                if self._error is None:
                    future.set_result(result)
                else:
                    future.set_exception(self._stopped())
        try:
            appender.close()
        except BaseException as exc:
            if self._error is None:
                self._error = exc
