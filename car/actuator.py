"""Actuators: the Actuator protocol, and the dry-run one used when no motors are attached.

The serial microcontroller driver implements the same protocol in ``car.mcu.actuator``;
the simulators' actuators live with their worlds (``car.sim.link``, ``car.sim.donkey.link``).
The drive loop is the only caller of ``send``; the run summary and the web page's status
read ``health()`` and ``status()`` without knowing which actuator they have.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from car.errors import CarError
from car.frames import NEUTRAL, Command
from car.health import Health

log = logging.getLogger(__name__)


class ActuatorError(CarError):
    """Actuators that cannot be reached; the loop goes to its safe state."""


class Actuator(Protocol):
    """``send(command)`` once per tick; ``close()`` leaves the outputs neutral.

    ``send`` must be safe to call from another thread: the loop's watchdog sends neutral
    from its own when a tick hangs. ``fault`` says why the actuator cannot be trusted now
    (a lost link that is reconnecting), or is None; the loop then commands neutral.
    ``describe()`` says where commands go, ``health()`` gives the summary's section (None:
    nothing to report) and ``status()`` the fields the web page's status panel shows.
    """

    @property
    def fault(self) -> str | None: ...

    def send(self, command: Command) -> None: ...

    def describe(self) -> str: ...

    def health(self) -> Health | None: ...

    def status(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class DryRunActuator:
    """Sends nothing anywhere: keeps the last command and a count, for a drive with a real
    camera and no motors (and for tests)."""

    fault: str | None = None

    def __init__(self) -> None:
        self.last = NEUTRAL
        self.sent = 0
        self.history: list[Command] | None = None  # set to [] to keep every command

    def send(self, command: Command) -> None:
        self.last = command
        self.sent += 1
        if self.history is not None:
            self.history.append(command)

    def describe(self) -> str:
        return "nowhere (dry run)"

    def health(self) -> Health | None:
        return None

    def status(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.last = NEUTRAL
