"""TOML text to Python, with every failure a ConfigError naming where it came from and, when
it can be found, the line and the key: tomllib reports a 5,000-digit integer as a bare
ValueError and deep nesting as a RecursionError, with no position; these are found here."""

from __future__ import annotations

import re
import sys
from typing import Any

from car.datafile import clip, line_of, long_number_offset, nesting_offset
from car.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

_KEY = re.compile(r"^[ \t]*([A-Za-z0-9_\-\"'.]+)[ \t]*=", re.M)  # linear: no nested repeats
_HEADER = re.compile(r"^[ \t]*\[\[?([^\[\]\n]+)\]", re.M)
_LONG_INT_DIGITS = 1000  # a ValueError from tomllib with a digit run this long is int()'s


class NotAValue(Exception):
    """The text of a ``--set`` value is not a TOML value (so it is taken as a string)."""


class _Hostile(Exception):
    """Valid-looking TOML that Python cannot take: ``problem`` at ``offset`` (or unknown)."""

    def __init__(self, problem: str, offset: int | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.offset = offset


def parse_toml(text: str, where: str) -> dict[str, Any]:
    """The TOML document ``text``; any failure is ``ConfigError("{where}: ...")``."""
    try:
        return _loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {clip(str(exc), 200)}") from None
    except _Hostile as exc:
        place = "" if exc.offset is None else f"{toml_place(text, exc.offset)}: "
        raise ConfigError(f"{where}: {place}{exc.problem}") from None


def parse_toml_value(text: str, where: str) -> Any:
    """The TOML value ``text`` (a ``--set`` value); NotAValue when it is not one, and a
    hostile one (too long a number, too deep) a ConfigError naming ``where``."""
    try:
        return _loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        raise NotAValue from None
    except _Hostile as exc:
        raise ConfigError(f"{where}: {exc.problem}") from None


def _loads(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise
    except RecursionError:
        raise _Hostile("arrays or tables nested too deeply", nesting_offset(text)) from None
    except ValueError as exc:  # Python's int() refusing a number over its digit limit
        offset = long_number_offset(text, _LONG_INT_DIGITS)
        if offset is None:
            raise _Hostile(f"not valid TOML: {clip(str(exc), 200)}", None) from None
        run = re.match(r"[0-9_]*", text[offset:])
        digits = len(run.group().replace("_", "")) if run else 0
        raise _Hostile(f"a number of {digits} digits is too long", offset) from None


def toml_place(text: str, offset: int) -> str:
    """``line N (section.key)``: the line of ``offset`` and the key whose value holds it."""
    place = f"line {line_of(text, offset)}"
    keys = list(_KEY.finditer(text, 0, offset))
    if not keys:
        return place
    key = keys[-1]
    name = key.group(1).strip()
    headers = list(_HEADER.finditer(text, 0, key.start()))
    if headers:
        name = f"{headers[-1].group(1).strip()}.{name}"
    return f"{place} ({clip(name)})"
