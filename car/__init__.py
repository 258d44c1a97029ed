"""The car runtime: camera, drive loop, actuators, controllers, tubs and the `car` CLI.

Conventions used everywhere in this package:
- time comes from ``time.monotonic()``; wall-clock time only where a file format needs it;
- normalised steering and throttle are in [-1, 1], and steering +1 is full right;
- units are part of names (``period_s``, ``steering_us``, ``width_m``).

This package never imports torch.
"""

__version__ = "0.1.0"
