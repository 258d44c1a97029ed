"""Reading `car.toml`: find the file, apply ``--set section.key=value`` overrides, and check
every key, type, bound and choice, so a mistake is a ConfigError naming the key and the file."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from car.config.sections import SECTIONS, Config
from car.config.toml_text import NotAValue, parse_toml, parse_toml_value
from car.datafile import clip, read_text
from car.errors import ConfigError

DEFAULT_FILE = "car.toml"
ENV_VAR = "CAR_CONFIG"
MAX_FILE_BYTES = 1024 * 1024  # the fully commented default file is about 10 kB
MAX_STRING_CHARS = 4096  # a string setting longer than this is a mistake
MAX_INT = 2 ** 63 - 1  # TOML's integers are 64-bit


def find_config_file(explicit: str | os.PathLike | None) -> Path | None:
    """The file to read: the explicit one, else $CAR_CONFIG, else ./car.toml if present."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found; create one with `car config init`")
        return path
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"{path}: config file named by ${ENV_VAR} not found")
        return path
    path = Path(DEFAULT_FILE)
    return path if path.is_file() else None


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read the config file (see find_config_file), then apply ``section.key=value`` overrides."""
    file = find_config_file(path)
    values: dict[str, dict[str, Any]] = {}
    origins: dict[str, str] = {}  # "section.key" -> where its value came from
    if file is not None:
        text = read_text(file, "config file", ConfigError, MAX_FILE_BYTES)
        values = _check_tree(parse_toml(text, str(file)), str(file))
        origins = {f"{s}.{k}": str(file) for s, table in values.items() for k in table}
    overrides = list(overrides)
    for item in overrides:
        section, key, value = parse_override(item)
        values.setdefault(section, {})[key] = value
        origins[f"{section}.{key}"] = set_flag(item)
    source = str(file) if file else "defaults"
    if overrides:
        source += f" + {len(overrides)} override(s)"
    return build_config(values, origins, source=source)


def parse_override(item: str) -> tuple[str, str, Any]:
    """Split ``section.key=value``; the value is read as a TOML value, else as a plain string."""
    name, sep, text = item.partition("=")
    section, dot, key = name.strip().partition(".")
    where = set_flag(item)
    if not sep or not dot or not key:
        raise ConfigError(f"{where}: expected SECTION.KEY=VALUE, e.g. drive.rate_hz=30")
    check_key(section, key, where)
    is_text = typing.get_type_hints(SECTIONS[section])[key] is str
    try:
        value = parse_toml_value(text, where)
    except NotAValue:
        value = text
    except ConfigError:
        if not is_text:
            raise
        value = text
    if is_text and not isinstance(value, str):
        value = text  # `--set camera.source=true` means the text "true"
    return section, key, value


def set_flag(item: str) -> str:
    """``--set 'section.key=value'`` for messages, a long or odd value clipped."""
    shown = repr(item)
    return f"--set {shown if len(shown) <= 80 and shown.isprintable() else clip(shown, 60)}"


def build_config(values: Mapping[str, Mapping[str, Any]], origins: Mapping[str, str],
                 source: str) -> Config:
    """Make a Config from ``{section: {key: value}}``, checking every type, bound and choice.

    ``origins`` maps ``section.key`` to where the value came from, for error messages.
    """
    sections = {}
    for section, cls in SECTIONS.items():
        given = values.get(section, {})
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in given:
                name = f"{section}.{f.name}"
                kwargs[f.name] = _coerce(given[f.name], hints[f.name], f, name,
                                         origins.get(name, source))
        sections[section] = cls(**kwargs)
    config = Config(**sections, source=source)
    _check_cross_fields(config, source)
    return config


def _check_tree(data: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{where}: unknown section [{clip(section)}]"
                              f"{_suggest(section, SECTIONS)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: '{section}' must be a table ([{section}])")
        for key in table:
            check_key(section, key, where)
        out[section] = dict(table)
    return out


def check_key(section: str, key: str, where: str) -> None:
    """ConfigError (naming ``where``) unless ``section.key`` is a key of car.toml."""
    if section not in SECTIONS:
        raise ConfigError(f"{where}: unknown section '{clip(section)}'"
                          f"{_suggest(section, SECTIONS)}")
    names = [f.name for f in dataclasses.fields(SECTIONS[section])]
    if key not in names:
        raise ConfigError(
            f"{where}: unknown key '{section}.{clip(key)}'{_suggest(key, names, section + '.')}"
        )


def _suggest(word: str, options: Iterable[str], prefix: str = "") -> str:
    if len(word) > 100:
        return ""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _coerce(value: Any, tp: type, f: dataclasses.Field, name: str, where: str) -> Any:
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise ConfigError(
            f"{where}: {name} must be {_TYPE_NAMES[tp]}, got {_show(value)} "
            f"({type(value).__name__})"
        )
    if tp is int and not -MAX_INT - 1 <= value <= MAX_INT:
        raise ConfigError(f"{where}: {name} must be a 64-bit integer, got {_show(value)}")
    if tp is float:
        try:
            value = float(value)
        except OverflowError:  # an integer beyond any float
            raise ConfigError(f"{where}: {name} must be a finite number, got "
                              f"{_show(value)}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {name} must be a finite number, got {_show(value)}")
    if tp is str:
        _check_text(value, name, where)
    meta = f.metadata
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(f"{where}: {name} must be at least {meta['min']}, got {_show(value)}")
    if meta.get("max") is not None and value > meta["max"]:
        raise ConfigError(f"{where}: {name} must be at most {meta['max']}, got {_show(value)}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(
            f"{where}: {name} must be one of {', '.join(meta['choices'])}; got {_show(value)}"
        )
    return value


def _check_text(value: str, name: str, where: str) -> None:
    if len(value) > MAX_STRING_CHARS:
        raise ConfigError(f"{where}: {name} is {len(value)} characters long; at most "
                          f"{MAX_STRING_CHARS}")
    bad = next((c for c in value if c < " " or "\x7f" <= c <= "\x9f" or c in "\u2028\u2029"),
               None)
    if bad is not None:
        raise ConfigError(f"{where}: {name} must be one line of printable text; it holds "
                          f"{bad!a} at position {value.index(bad)}")


def _show(value: Any) -> str:
    """A value for a one-line message: short, whatever it is."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 40:
        return f"an integer of about {int(abs(value).bit_length() * 0.30103) + 1} digits"
    if isinstance(value, (list, dict)):
        return "[...]" if isinstance(value, list) else "{...}"
    text = json.dumps(value[:40]) if isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_cross_fields(config: Config, where: str) -> None:
    s, t = config.steering, config.throttle
    for name, keys, (lo, mid, hi) in (
            ("steering", ("left_us", "center_us", "right_us"),
             (s.left_us, s.center_us, s.right_us)),
            ("throttle", ("reverse_us", "neutral_us", "forward_us"),
             (t.reverse_us, t.neutral_us, t.forward_us))):
        if lo == hi:
            raise ConfigError(f"{where}: {name}.{keys[0]} and {name}.{keys[2]} are both {lo} "
                              f"µs; the two ends must differ (`car calibrate {name}`)")
        if not (lo < mid < hi or lo > mid > hi):
            raise ConfigError(
                f"{where}: {name}.{keys[1]} must lie strictly between {name}.{keys[0]} and "
                f"{name}.{keys[2]}, got {lo}, {mid}, {hi}; recalibrate with "
                f"`car calibrate {name}`")
    lens = config.lens
    if lens.undistort and not (lens.width and lens.height and lens.fx and lens.fy):
        raise ConfigError(f"{where}: lens.undistort is on but the lens is not calibrated; run "
                          "`car calibrate camera` first")
