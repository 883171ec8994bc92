"""
Tests for L{iocpsvc.bench.child}: a load process's line to its parent --
C{go} in, JSON lines out, and an abort when the parent goes away.
"""

from __future__ import annotations

import json

from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.bench.child import ParentChannel


class FakeReactor:
    """Just enough reactor to be stopped."""

    running = True

    def stop(self) -> None:
        self.running = False


class FakeRun:
    """A load run that records why it was aborted."""

    def __init__(self) -> None:
        self.aborted: list[str] = []

    def abort(self, why: str) -> None:
        self.aborted.append(why)


class ParentChannelTests(SynchronousTestCase):
    """The child's end of the pipes to its parent."""

    def channel(self) -> tuple[ParentChannel, StringTransport, FakeReactor]:
        reactor = FakeReactor()
        channel = ParentChannel(reactor)
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport, reactor

    def test_go(self) -> None:
        """C{go} fires once the whole line has come, however it was split."""
        channel, _, _ = self.channel()
        channel.dataReceived(b"g")
        self.assertFalse(channel.go.called)
        channel.dataReceived(b"o\n")
        self.assertTrue(channel.go.called)

    def test_send(self) -> None:
        """Each message is one JSON line."""
        channel, transport, _ = self.channel()
        channel.send({"progress": {"phase": "connecting"}})
        channel.send({"result": {}})
        lines = transport.value().split(b"\n")
        self.assertEqual(lines[-1], b"")
        self.assertEqual(
            [json.loads(line) for line in lines[:-1]], [{"progress": {"phase": "connecting"}}, {"result": {}}]
        )

    def test_parentGone(self) -> None:
        """When the parent goes away, the run is aborted (once) and the reactor stopped."""
        channel, _, reactor = self.channel()
        run = FakeRun()
        channel.run = run  # type: ignore[assignment]
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(run.aborted, ["the parent process went away"])
        self.assertFalse(reactor.running)
        self.assertTrue(channel.finished)

    def test_finished(self) -> None:
        """Once the result was sent, losing the pipes only stops the reactor."""
        channel, _, reactor = self.channel()
        run = FakeRun()
        channel.run = run  # type: ignore[assignment]
        channel.finished = True
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(run.aborted, [])
        self.assertFalse(reactor.running)
