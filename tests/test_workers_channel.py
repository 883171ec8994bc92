"""
Tests for L{iocpsvc.workers.channel}: the control channel between a parent
and its workers (length-prefixed JSON), its bounds and its typed errors.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc import errors
from iocpsvc.errors import BadControlMessage, ControlChannelFull
from iocpsvc.workers.channel import ControlChannel


class ControlChannelTests(SynchronousTestCase):
    """The parent/worker control channel (length-prefixed JSON)."""

    def pair(self, handlersA: dict[str, Any], handlersB: dict[str, Any]) -> tuple[Any, Any]:
        a = ControlChannel(handlersA)
        b = ControlChannel(handlersB)
        a._write = b.dataReceived
        b._write = a.dataReceived
        return a, b

    def test_callAnswers(self) -> None:
        """A call fires with the handler's result from the other end."""
        a, _ = self.pair({}, {"stats": lambda m: {"online": m["x"] * 2}})
        answers: list[Any] = []
        a.call("stats", x=21).addCallback(answers.append)
        self.assertEqual(answers, [{"online": 42}])

    def test_deferredHandler(self) -> None:
        """A handler may answer later with a Deferred."""
        later: Deferred[Any] = Deferred()
        a, _ = self.pair({}, {"slow": lambda m: later})
        answers: list[Any] = []
        a.call("slow").addCallback(answers.append)
        self.assertEqual(answers, [])
        later.callback("done")
        self.assertEqual(answers, ["done"])

    def test_errorsAndUnknownOps(self) -> None:
        """A failing handler and an unknown op both fail the call."""

        def broken(message: dict[str, Any]) -> None:
            raise ValueError("nope")

        a, _ = self.pair({}, {"broken": broken})
        failures: list[Any] = []
        a.call("broken").addErrback(failures.append)
        a.call("missing").addErrback(failures.append)
        self.assertEqual(len(failures), 2)
        self.assertIn("nope", str(failures[0].value))
        self.assertIn("unknown op", str(failures[1].value))

    def test_sendHasNoAnswer(self) -> None:
        """A sent message reaches its handler; nothing comes back."""
        seen: list[Any] = []
        a, b = self.pair({}, {"bus": seen.append})
        a.send("bus", m="x")
        self.assertEqual(seen, [{"op": "bus", "m": "x"}])

    def test_splitAndCoalesced(self) -> None:
        """Messages split across reads and several in one read all arrive."""
        seen: list[Any] = []
        receiver = ControlChannel({"n": seen.append})
        chunks: list[bytes] = []
        sender = ControlChannel({}, chunks.append)
        for n in range(3):
            sender.send("n", n=n)
        wire = b"".join(chunks)
        for i in range(0, len(wire), 5):
            receiver.dataReceived(wire[i : i + 5])
        self.assertEqual([m["n"] for m in seen], [0, 1, 2])

    def test_lostFailsWaiting(self) -> None:
        """Calls waiting when the channel closes fail; later calls fail at once."""
        a = ControlChannel({}, lambda data: None)
        failures: list[Any] = []
        a.call("stats").addErrback(failures.append)
        a.connectionLost()
        a.call("stats").addErrback(failures.append)
        self.assertEqual(len(failures), 2)

    def test_boundedUnread(self) -> None:
        """
        Past maxUnsent unread bytes, messages are dropped and counted and
        calls fail at once: a stopped peer makes nobody buffer without end.
        """
        written: list[bytes] = []
        unread = [0]
        channel = ControlChannel({}, written.append, lambda: unread[0])
        self.assertTrue(channel.send("bus", m="a"))
        unread[0] = channel.maxUnsent + 1
        self.assertFalse(channel.send("bus", m="b"))
        failures: list[Any] = []
        channel.call("stats").addErrback(failures.append)
        self.assertEqual(len(written), 1)
        self.assertEqual(channel.droppedTotal, 2)
        self.assertIsInstance(failures[0].value, ControlChannelFull)
        self.assertEqual(channel._waiting, {})

    def test_callTimeout(self) -> None:
        """A call not answered in time fails; its late answer is ignored."""
        clock = Clock()
        a = ControlChannel({}, lambda data: None)
        failures: list[Any] = []
        a.call("stats", timeout=2, clock=clock).addErrback(failures.append)
        clock.advance(2)
        self.assertIsInstance(failures[0].value, DeferredTimeout)
        self.assertEqual(a._waiting, {})
        a._handle({"reply": 1, "result": {"late": True}})  # nothing raises

    def test_typedErrors(self) -> None:
        """
        Each way a call gets no answer fails it with its own
        ControlChannelError: an error answered, closed, timed out, full.
        """
        a, _ = self.pair({}, {})
        failures: list[Any] = []
        a.call("missing").addErrback(failures.append)
        clock = Clock()
        silent = ControlChannel({}, lambda data: None)
        silent.call("stats", timeout=2, clock=clock).addErrback(failures.append)
        clock.advance(2)
        silent.call("stats").addErrback(failures.append)
        silent.connectionLost()
        silent.call("stats").addErrback(failures.append)
        full = ControlChannel({}, lambda data: None, lambda: full.maxUnsent + 1)
        full.call("stats").addErrback(failures.append)
        self.assertEqual(
            [type(f.value) for f in failures],
            [
                errors.ControlCallFailed,
                errors.ControlCallTimeout,
                errors.ControlChannelClosed,
                errors.ControlChannelClosed,
                ControlChannelFull,
            ],
        )
        self.assertTrue(all(isinstance(f.value, errors.ControlChannelError) for f in failures))
        self.assertEqual((failures[1].value.op, failures[1].value.timeout), ("stats", 2))

    def test_garbageFailsWaitingCalls(self) -> None:
        """Calls waiting when undecodable data closes the channel fail as BadControlMessage."""
        channel = ControlChannel({})
        transport = StringTransport()
        channel.makeConnection(transport)
        failures: list[Any] = []
        channel.call("stats").addErrback(failures.append)
        channel.dataReceived(b"\x00\x00\x00\x03{{{")
        channel.connectionLost()
        channel.call("stats").addErrback(failures.append)
        self.assertEqual([type(f.value) for f in failures], [BadControlMessage, BadControlMessage])
        self.assertIn("undecodable", str(failures[0].value))

    def test_garbageClosesChannel(self) -> None:
        """Undecodable control data closes the channel instead of raising."""
        channel = ControlChannel({})
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"\x00\x00\x00\x03{{{")
        self.assertTrue(transport.disconnecting)
