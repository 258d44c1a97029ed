"""The web controller: a page served by the car (live video, joystick, keyboard, gamepad,
mode, recording, throttle limit, e-stop, status) that drives it over a WebSocket.

See ``controller.py`` for the loop's side, ``state.py`` for the safety rules (failsafe,
arming, a new owner's consent, user mode when the watcher is lost, coalesced requests and
the latched e-stop), ``server.py`` for the network's (ownership, reclaim, flood limits) and
``messages.py`` for what the page may send.
"""

from car.controllers.web.controller import WebController

__all__ = ["WebController"]
