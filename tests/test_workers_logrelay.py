"""
Tests for L{iocpsvc.workers.logrelay}: a worker's log lines, logged again
by its parent at the worker's own level.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.workers.logrelay import WorkerLogRelay


class WorkerLogRelayTests(SynchronousTestCase):
    """One event per line, tagged with the worker."""

    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events

    def test_linesAcrossReadsAndStreams(self) -> None:
        """A line split over reads is one event; stdout and stderr keep their own partial lines."""
        events = self.events()
        relay = WorkerLogRelay(3)
        relay.pid = 42
        relay.dataReceived(1, b"2026-11-27T11:00:00+0000 [iocpsvc.factory#error] half")
        relay.dataReceived(2, b"other stream\n")
        relay.dataReceived(1, b" and half\n")
        mine = [e for e in events if e.get("worker") == 3]
        self.assertEqual([e["line"] for e in mine], ["other stream", "half and half"])
        self.assertEqual([e["log_level"] for e in mine], [LogLevel.info, LogLevel.error])
        self.assertEqual({e["pid"] for e in mine}, {42})

    def test_flushAtTheEnd(self) -> None:
        """What came after the last newline is logged when the worker is gone, once."""
        events = self.events()
        relay = WorkerLogRelay(1)
        relay.dataReceived(1, b"last words")
        relay.flush()
        relay.flush()
        self.assertEqual([e["line"] for e in events if e.get("worker") == 1], ["last words"])

    def test_noNewlineInSight(self) -> None:
        """A line longer than 64 KiB is passed on rather than held without end."""
        from iocpsvc.workers import logrelay

        # A smaller limit for the test: a 64 KiB log line is more than
        # trial -j can pass between its processes.
        self.patch(logrelay, "_LOG_TAIL_LIMIT", 1024)
        events = self.events()
        relay = WorkerLogRelay(1)
        relay.dataReceived(1, b"x" * (1024 + 1))
        self.assertEqual([len(e["line"]) for e in events if e.get("worker") == 1], [1024 + 1])

    def test_unknownLevel(self) -> None:
        """A level name Twisted does not know is logged at info."""
        events = self.events()
        WorkerLogRelay(1).dataReceived(1, b"[x#shout] hello\n")
        mine = [e for e in events if e.get("worker") == 1]
        self.assertEqual(
            [(e["log_level"], e["source"], e["line"]) for e in mine], [(LogLevel.info, "x", "hello")]
        )
