"""
Tests for L{iocpsvc.service}: the completion-port centre's start (its log
lines and warnings), a listener that cannot listen, and the stop.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from iocpsvc import errors
from iocpsvc.apps import EchoContext
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.limits import ServerLimits
from iocpsvc.service import SocketServerService
from tests.netutil import connectRaw, waitUntil


def logged(testCase: Any) -> list[dict[str, Any]]:
    """The log events emitted while C{testCase} runs."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    testCase.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


class StartTests(SynchronousTestCase):
    """What the service says when it starts."""

    def start(self, codec: str = "length", **limits: Any) -> tuple[list[dict[str, Any]], SocketServerService]:
        events = logged(self)
        reactor = MemoryReactorClock()
        factory = ConnectionContextFactory(EchoContext, codec, reactor=reactor, limits=ServerLimits(**limits))
        service = SocketServerService(factory, ["tcp:0"], reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return events, service

    def test_listeningAndLimitsLines(self) -> None:
        """Two lines: where it listens with which codec, and the limits in force."""
        events, _ = self.start(maxConnections=100)
        formats = [str(e.get("log_format", "")) for e in events]
        self.assertTrue(any(f.startswith("iocpsvc listening on") for f in formats))
        [limits] = [e for e in events if str(e.get("log_format", "")).startswith("iocpsvc limits")]
        self.assertEqual(limits["maxConnections"], 100)
        self.assertEqual(limits["maxPendingWrite"], 4 * 1024 * 1024)

    def test_pendingWriteBelowLargestFrameWarned(self) -> None:
        """An explicit max pending write below the codec's largest frame is warned of at start."""
        for pending, warned in ((4 * 1024 * 1024, True), (None, False)):
            events, _ = self.start("diocp", maxPendingWrite=pending)
            warnings = [e for e in events if "below the codec's largest frame" in e.get("log_format", "")]
            self.assertEqual(len(warnings), 1 if warned else 0)


class ListenTests(TestCase):
    """Listeners over real TCP on 127.0.0.1."""

    def test_takenPortRaises(self) -> None:
        """A port another listener holds makes the start raise, with nothing left listening."""
        from twisted.internet import reactor

        first = SocketServerService(ConnectionContextFactory(EchoContext), ["tcp:0:interface=127.0.0.1"])
        first.startService()
        self.addCleanup(first.stopService)
        port = first.ports[0].getHost().port
        second = SocketServerService(
            ConnectionContextFactory(EchoContext, reactor=reactor),
            ["tcp:0:interface=127.0.0.1", f"tcp:{port}:interface=127.0.0.1"],
            reactor=reactor,
        )
        self.assertRaises(CannotListenError, second.startService)
        self.assertEqual(second.ports, [])

    @defer.inlineCallbacks
    def test_stopClosesEveryConnection(self) -> Any:
        """On stop, listeners close and every connection is closed with the reason shutdown."""
        from twisted.internet import reactor

        factory = ConnectionContextFactory(EchoContext, reactor=reactor)
        service = SocketServerService(
            factory, ["tcp:0:interface=127.0.0.1"], reactor=reactor, shutdownTimeout=5
        )
        service.startService()
        clients = yield connectRaw(reactor, service.ports[0].getHost().port, 3)
        yield waitUntil(reactor, lambda: factory.onlineCount == 3)
        yield service.stopService()
        yield defer.gatherResults([c.lost for c in clients])
        self.assertEqual(factory.counters.closedTotal[errors.SHUTDOWN], 3)
        self.assertEqual(service.ports, [])
