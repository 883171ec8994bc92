"""
Tests for L{iocpsvc.bench.settings}: what a load run does, and its limits.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.bench.settings import CLOSE_GRACE, DEFAULT_HOST, DEFAULT_PORT, LoadSettings


class LoadSettingsTests(SynchronousTestCase):
    """Defaults, refused values and the longest a run can take."""

    def test_defaults(self) -> None:
        """Loopback port 9983, 100 connections with 32 frames in flight, 64-byte length frames."""
        settings = LoadSettings()
        self.assertEqual((settings.host, settings.port), (DEFAULT_HOST, DEFAULT_PORT))
        self.assertEqual((settings.connections, settings.inFlight, settings.size), (100, 32, 64))
        self.assertEqual(settings.codec, "length")

    def test_outOfRange(self) -> None:
        """Each out-of-range value is a ValueError."""
        for bad in (
            {"port": 0},
            {"port": 65536},
            {"connections": 0},
            {"inFlight": 0},
            {"size": -1},
            {"duration": 0},
            {"warmup": -1},
            {"drainTimeout": -1},
            {"connectTimeout": 0},
            {"connectBatch": 0},
            {"progressInterval": 0},
        ):
            self.assertRaises(ValueError, LoadSettings, **bad)

    def test_deadline(self) -> None:
        """Two connect timeouts, the warm-up, the window, the drain and the close grace."""
        settings = LoadSettings(connectTimeout=3, warmup=1, duration=10, drainTimeout=2)
        self.assertEqual(settings.deadline(), 3 * 2 + 1 + 10 + 2 + CLOSE_GRACE)
