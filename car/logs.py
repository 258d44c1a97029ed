"""Console logging for the `car` command: one line a record, whichever logger wrote it.

A record that carries an exception (aiohttp's "Error handling request", asyncio's "Task
exception was never retrieved") prints as its message's first line plus ``ExceptionType:
message``; the traceback only with ``--debug``. A line repeated faster than once a second
is held back and counted ("(N more suppressed)" on the next one shown), and at most
``burst`` lines a second are shown in all, so a flood cannot fill the terminal. A thread
that dies of an exception, or an exception Python can only ignore, is logged the same way.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from car.datafile import clip

LINE_FORMAT = "car: %(levelname)s: %(message)s"
MAX_LINE_CHARS = 500
_KEEP_KEYS = 1000  # lines remembered for the rate limit before old ones are forgotten

ExcInfo = tuple[type[BaseException], BaseException | None, TracebackType | None]


def one_line(text: str) -> str:
    """``text`` safe to print as one line: control characters escaped, at most 4,000 long."""
    return clip(text, 4000)


def exception_line(exc_type: type[BaseException], exc: BaseException | None) -> str:
    """``ExceptionType: message`` on one line."""
    try:
        text = one_line(" ".join(str(exc).split())) if exc is not None else ""
    except Exception:  # an exception whose __str__ fails
        text = "(unprintable)"
    return f"{exc_type.__name__}: {text}" if text else exc_type.__name__


def summary(record: logging.LogRecord) -> str:
    """The record as one line: its message's first line, then its exception's
    ``ExceptionType: message`` if it carries one; control characters escaped."""
    try:
        message = record.getMessage()
    except Exception:  # arguments that do not fit the format
        message = str(record.msg)
    first = message.strip().split("\n", 1)[0].strip()
    exc = record.exc_info
    if exc and exc[0] is not None:
        first = f"{first}: {exception_line(exc[0], exc[1])}" if first else \
            exception_line(exc[0], exc[1])
    return clip(first, MAX_LINE_CHARS)


class OneLineFormatter(logging.Formatter):
    """``car: LEVEL: message``; with ``debug`` the traceback follows, as logging prints it."""

    def __init__(self, debug: bool = False) -> None:
        super().__init__(LINE_FORMAT)
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record) if self.debug else \
            f"car: {record.levelname}: {summary(record)}"
        held = getattr(record, "car_suppressed", 0)
        if held:
            text += f" ({held} more suppressed)"
        dropped = getattr(record, "car_dropped", 0)
        if dropped:
            text += f" ({dropped} other log lines suppressed)"
        return text


class FloodFilter(logging.Filter):
    """Shows a line at most once per ``interval_s`` and at most ``burst`` lines per
    ``interval_s`` in all; what it holds back is counted onto the next line shown."""

    def __init__(self, interval_s: float = 1.0, burst: int = 50,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.burst = burst
        self.clock = clock
        self._lock = threading.Lock()
        self._shown: dict[str, float] = {}  # line -> when it was last shown
        self._held: dict[str, int] = {}  # line -> times held back since
        self._window_s = -float("inf")
        self._in_window = 0
        self._dropped = 0  # held back by the burst limit

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.levelno} {summary(record)}"
        with self._lock:
            now = self.clock()
            last = self._shown.get(key)
            if last is not None and now - last < self.interval_s:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            if now - self._window_s >= self.interval_s:
                self._window_s, self._in_window = now, 0
            if self._in_window >= self.burst:
                self._dropped += 1
                return False
            self._in_window += 1
            self._shown[key] = now
            record.car_suppressed = self._held.pop(key, 0)
            record.car_dropped, self._dropped = self._dropped, 0
            if len(self._shown) > _KEEP_KEYS:
                self._forget(now)
            return True

    def take_held(self) -> int:
        """How many lines were held back and not yet counted onto a line shown; resets."""
        with self._lock:
            held = sum(self._held.values()) + self._dropped
            self._held.clear()
            self._dropped = 0
            return held

    def _forget(self, now: float) -> None:
        for key, shown in list(self._shown.items()):
            if now - shown >= self.interval_s:
                del self._shown[key]
                self._dropped += self._held.pop(key, 0)


class ConsoleHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time, one line a record, rate-limited."""

    def __init__(self, debug: bool = False, **flood: Any) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(OneLineFormatter(debug))
        self.flood = FloodFilter(**flood)
        self.addFilter(self.flood)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)

    def close(self) -> None:
        """At exit (logging.shutdown): say how many lines were held back and never shown."""
        held = self.flood.take_held()
        if held:
            with contextlib.suppress(OSError, ValueError):  # stderr already closed
                print(f"car: {held} repeated log line(s) were suppressed", file=sys.stderr)
        super().close()


def configure(verbose: bool = False, debug: bool = False) -> bool:
    """Log to the console as above, at INFO with ``verbose``, else WARNING; also route the
    exceptions of dying threads and ignored exceptions through it. Does nothing when the
    host (an application, pytest) has put its own handlers on the root logger; returns
    whether it configured."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, ConsoleHandler)]:
        root.removeHandler(handler)
    if root.handlers:
        return False
    root.addHandler(ConsoleHandler(debug))
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    threading.excepthook = _thread_died
    sys.unraisablehook = _unraisable
    return True


def _thread_died(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    info: ExcInfo = (args.exc_type, args.exc_value, args.exc_traceback)
    logging.getLogger("car").error("thread %s stopped", name, exc_info=info)


def _unraisable(args: Any) -> None:
    try:
        what = f": {args.object!r}" if args.object is not None else ""
    except Exception:  # an object whose __repr__ fails
        what = ""
    info: ExcInfo = (args.exc_type, args.exc_value, args.exc_traceback)
    logging.getLogger("car").warning("%s%s", args.err_msg or "Exception ignored in", what,
                                     exc_info=info)
