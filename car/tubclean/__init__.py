"""`car tub clean`: a web page to review a tub (frames, the steering and throttle over the
whole tub, a pilot's predictions) and soft-delete or restore ranges of it, with undo.

``edits.py`` holds the tub's state and the edits (through ``car.tub.marks``, as `car tub
delete` makes them), ``server.py`` the page's server (the drive page's token rules),
``static/`` the page.
"""

from car.tubclean.edits import CleanSession
from car.tubclean.server import CleanServer

__all__ = ["CleanServer", "CleanSession"]
