"""Opening a pilot for the car: the engine for a model file, refused in one line when it
cannot run here or was trained on frames of another size than the camera gives."""

from __future__ import annotations

import os

from car.errors import CarError
from deploy.engine import Engine, EngineError, load_engine


def open_pilot(path: str | os.PathLike, provider: str | None = None, *,
               frame_size: tuple[int, int] | None = None, threads: int | None = None
               ) -> Engine:
    """The engine for ``path`` (see ``deploy.engine.load_engine``), checked against the
    camera's ``frame_size`` (width, height) when given."""
    try:
        engine = load_engine(path, provider, threads=threads)
    except EngineError as exc:
        raise CarError(str(exc)) from None
    if frame_size is not None:
        try:
            check_frame_size(engine, *frame_size)
        except CarError:
            engine.close()
            raise
    return engine


def check_frame_size(engine: Engine, width: int, height: int) -> None:
    """A model drives only on frames of the size it was trained on."""
    p = engine.manifest.preprocess
    if (p.source_width, p.source_height) != (width, height):
        raise CarError(f"{engine.path.name} was trained on {p.source_width}x{p.source_height} "
                       f"frames but the camera gives {width}x{height}; set [camera] width and "
                       "height in car.toml to match")
