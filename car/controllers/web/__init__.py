"""The web controller: a page served by the car (live video, joystick, keyboard, gamepad,
mode, recording, throttle limit, e-stop, status) that drives it over a WebSocket.

See ``controller.py`` for the loop's side, ``server.py`` for the network's and
``messages.py`` for what the page may send.
"""

from car.controllers.web.controller import WebController

__all__ = ["WebController"]
