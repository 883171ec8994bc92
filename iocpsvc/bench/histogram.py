"""
The load tool's latency histogram: fixed memory however long a run is, and
a JSON form, so that load processes can send theirs to the parent, which
merges them (L{iocpsvc.bench.report.makeReport}).
"""

from __future__ import annotations

import math
from typing import Any


class LatencyHistogram:
    """
    Latencies in log-scale buckets from 1 µs to 10 s, 100 buckets per
    decade (each 2.3% wide), so memory stays fixed however long a run is.
    A percentile is the geometric middle of its bucket (within 1.2% of the
    true value), clamped to the exact minimum and maximum, which are kept
    (and are what p0 and p100 report).

    Bucket 0 holds latencies below 1 µs, the last one those of 10 s and
    more.
    """

    LOWEST = 1e-6
    PER_DECADE = 100
    DECADES = 7
    BUCKETS = PER_DECADE * DECADES + 2

    __slots__ = ("counts", "count", "total", "minimum", "maximum")

    def __init__(self) -> None:
        self.counts = [0] * self.BUCKETS
        self.count = 0
        self.total = 0.0
        self.minimum = math.inf
        self.maximum = 0.0

    def record(self, seconds: float, count: int = 1) -> None:
        """Count C{count} latencies of C{seconds} each."""
        if seconds >= 1e-6:
            index = int(math.log10(seconds * 1e6) * 100) + 1
            if index > 701:
                index = 701
        else:
            index = 0
        self.counts[index] += count
        self.count += count
        self.total += seconds * count
        if seconds > self.maximum:
            self.maximum = seconds
        if seconds < self.minimum:
            self.minimum = seconds

    def bucketValue(self, index: int) -> float:
        """The value a percentile falling in bucket C{index} reports."""
        if index == 0:
            return self.LOWEST / 2
        return self.LOWEST * 10 ** ((index - 0.5) / self.PER_DECADE)

    def percentile(self, percent: float) -> float | None:
        """
        The latency below which C{percent}% of the recorded ones fall, in
        seconds; C{None} when nothing was recorded.
        """
        if not self.count:
            return None
        rank = math.ceil(self.count * percent / 100)
        if rank <= 0:
            return self.minimum
        if rank >= self.count:
            return self.maximum
        seen = 0
        last = len(self.counts) - 1
        for index, bucketCount in enumerate(self.counts):
            seen += bucketCount
            if seen >= rank:
                # Below 1 µs or from 10 s on, the exact extremes are the best figures there are.
                if index == 0:
                    return self.minimum
                if index == last:
                    return self.maximum
                return min(self.maximum, max(self.minimum, self.bucketValue(index)))
        return self.maximum

    def mean(self) -> float | None:
        """The mean latency in seconds; C{None} when nothing was recorded."""
        return self.total / self.count if self.count else None

    def merge(self, other: LatencyHistogram) -> None:
        """Add C{other}'s latencies to this histogram."""
        for index, bucketCount in enumerate(other.counts):
            if bucketCount:
                self.counts[index] += bucketCount
        self.count += other.count
        self.total += other.total
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)

    def toJSON(self) -> dict[str, Any]:
        """A JSON-able form (only buckets in use), read by L{fromJSON}."""
        return {
            "buckets": {str(i): n for i, n in enumerate(self.counts) if n},
            "count": self.count,
            "total": self.total,
            "min": self.minimum if self.count else None,
            "max": self.maximum,
        }

    @classmethod
    def fromJSON(cls, data: dict[str, Any]) -> LatencyHistogram:
        """The histogram that L{toJSON} described."""
        histogram = cls()
        for index, bucketCount in data["buckets"].items():
            histogram.counts[int(index)] = int(bucketCount)
        histogram.count = int(data["count"])
        histogram.total = float(data["total"])
        histogram.minimum = math.inf if data["min"] is None else float(data["min"])
        histogram.maximum = float(data["max"])
        return histogram
