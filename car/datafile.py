"""A data file a user names (car.toml, a track, the models database): read with a size
bound and parsed so that every way it can be wrong, hostile ones included (a number of
5,000 digits, arrays nested 5,000 deep, a 10 MB file, bytes that are not UTF-8), is one
CarError line that names the file and, where it can be found, the line and the key.

The integer guard is ``deploy.json_file``'s (model manifests are read by the same rules);
what differs is the message wording, and that the place finders here serve TOML too
(``car.config.toml_text``): digits may hold ``_``, and every quote style may hold brackets."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

from car.errors import CarError
from deploy.json_file import MAX_INT_DIGITS, LongNumber, parse_int

MAX_BYTES = 16 * 1024 * 1024  # no file of ours is near this; a bigger one is a mistake
DEEP = 100  # nesting deeper than this is where a parser's RecursionError is blamed

_BRACKETS = re.compile(r"[\[\]{}]")
_DIGITS = re.compile(r"[0-9][0-9_]*")
_JSON_KEY = re.compile(r'"((?:[^"\\\n]|\\.){1,80})"\s*:')


def read_text(path: str | os.PathLike, what: str = "file", error: type[CarError] = CarError,
              max_bytes: int = MAX_BYTES) -> str:
    """The file's text, or ``error`` naming it: unreadable, over ``max_bytes`` or not UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a NUL in the path itself
        raise error(f"{clip(os.fspath(path))}: cannot read the {what}: {exc}") from None
    if len(data) > max_bytes:
        limit = f"{max_bytes / 2**20:g} MB" if max_bytes >= 2**20 else f"{max_bytes} bytes"
        raise error(f"{path}: the {what} is too large (over {limit}); is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"{path}: the {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at "
                    f"line {line})") from None


def read_json(path: str | os.PathLike, what: str = "file", error: type[CarError] = CarError,
              max_bytes: int = MAX_BYTES,
              object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    """The JSON document in the file; every failure is ``error`` naming the file."""
    text = read_text(path, what, error, max_bytes)
    return parse_json(text, str(path), error, object_pairs_hook)


def parse_json(text: str, where: str, error: type[CarError] = CarError,
               object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    """``json.loads`` with every failure ``error("{where}: ...")``: bad syntax (its line and
    column), integers over MAX_INT_DIGITS digits and nesting too deep for the parser (their
    line and key), and a ValueError raised by ``object_pairs_hook`` (its message)."""
    try:
        return json.loads(text, parse_int=parse_int, object_pairs_hook=object_pairs_hook)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: bad JSON at line {exc.lineno} column {exc.colno}: "
                    f"{exc.msg}") from None
    except LongNumber as exc:
        place = json_place(text, long_number_offset(text, exc.digits))
        raise error(f"{where}: {place}{exc} is too long (at most {MAX_INT_DIGITS})") from None
    except RecursionError:
        place = json_place(text, nesting_offset(text))
        raise error(f"{where}: {place}arrays or objects nested too deeply") from None
    except ValueError as exc:  # raised by object_pairs_hook
        raise error(f"{where}: bad JSON: {clip(str(exc), 200)}") from None


def nesting_offset(text: str, limit: int = DEEP) -> int | None:
    """Where ``[``/``{`` nesting first goes deeper than ``limit``, or None. Brackets inside
    strings count too: it only points at the place a parser found too deep."""
    depth = 0
    for match in _BRACKETS.finditer(text):
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
    if best is None or len(best.group().replace("_", "")) < digits:
        return None
    return best.start()


def line_of(text: str, offset: int) -> int:
    """The 1-based line number of a character offset."""
    return text.count("\n", 0, offset) + 1


def json_place(text: str, offset: int | None) -> str:
    """``line N (key "k"): ``, the line of ``offset`` and the last object key before it;
    empty when ``offset`` is None."""
    if offset is None:
        return ""
    place = f"line {line_of(text, offset)}"
    keys = list(_JSON_KEY.finditer(text, max(0, offset - 100_000), offset))
    return f'{place} (key "{clip(keys[-1].group(1))}"): ' if keys else f"{place}: "


def clip(text: str, limit: int = 60) -> str:
    """``text`` for a one-line message: control characters escaped, cut to ``limit``."""
    cut = text[:limit]
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    return shown + ("..." if len(text) > limit else "")
