"""A JSON file that deploy/ or training/ reads (a model manifest, a frame cache's index): read
with a size bound and parsed so that every way it can be wrong, hostile ones included (a
number of 5,000 digits, arrays nested 5,000 deep, a huge file, bytes that are not UTF-8), is
one line that names the file and, where it can be found, the line and the key.

The same rules as ``car.datafile`` (which deploy may not import: deploy depends on nothing
of ours but the manifest), with one more: nesting deeper than ``MAX_DEPTH`` is refused even
where Python's parser would cope, so that no later ``json.dumps`` or walk of the data can
hit the recursion limit either.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

MAX_BYTES = 16 * 1024 * 1024  # a manifest is a few kB; a bigger file is a mistake
MAX_INT_DIGITS = 100  # longer integers are refused before Python parses them
MAX_DEPTH = 64  # a manifest nests 5 deep

# a string (to its end, or the text's: never rescanned) or a bracket
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)
_DIGITS = re.compile(r"[0-9]+")
_JSON_KEY = re.compile(r'"((?:[^"\\\n]|\\.){1,80})"\s*:')


class JsonFileError(ValueError):
    """A JSON file that cannot be read or parsed; the message is one line naming it."""


class LongNumber(ValueError):
    """An integer longer than MAX_INT_DIGITS, refused before Python parses it."""

    def __init__(self, digits: int) -> None:
        super().__init__(f"a number of {digits} digits")
        self.digits = digits


def parse_int(text: str) -> int:
    """``json.loads``'s ``parse_int`` that raises LongNumber over MAX_INT_DIGITS digits."""
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise LongNumber(digits)
    return int(text)


def read_json(path: str | os.PathLike, what: str = "file",
              error: type[ValueError] = JsonFileError, max_bytes: int = MAX_BYTES) -> Any:
    """The JSON document in the file; every failure is ``error("{path}: ...")``, one line:
    unreadable, too large, not UTF-8, bad syntax (line and column), an integer over
    ``MAX_INT_DIGITS`` digits or nesting over ``MAX_DEPTH`` (line and key)."""
    try:
        with open(path, "rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise error(f"{path}: the {what} is too large (over {max_bytes // 1024} kB); is it "
                    "the right file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"{path}: the {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at "
                    f"line {line})") from None
    return parse_json(text, str(path), what, error)


def parse_json(text: str, where: str, what: str = "file",
               error: type[ValueError] = JsonFileError) -> Any:
    """``json.loads`` with every failure ``error("{where}: ...")`` (see ``read_json``)."""
    deep = nesting_offset(text)
    if deep is not None:  # before parsing: a parser's RecursionError is no message
        raise error(f"{where}: the {what} nests arrays or objects more than {MAX_DEPTH} deep "
                    f"at {json_place(text, deep)}")
    try:
        return json.loads(text, parse_int=parse_int)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: the {what} is not valid JSON (line {exc.lineno} column "
                    f"{exc.colno}: {exc.msg})") from None
    except LongNumber as exc:
        place = json_place(text, long_number_offset(text, exc.digits))
        raise error(f"{where}: the {what} holds {exc} at {place} (at most "
                    f"{MAX_INT_DIGITS})") from None
    except (ValueError, RecursionError) as exc:  # a parser limit not foreseen above
        raise error(f"{where}: the {what} cannot be parsed: {type(exc).__name__}: "
                    f"{str(exc)[:120]}") from None


def nesting_offset(text: str, limit: int = MAX_DEPTH) -> int | None:
    """Where ``[``/``{`` nesting first goes deeper than ``limit`` (brackets inside strings
    do not count), or None."""
    depth = 0
    for match in _TOKENS.finditer(text):
        char = match.group()
        if char in "[{":
            depth += 1
            if depth > limit:
                return match.start()
        elif char in "]}":
            depth = max(0, depth - 1)
    return None


def long_number_offset(text: str, digits: int = 0) -> int | None:
    """Where the longest run of digits starts (at least ``digits`` long), or None."""
    best = max(_DIGITS.finditer(text), key=lambda m: len(m.group()), default=None)
    if best is None or len(best.group()) < digits:
        return None
    return best.start()


def json_place(text: str, offset: int | None) -> str:
    """``line N (key "k")``: the line of ``offset`` and the last object key before it."""
    if offset is None:
        return "an unknown place"
    place = f"line {text.count(chr(10), 0, offset) + 1}"
    keys = list(_JSON_KEY.finditer(text, max(0, offset - 100_000), offset))
    if not keys:
        return place
    key = keys[-1].group(1)
    shown = "".join(c if c.isprintable() else "?" for c in key[:60])
    return f'{place} (key "{shown}")'
