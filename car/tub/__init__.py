"""Tubs: donkeycar's tub v2 recording format, read, written crash-safely, checked, repaired.

- ``Tub``: read a tub (records, images, sessions, summary);
- ``TubWriter``: record into a tub from the drive loop (background thread, bounded queue);
- ``TubAppender``: the synchronous writer underneath, with crash recovery on open;
- ``check_tub`` / ``repair_tub``: `car tub check [--repair]`.
"""

from car.tub.appender import TubAppender
from car.tub.reader import Tub
from car.tub.writer import TubWriter, WriterStats

__all__ = ["Tub", "TubAppender", "TubWriter", "WriterStats"]
