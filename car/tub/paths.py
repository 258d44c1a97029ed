"""Tub folders from what a user typed: paths, or globs that must match something."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from car.errors import TubError


def expand_paths(patterns: Sequence[str]) -> list[Path]:
    """Tub paths from arguments that may be globs; a glob that matches nothing is an error."""
    paths: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_dir())
            if not matches:
                raise TubError(f"{pattern}: matches no folder")
            paths += matches
        else:
            paths.append(Path(pattern))
    return paths
