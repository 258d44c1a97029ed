"""The one config file, `car.toml`, read into frozen dataclasses (one per concern).

Every field carries its help text, so `car config init` writes a fully commented file that
can never drift from the code. An unknown key or a value of the wrong type is a ConfigError
naming the key and the file. Flags override the file through ``--set section.key=value``.

``sections.py`` holds the dataclasses, ``loader.py`` the reading and checking, ``writer.py``
the commented file and in-place updates; every public name is importable from here.
"""

from car.config.loader import (
    DEFAULT_FILE,
    ENV_VAR,
    build_config,
    find_config_file,
    load_config,
    parse_override,
)
from car.config.sections import (
    MAX_LOOP_HZ,
    SECTIONS,
    ActuatorConfig,
    CameraConfig,
    Config,
    DriveConfig,
    GamepadConfig,
    LensConfig,
    PathsConfig,
    Pca9685Config,
    RecordConfig,
    SimConfig,
    SteeringConfig,
    ThrottleConfig,
    WebConfig,
)
from car.config.writer import (
    config_as_dict,
    render_toml,
    update_config_file,
    write_default_config,
)

__all__ = [
    "DEFAULT_FILE", "ENV_VAR", "MAX_LOOP_HZ", "SECTIONS", "ActuatorConfig", "CameraConfig",
    "Config", "DriveConfig", "GamepadConfig", "LensConfig", "PathsConfig", "Pca9685Config",
    "RecordConfig", "SimConfig", "SteeringConfig", "ThrottleConfig", "WebConfig", "build_config",
    "config_as_dict", "find_config_file", "load_config", "parse_override", "render_toml",
    "update_config_file", "write_default_config",
]
