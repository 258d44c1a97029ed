"""The embedded simulator: tracks, vehicle physics, a first-person camera and an expert driver.

Pure numpy/OpenCV, deterministic for a given seed. World frame: x east, y north, metres; yaw
in radians counter-clockwise from +x. Normalised steering +1 turns right (clockwise), as
everywhere in this project; a signed cross-track error is positive right of the centreline.
"""
