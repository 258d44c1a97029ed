"""Latency histograms: constant memory and O(1) per sample, whatever the drive's length.

Buckets grow by 2% from 1 µs to 100 s, so a percentile is within 1% of the exact value;
the minimum, maximum and mean are exact.
"""

from __future__ import annotations

import math

import numpy as np

_LOW_S = 1e-6
_GROWTH = 1.02
_BUCKETS = int(math.log(1e8) / math.log(_GROWTH)) + 2
_LOG_GROWTH = math.log(_GROWTH)


class LatencyHistogram:
    """Durations in seconds; ``percentile_ms(p)`` reads them back in milliseconds."""

    def __init__(self) -> None:
        self.counts = np.zeros(_BUCKETS, np.int64)
        self.count = 0
        self.total_s = 0.0
        self.min_s = math.inf
        self.max_s = 0.0

    def add(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        index = 0 if seconds <= _LOW_S else int(math.log(seconds / _LOW_S) / _LOG_GROWTH) + 1
        self.counts[min(index, _BUCKETS - 1)] += 1
        self.count += 1
        self.total_s += seconds
        self.min_s = min(self.min_s, seconds)
        self.max_s = max(self.max_s, seconds)

    def percentile_ms(self, p: float) -> float:
        """The ``p``-th percentile (0-100), in ms; NaN when empty."""
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(p / 100.0 * self.count))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        # The bucket's geometric middle, kept within what was seen.
        value = self.min_s if index == 0 else _LOW_S * _GROWTH ** (index - 0.5)
        return 1000.0 * min(max(value, self.min_s), self.max_s)

    @property
    def mean_ms(self) -> float:
        return 1000.0 * self.total_s / self.count if self.count else math.nan

    def summary(self) -> dict[str, float | None]:
        """p50, p99, mean and max in ms, rounded to µs (None when empty)."""
        return {"p50": _ms(self.percentile_ms(50)), "p99": _ms(self.percentile_ms(99)),
                "mean": _ms(self.mean_ms), "max": _ms(1000.0 * self.max_s if self.count
                                                      else math.nan)}


def _ms(value: float) -> float | None:
    return round(value, 3) if math.isfinite(value) else None
