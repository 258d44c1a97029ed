"""Waiting on another thread or process in tests: poll a condition until a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], bool], timeout_s: float = 3.0,
             poll_s: float = 0.005) -> bool:
    """True as soon as ``condition()`` holds; its last value once ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(poll_s)
    return condition()
