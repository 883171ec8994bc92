"""
Tests for L{iocpsvc.bench.histogram}: the load tool's latency histogram --
percentiles from log-scale buckets, exact extremes, merging through JSON.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.bench.histogram import LatencyHistogram


class LatencyHistogramTests(SynchronousTestCase):
    """Percentiles from log-scale buckets, exact maximum, merging."""

    def assertClose(self, value: float, expected: float) -> None:
        """Within one bucket's width (2.3%) of C{expected}."""
        self.assertTrue(abs(value - expected) <= expected * 0.025, f"{value} is not close to {expected}")

    def test_knownPercentiles(self) -> None:
        """1..1000 ms once each: p50 ~ 500 ms, p99 ~ 990 ms (within a bucket), max exact."""
        histogram = LatencyHistogram()
        for ms in range(1, 1001):
            histogram.record(ms / 1000)
        self.assertEqual(histogram.count, 1000)
        p50, p99 = histogram.percentile(50), histogram.percentile(99)
        assert p50 is not None and p99 is not None
        self.assertClose(p50, 0.500)
        self.assertClose(p99, 0.990)
        self.assertEqual(histogram.percentile(100), 1.0)
        self.assertEqual(histogram.percentile(0), 0.001)
        self.assertEqual(histogram.maximum, 1.0)
        self.assertClose(histogram.mean() or 0, 0.5005)

    def test_weights(self) -> None:
        """record(seconds, count) counts C{count} latencies: 99 fast ones and one slow."""
        histogram = LatencyHistogram()
        histogram.record(0.001, 99)
        histogram.record(2.0)
        p50, p99 = histogram.percentile(50), histogram.percentile(99)
        assert p50 is not None and p99 is not None
        self.assertClose(p50, 0.001)
        self.assertClose(p99, 0.001)
        self.assertEqual(histogram.percentile(99.5), 2.0)
        self.assertEqual(histogram.count, 100)

    def test_extremes(self) -> None:
        """Latencies under 1 µs and over 10 s are kept in the end buckets, clamped to min and max."""
        histogram = LatencyHistogram()
        histogram.record(1e-7)
        histogram.record(30.0)
        self.assertEqual(histogram.percentile(1), 1e-7)
        self.assertEqual(histogram.percentile(100), 30.0)

    def test_empty(self) -> None:
        """No latencies: no percentiles."""
        histogram = LatencyHistogram()
        self.assertIsNone(histogram.percentile(50))
        self.assertIsNone(histogram.mean())

    def test_mergeAndJSON(self) -> None:
        """Two halves merged (through JSON, as workers send them) equal the whole."""
        whole, first, second = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
        for ms in range(1, 1001):
            whole.record(ms / 1000)
            (first if ms % 2 else second).record(ms / 1000)
        merged = LatencyHistogram.fromJSON(json.loads(json.dumps(first.toJSON())))
        merged.merge(LatencyHistogram.fromJSON(json.loads(json.dumps(second.toJSON()))))
        self.assertEqual(merged.counts, whole.counts)
        self.assertEqual((merged.count, merged.minimum, merged.maximum), (1000, 0.001, 1.0))
        self.assertEqual(merged.percentile(99), whole.percentile(99))
