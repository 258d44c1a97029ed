"""Console logging (car.logs): one line a record without --debug, the traceback with it, and
a flood of log lines held to a bounded few."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from car import logs
from car.logs import ConsoleHandler, FloodFilter, OneLineFormatter, summary

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record_with(exc: BaseException, msg: str = "Error handling request") -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        info = sys.exc_info()
    return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, msg, None, info)


@pytest.fixture
def logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    log = logging.getLogger(f"test_logs.{request.node.name}")
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)


def test_a_record_with_an_exception_is_one_line_without_debug() -> None:
    record = record_with(ConnectionResetError("peer gone"))
    assert OneLineFormatter().format(record) == ("car: ERROR: Error handling request: "
                                                 "ConnectionResetError: peer gone")


def test_debug_shows_the_traceback() -> None:
    text = OneLineFormatter(debug=True).format(record_with(ConnectionResetError("peer gone")))
    assert text.startswith("car: ERROR: Error handling request\nTraceback (most recent call")
    assert text.endswith("ConnectionResetError: peer gone")


def test_asyncio_style_messages_keep_their_first_line_and_escape_control_characters() -> None:
    record = record_with(OSError(24, "Too many open files"),
                         "socket.accept() out of system resource\nsocket: <socket fd=6>")
    assert summary(record) == ("socket.accept() out of system resource: OSError: [Errno 24] Too "
                               "many open files")
    record = record_with(ValueError("line one\nline two \x1b[2J"), "bad \x1b[31m")
    line = OneLineFormatter().format(record)
    assert "\n" not in line and "\x1b" not in line and "line one line two" in line


def test_a_flood_of_identical_records_prints_a_bounded_few(
        logger: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    handler = ConsoleHandler(clock=clock)
    logger.addHandler(handler)
    error = ConnectionResetError("peer gone")
    for i in range(10_000):
        clock.now = 100.0 + i * 1e-4  # 10,000 records in one second
        logger.error("Error handling request", exc_info=error)
    clock.now = 101.5
    logger.error("Error handling request", exc_info=error)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "car: ERROR: Error handling request: ConnectionResetError: peer gone",
        "car: ERROR: Error handling request: ConnectionResetError: peer gone (9999 more "
        "suppressed)",
    ]


def test_a_flood_of_different_lines_is_bounded_too(
        logger: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    logger.addHandler(ConsoleHandler(clock=clock, burst=20))
    for i in range(10_000):
        logger.warning("client %d went away", i)
    clock.now += 1.0
    logger.warning("the last one")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 21
    assert lines[-1] == "car: WARNING: the last one (9980 other log lines suppressed)"


def test_held_lines_are_counted_at_the_end() -> None:
    clock = Clock()
    flood = FloodFilter(clock=clock)
    record = record_with(OSError("x"))
    assert [flood.filter(record) for _ in range(5)] == [True, False, False, False, False]
    assert flood.take_held() == 4 and flood.take_held() == 0


def test_a_host_that_configured_logging_keeps_it() -> None:
    """Under pytest (or an application) the root logger has handlers: main() leaves them."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    assert before and logs.configure(verbose=True) is False
    assert root.handlers == before and root.level == level


FLOOD_SCRIPT = """
import logging, sys, threading
import car.commands.config as config_commands
from car import cli

def flood(args):
    log = logging.getLogger("aiohttp.server")
    for _ in range(10_000):
        try:
            raise ConnectionResetError("peer gone")
        except OSError:
            log.exception("Error handling request")
    logging.getLogger("car.test").info("an info line")
    thread = threading.Thread(target=lambda: 1 / 0, name="camera")
    thread.start()
    thread.join()

config_commands.show_config = flood
sys.exit(cli.main(sys.argv[1:] + ["config", "show"]))
"""


@pytest.mark.parametrize("flags", [[], ["-v"], ["--debug"]])
def test_the_cli_prints_a_flood_of_logged_tracebacks_as_a_few_lines(flags: list[str]) -> None:
    """The real `car` process: aiohttp-style records and a dying thread, through main()."""
    done = subprocess.run([sys.executable, "-c", FLOOD_SCRIPT, *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    lines = done.stderr.splitlines()
    if "--debug" in flags:
        assert done.stderr.count("Traceback (most recent call last)") == 2
        assert lines[0] == "car: ERROR: Error handling request" and len(lines) < 40
        return
    expected = ["car: ERROR: Error handling request: ConnectionResetError: peer gone",
                "car: ERROR: thread camera stopped: ZeroDivisionError: division by zero",
                "car: 9999 repeated log line(s) were suppressed"]
    if "-v" in flags:
        expected.insert(1, "car: INFO: an info line")
    assert lines == expected
