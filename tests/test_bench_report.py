"""
Tests for L{iocpsvc.bench.report}: what one process measured, as load
processes send it, and the merged report with its human summary.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.bench.report import ProcessResult, formatReport, makeReport
from iocpsvc.bench.settings import LoadSettings


class ReportTests(SynchronousTestCase):
    """Results through JSON, merged into a report, and its human summary."""

    def test_summary(self) -> None:
        """The human summary names the rates, latencies and errors."""
        result = ProcessResult(connections=2, connected=2, frames=1000, bytes=68000, seconds=1.0)
        result.histogram.record(0.002, 1000)
        result.addError("closed", "connection 1: closed by the server")
        settings = LoadSettings(connections=2)
        text = formatReport(makeReport(settings, [result], wireSize=68))
        self.assertIn("1,000 frames/s", text)
        self.assertIn("p50 2.0", text)
        self.assertIn("closed 1", text)

    def test_resultThroughJSON(self) -> None:
        """A result sent as JSON (as a load process sends it) comes back equal."""
        result = ProcessResult(connections=3, connected=2, frames=10, bytes=680, seconds=1.5, cpuSeconds=0.25)
        result.histogram.record(0.001, 10)
        result.addError("timeout", "connection 2: 1 frames not echoed")
        again = ProcessResult.fromJSON(json.loads(json.dumps(result.toJSON())))
        self.assertEqual(again.toJSON(), result.toJSON())
        self.assertEqual(again.histogram.counts, result.histogram.counts)

    def test_merged(self) -> None:
        """Two processes' results add up; error kinds are reported in their fixed order."""
        first = ProcessResult(connections=2, connected=2, frames=100, bytes=6800, seconds=1.0, cpuSeconds=0.5)
        second = ProcessResult(connections=2, connected=1, frames=300, bytes=20400, seconds=2.0)
        first.histogram.record(0.001, 100)
        second.histogram.record(0.003, 300)
        second.addError("timeout", "connection 3: 2 frames not echoed")
        first.addError("closed", "connection 1: closed by the server")
        report = makeReport(LoadSettings(connections=4), [first, second], processes=2, wireSize=68)
        self.assertEqual((report["frames"], report["bytes"], report["connected"]), (400, 27200, 3))
        self.assertEqual(report["frames_per_second"], 250.0)
        self.assertEqual(report["measured_seconds"], 1.5)
        self.assertEqual(list(report["errors"]), ["closed", "timeout"])
        self.assertEqual(report["client_cpu_seconds"], 0.5)
        self.assertEqual(report["processes"], 2)
