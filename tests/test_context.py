"""
Tests for L{iocpsvc.context.ConnectionContext}, driven without sockets
through L{iocpsvc.testing.EmbeddedConnection}.
"""

from __future__ import annotations

import struct

from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc import errors
from iocpsvc.apps import EchoContext
from iocpsvc.context import ConnectionContext
from iocpsvc.testing import EmbeddedConnection
from tests.helpers import bothImplementations, frame


class Recorder(ConnectionContext):
    """Records objects and lifecycle calls."""

    __slots__ = ("received", "events")

    def connectionMade(self) -> None:
        self.received: list[object] = []
        self.events: list[str] = ["made"]

    def objectReceived(self, obj: object) -> None:
        self.received.append(obj)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # Deliberately no super(): the bookkeeping must still run.
        self.events.append(f"lost:{self.closeReason}")


class ReceiveTests(SynchronousTestCase):
    """The receive buffer and the decode loop."""

    def test_objectsInOrderAcrossAnyChunking(self) -> None:
        """Frames cut at every size arrive whole and in order."""
        payloads = [b"a", b"", b"bcd" * 100, b"e"]
        wire = b"".join(frame(p) for p in payloads)
        for size in (1, 2, 5, 64, len(wire)):
            connection = EmbeddedConnection(Recorder)
            connection.feed(wire, chunkSize=size)
            self.assertEqual(connection.context.received, payloads)  # type: ignore[attr-defined]
            self.assertEqual(connection.context.bufferedBytes, 0)

    def test_partialFrameStaysBuffered(self) -> None:
        """A half frame is kept, and only it."""
        connection = EmbeddedConnection(Recorder)
        connection.feed(frame(b"one") + frame(b"two")[:5])
        self.assertEqual(connection.context.received, [b"one"])  # type: ignore[attr-defined]
        self.assertEqual(connection.context.bufferedBytes, 5)
        connection.feed(frame(b"two")[5:])
        self.assertEqual(connection.context.received, [b"one", b"two"])  # type: ignore[attr-defined]
        self.assertIsNone(connection.context._buffer)

    def test_counters(self) -> None:
        """Bytes and frames in and out are counted per connection."""
        connection = EmbeddedConnection(EchoContext)
        wire = frame(b"abc") + frame(b"de")
        connection.clock.advance(5)
        connection.feed(wire)
        context = connection.context
        self.assertEqual(
            (context.bytesReceived, context.framesReceived, context.bytesSent, context.framesSent),
            (len(wire), 2, len(wire), 2),
        )
        self.assertEqual(context.lastActivity, 5)
        self.assertEqual(context.connectedAt, 0)


class WriteBatchTests(SynchronousTestCase):
    """Writes made while a read is processed leave together, in order."""

    def test_oneTransportCallPerRead(self) -> None:
        """Many replies to one read become one writeSequence."""
        connection = EmbeddedConnection(EchoContext)
        calls: list[object] = []
        write, writeSequence = connection.transport.write, connection.transport.writeSequence

        def recordWrite(data: bytes) -> None:
            calls.append("write")
            write(data)

        def recordSequence(data: list[bytes]) -> None:
            calls.append(("writeSequence", len(data)))
            writeSequence(data)

        connection.transport.write = recordWrite  # type: ignore[method-assign]
        connection.transport.writeSequence = recordSequence  # type: ignore[method-assign]
        wire = b"".join(frame(b"%d" % i) for i in range(100))
        connection.feed(wire)
        self.assertEqual(len(calls), 1)
        self.assertEqual(connection.readBytes(), wire)

    def test_writeBytesKeepsOrder(self) -> None:
        """Raw bytes and objects written in one batch keep their order."""

        class Mixed(ConnectionContext):
            def objectReceived(self, obj: object) -> None:
                self.writeObject(b"1")
                self.writeBytes(b"RAW")
                self.writeObject(b"2")

        connection = EmbeddedConnection(Mixed)
        connection.feed(frame(b"x"))
        self.assertEqual(connection.readBytes(), frame(b"1") + b"RAW" + frame(b"2"))

    def test_writeOutsideReadGoesOutAtOnce(self) -> None:
        """A write from a timer is not held for a batch."""
        connection = EmbeddedConnection(ConnectionContext)
        connection.context.writeObject(b"tick")
        self.assertEqual(connection.readObjects(), [b"tick"])


class PauseTests(SynchronousTestCase):
    """While paused, no buffered frame is dispatched."""

    def test_pauseHoldsRest(self) -> None:
        """Pausing inside objectReceived holds the later frames until resume."""

        class Pausing(Recorder):
            def objectReceived(self, obj: object) -> None:
                super().objectReceived(obj)
                if obj == b"stop":
                    self.pauseProducing()

        connection = EmbeddedConnection(Pausing)
        context = connection.context
        connection.feed(frame(b"a") + frame(b"stop") + frame(b"b") + frame(b"c")[:3])
        self.assertEqual(context.received, [b"a", b"stop"])  # type: ignore[attr-defined]
        self.assertEqual(connection.transport.producerState, "paused")
        self.assertEqual(context.pendingObjects, 1)
        connection.feed(frame(b"c")[3:])
        self.assertEqual(context.received, [b"a", b"stop"])  # type: ignore[attr-defined]
        context.resumeProducing()
        self.assertEqual(context.received, [b"a", b"stop", b"b", b"c"])  # type: ignore[attr-defined]
        self.assertEqual(connection.transport.producerState, "producing")

    def test_pauseAgainDuringResume(self) -> None:
        """Each resume releases objects up to the next pause, in order."""

        class OneAtATime(Recorder):
            def objectReceived(self, obj: object) -> None:
                super().objectReceived(obj)
                self.pauseProducing()

        connection = EmbeddedConnection(OneAtATime)
        context = connection.context
        connection.feed(b"".join(frame(b"%d" % i) for i in range(4)))
        seen = []
        for _ in range(4):
            seen.append(list(context.received))  # type: ignore[attr-defined]
            context.resumeProducing()
        self.assertEqual(seen, [[b"0"], [b"0", b"1"], [b"0", b"1", b"2"], [b"0", b"1", b"2", b"3"]])

    def test_contextIsAPushProducer(self) -> None:
        """A consumer can pause and resume a context directly."""
        from twisted.internet.interfaces import IPushProducer
        from twisted.internet.testing import StringTransport
        from zope.interface.verify import verifyObject

        connection = EmbeddedConnection(Recorder)
        context = connection.context
        self.assertTrue(verifyObject(IPushProducer, context))
        consumer = StringTransport()
        consumer.registerProducer(context, True)
        consumer.producer.pauseProducing()  # type: ignore[union-attr]
        connection.feed(frame(b"held"))
        self.assertEqual(context.received, [])  # type: ignore[attr-defined]
        consumer.producer.resumeProducing()  # type: ignore[union-attr]
        self.assertEqual(context.received, [b"held"])  # type: ignore[attr-defined]


class FailureTests(SynchronousTestCase):
    """Decode errors and handler errors close that connection only."""

    def test_decodeErrorClosesAfterGoodFrames(self) -> None:
        """Frames before a bad header are answered; then the close."""
        connection = EmbeddedConnection(EchoContext)
        connection.feed(frame(b"ok") + struct.pack(">I", 2**31) + b"junk")
        self.assertEqual(connection.readObjects(), [b"ok"])
        self.assertTrue(connection.closing)
        self.assertEqual(connection.context.closeReason, errors.FRAME_TOO_LONG)
        self.assertEqual(connection.factory.counters.decodeErrors, 1)
        connection.feed(frame(b"ignored"))
        self.assertEqual(connection.readBytes(), b"")

    def test_handlerErrorClosesWithReason(self) -> None:
        """An exception in objectReceived closes with handler-error, logged once."""

        class Broken(ConnectionContext):
            def objectReceived(self, obj: object) -> None:
                self.writeObject(b"before")
                raise ValueError("boom")

        connection = EmbeddedConnection(Broken)
        connection.feed(frame(b"x") + frame(b"y"))
        self.assertEqual(connection.readObjects(), [b"before"])
        self.assertEqual(connection.context.closeReason, errors.HANDLER_ERROR)
        self.assertEqual(connection.factory.counters.handlerErrors, 1)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_decoderBugIsHandlerError(self) -> None:
        """A decoder raising something other than DecodeError is a handler error."""
        from zope.interface import implementer

        from iocpsvc.interfaces import IDecoder

        @implementer(IDecoder)
        class Buggy:
            maxFrameLength = 10

            def decode(self, data: object, out: list[object]) -> int:
                raise ZeroDivisionError("bug")

            def decodeLast(self, data: bytes) -> list[object]:
                raise AssertionError("not called after a failure")

        connection = EmbeddedConnection(Recorder)
        connection.factory.registerDecoder(Buggy)
        connection.context._decoder = Buggy()
        connection.feed(b"anything")
        self.assertEqual(connection.context.closeReason, errors.HANDLER_ERROR)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        connection.disconnect()

    def test_closeInsideHandlerStopsDispatch(self) -> None:
        """close() in objectReceived sends the replies so far, then stops."""

        class Closer(Recorder):
            def objectReceived(self, obj: object) -> None:
                super().objectReceived(obj)
                self.writeObject(b"bye")
                self.close()

        connection = EmbeddedConnection(Closer)
        connection.feed(frame(b"1") + frame(b"2"))
        self.assertEqual(connection.context.received, [b"1"])  # type: ignore[attr-defined]
        self.assertEqual(connection.readObjects(), [b"bye"])
        self.assertTrue(connection.closing)
        self.assertEqual(connection.context.closeReason, errors.LOCAL)


class LifecycleTests(SynchronousTestCase):
    """Registration with the factory and the close reason."""

    def test_connectionLostOverrideWithoutSuper(self) -> None:
        """The registry is updated even when an override skips super()."""
        connection = EmbeddedConnection(Recorder)
        factory = connection.factory
        self.assertEqual(factory.onlineCount, 1)
        connection.disconnect()
        self.assertEqual(factory.onlineCount, 0)
        self.assertEqual(connection.context.events, ["made", "lost:peer"])  # type: ignore[attr-defined]
        self.assertEqual(factory.counters.closedTotal["peer"], 1)

    def test_truncatedFrameCounted(self) -> None:
        """A connection that ends mid-frame is counted as truncated."""
        connection = EmbeddedConnection(Recorder)
        connection.feed(frame(b"abcdef")[:6])
        connection.disconnect()
        self.assertEqual(connection.factory.counters.truncatedFrames, 1)

    def test_abortReason(self) -> None:
        """abort() records its reason for connectionLost."""
        connection = EmbeddedConnection(Recorder)
        connection.context.abort(errors.IDLE)
        self.assertEqual(connection.context.events, ["made", "lost:idle"])  # type: ignore[attr-defined]
        self.assertEqual(connection.factory.counters.closedTotal["idle"], 1)

    def test_smallPerConnectionState(self) -> None:
        """Nothing lands in a context's instance dict: its state is in slots."""
        connection = EmbeddedConnection(EchoContext)
        connection.feed(frame(b"abc") + frame(b"d")[:2])
        self.assertEqual(vars(connection.context), {})


class FailingHooks(ConnectionContext):
    """Raises in whichever hooks the test names in C{failIn}."""

    failIn: tuple[str, ...] = ()
    calls: list[str] = []

    def connectionMade(self) -> None:
        self.calls.append("made")
        if "connectionMade" in self.failIn:
            raise KeyError("made")

    def objectReceived(self, obj: object) -> None:
        self.writeObject(obj)

    def writabilityChanged(self, writable: bool) -> None:
        self.calls.append(f"writable:{writable}")
        if "writabilityChanged" in self.failIn:
            raise KeyError("writable")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.calls.append(f"lost:{self.closeReason}")
        if "connectionLost" in self.failIn:
            raise KeyError("lost")


class HookErrorTests(SynchronousTestCase):
    """Exceptions in any context hook are handler errors of that connection only."""

    def connect(self, *failIn: str) -> EmbeddedConnection:
        FailingHooks.failIn = failIn
        FailingHooks.calls = []
        return EmbeddedConnection(FailingHooks)

    def test_connectionMadeRaising(self) -> None:
        """connectionMade raising closes that connection as handler-error, counted and logged."""
        connection = self.connect("connectionMade")
        self.assertTrue(connection.closing)
        self.assertEqual(connection.context.closeReason, errors.HANDLER_ERROR)
        self.assertEqual(connection.factory.counters.handlerErrors, 1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        connection.disconnect()
        self.assertEqual(FailingHooks.calls, ["made", "lost:handler-error"])
        self.assertEqual(connection.factory.counters.closedTotal[errors.HANDLER_ERROR], 1)
        self.assertEqual(connection.factory.onlineCount, 0)

    def test_connectionLostRaising(self) -> None:
        """connectionLost raising is counted and logged; the context is still released."""
        connection = self.connect("connectionLost")
        connection.disconnect()
        self.assertEqual(connection.factory.counters.handlerErrors, 1)
        self.assertEqual(connection.factory.counters.closedTotal[errors.PEER], 1)
        self.assertEqual(connection.factory.onlineCount, 0)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_writabilityChangedRaising(self) -> None:
        """writabilityChanged raising closes that connection as handler-error."""
        connection = self.connect("writabilityChanged")
        connection.context.pauseProducing()
        self.assertEqual(FailingHooks.calls, ["made", "writable:False"])
        self.assertEqual(connection.context.closeReason, errors.HANDLER_ERROR)
        self.assertEqual(connection.factory.counters.handlerErrors, 1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_contextClassRaising(self) -> None:
        """A context class whose constructor raises: the connection is refused, counted, logged."""

        class Unmakeable(ConnectionContext):
            def __init__(self) -> None:
                raise KeyError("no")

        from twisted.internet.address import IPv4Address

        from iocpsvc.factory import ConnectionContextFactory

        factory = ConnectionContextFactory(ConnectionContext, reactor=Clock())
        factory.registerContextClass(Unmakeable)
        protocol = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1))
        self.assertNotIsInstance(protocol, ConnectionContext)
        self.assertEqual(factory.counters.handlerErrors, 1)
        self.assertEqual(factory.counters.closedTotal[errors.HANDLER_ERROR], 1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_tracebackOnceThenOneLine(self) -> None:
        """The same bug on many connections logs its traceback once, then one-line events, rate-limited."""
        from twisted.logger import globalLogPublisher

        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        FailingHooks.failIn = ("connectionMade",)
        clock = Clock()
        from iocpsvc.factory import ConnectionContextFactory

        factory = ConnectionContextFactory(FailingHooks, reactor=clock)
        for _ in range(50):
            EmbeddedConnection(factory=factory, clock=clock).disconnect()
        self.assertEqual(factory.counters.handlerErrors, 50)
        mine = [e for e in events if "handler-error" in str(e.get("log_format", ""))]
        self.assertEqual(len(mine), factory.rateLimitedLog.burst)
        self.assertEqual(sum("log_failure" in e for e in mine), 1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        clock.advance(61)
        EmbeddedConnection(factory=factory, clock=clock).disconnect()
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)  # a minute on: the traceback again


# Every test above, again on the pure-Python implementation (iocpsvc.accel).
bothImplementations(globals())
