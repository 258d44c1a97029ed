"""Writing `car.toml`: the fully commented default file, a config as TOML text, and an
in-place update that keeps the user's lines and comments (calibration writes through it)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from car.config.loader import MAX_FILE_BYTES, check_key, load_config
from car.config.sections import SECTIONS, Config
from car.config.toml_text import parse_toml
from car.datafile import read_text
from car.errors import ConfigError


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def render_toml(config: Config, comments: bool) -> str:
    """TOML text for a config; with comments it is the file `car config init` writes."""
    lines: list[str] = []
    if comments:
        lines += [
            "# car.toml: the one config file of the car. Every key is shown at its default.",
            "# Flags override it: `car ... --set section.key=value`.",
            "# Steering and throttle are normalised to [-1, 1]; steering +1 is full right.",
            "",
        ]
    for section, cls in SECTIONS.items():
        if comments:
            lines.append(f"# {' '.join((cls.__doc__ or '').split())}")  # one line
        lines.append(f"[{section}]")
        values = getattr(config, section)
        for f in dataclasses.fields(cls):
            if comments:
                lines.append(f"# {f.metadata['help']}")
            lines.append(f"{f.name} = {_toml_value(getattr(values, f.name))}")
        lines.append("")
    return "\n".join(lines)


def config_as_dict(config: Config) -> dict[str, dict[str, Any]]:
    """The config as plain nested dicts (no ``source``)."""
    return {section: dataclasses.asdict(getattr(config, section)) for section in SECTIONS}


def write_default_config(path: str | os.PathLike, force: bool = False) -> Path:
    """Write the fully commented default `car.toml`; never overwrite without ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_toml(Config(), comments=True), encoding="utf-8")
    return path


def update_config_file(path: str | os.PathLike, changes: Mapping[str, Mapping[str, Any]]
                       ) -> Config:
    """Set ``{section: {key: value}}`` in a car.toml, keeping every other line and comment.

    The file is created (fully commented, at the defaults) if missing. The new text must load
    as a valid config, or nothing is written; the old file is kept as ``car.toml.bak`` and
    the new one replaces it atomically. Returns the config as written.
    """
    path = Path(path)
    created = not path.exists()
    if created:
        write_default_config(path)
    text = read_text(path, "config file", ConfigError, MAX_FILE_BYTES)
    for section, table in changes.items():
        for key in table:
            check_key(section, key, str(path))
    parse_toml(text, str(path))  # a hostile or broken file is reported as the loader does
    try:
        text = edit_toml(text, changes)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        config = load_config(tmp)  # refuse to write a file that would not load
    except ConfigError as exc:
        tmp.unlink()
        if created:
            path.unlink()  # nothing half-made: no file before, none after
        raise ConfigError(str(exc).replace(str(tmp), str(path))) from None
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    if not created:
        path.with_name(path.name + ".bak").write_bytes(path.read_bytes())
    os.replace(tmp, path)
    return dataclasses.replace(config, source=str(path))


def edit_toml(text: str, changes: Mapping[str, Mapping[str, Any]]) -> str:
    """``text`` with ``{section: {key: value}}`` set through tomlkit, which keeps every
    comment (a key's own trailing one too), the order and the layout: a key is replaced
    where it is, a new key goes at the end of its section, a new section at the end."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        doc = tomlkit.parse(text)
    except (TOMLKitError, ValueError, RecursionError) as exc:
        raise ConfigError(f"not valid TOML, so it cannot be edited ({exc}); fix that line "
                          "or start again with `car config init --force`") from None
    for section, table in changes.items():
        if section not in doc:
            doc.add(tomlkit.nl())
            doc.add(section, tomlkit.table())
        for key, value in table.items():
            doc[section][key] = list(value) if isinstance(value, tuple) else value  # type: ignore[index]
    return tomlkit.dumps(doc)
