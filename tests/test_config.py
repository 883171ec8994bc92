"""
Tests for L{iocpsvc.config}: the C{--worker-of} argument a
parent passes to each worker.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.config import parseWorkerOf, workerOfArgument


class WorkerOfTests(SynchronousTestCase):
    """The --worker-of argument."""

    def test_workerOf(self) -> None:
        """The parent's --worker-of value parses into index, node id and socket modes."""
        self.assertEqual(parseWorkerOf("2:11:reuseport:128,shared:0"), (2, 11, ["reuseport:128", "shared:0"]))

    def test_roundTrip(self) -> None:
        """What the parent builds is what the worker reads."""
        value = workerOfArgument(3, 12, ["reuseport:4096", "shared:0"])
        self.assertEqual(value, "3:12:reuseport:4096,shared:0")
        self.assertEqual(parseWorkerOf(value), (3, 12, ["reuseport:4096", "shared:0"]))

    def test_notFromAParent(self) -> None:
        """Anything else is a ValueError (which tap.py reports as a usage error)."""
        for value in ("", "1", "one:2:shared:0", "1:x:shared:0"):
            self.assertRaises(ValueError, parseWorkerOf, value)
