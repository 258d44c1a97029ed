"""Errors a user can act on. Their message is one line: what is wrong, and what to do."""


class CarError(Exception):
    """Base class for every error the CLI reports as a one-line message."""


class ConfigError(CarError):
    """A bad `car.toml` or a bad override flag."""


class TubError(CarError):
    """A tub that cannot be read or written as asked."""


class TrackError(CarError):
    """A track file or spec that cannot be driven or read."""


class SimError(CarError):
    """A simulator setting or request that cannot be honoured."""
