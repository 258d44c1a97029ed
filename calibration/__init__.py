"""Calibration: steering and throttle pulse limits and trim, camera intrinsics, into car.toml."""
