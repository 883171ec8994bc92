"""
Unit tests for the limits (L{iocpsvc.limits}) as the factory and the
context enforce them, with a C{Clock} for every timer: idle kick-out, close
deadlines, connection limit, accept filter, write backpressure and
slow clients, ordered slow handlers, shutdown from a handler, rate-limited
logs.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase

from iocpsvc import errors
from iocpsvc.addresses import addressAllowed, parseNetwork
from iocpsvc.apps import EchoContext
from iocpsvc.context import ConnectionContext
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.limits import ServerLimits
from iocpsvc.logs import RateLimitedLog
from iocpsvc.testing import EmbeddedConnection
from iocpsvc.threads import inThreadPool
from tests.helpers import bothImplementations, frame


def makeFactory(contextClass: Any = EchoContext, **limits: Any) -> ConnectionContextFactory:
    return ConnectionContextFactory(contextClass, "length", reactor=Clock(), limits=ServerLimits(**limits))


def connect(factory: ConnectionContextFactory, host: str = "192.0.2.1") -> EmbeddedConnection:
    return EmbeddedConnection(factory=factory, clock=factory.reactor, peer=IPv4Address("TCP", host, 40000))


class IdleTests(SynchronousTestCase):
    """Idle kick-out: one sweep per factory, reason idle."""

    def test_idleConnectionsAreClosed(self) -> None:
        """A connection silent for the timeout is closed; a busy one is not."""
        factory = makeFactory(idleTimeout=10)
        factory.startFactory()
        self.addCleanup(factory.stopFactory)
        quiet, busy = connect(factory), connect(factory)
        for _ in range(12):
            factory.reactor.advance(1)
            busy.feed(frame(b"ping"))
        self.assertTrue(quiet.closing)
        self.assertEqual(quiet.context.closeReason, errors.IDLE)
        self.assertFalse(busy.closing)
        quiet.disconnect()
        self.assertEqual(factory.counters.closedTotal[errors.IDLE], 1)

    def test_oneTimerPerFactory(self) -> None:
        """Reads do not create or reset timers: only the sweep is scheduled."""
        factory = makeFactory(idleTimeout=10)
        factory.startFactory()
        self.addCleanup(factory.stopFactory)
        connections = [connect(factory) for _ in range(50)]
        for c in connections:
            c.feed(frame(b"x"))
        self.assertEqual(len(factory.reactor.getDelayedCalls()), 1)

    def test_kickOut(self) -> None:
        """kickOut(seconds) closes those idle that long and says how many."""
        factory = makeFactory(idleTimeout=0)
        old = connect(factory)
        factory.reactor.advance(30)
        new = connect(factory)
        self.assertEqual(factory.kickOut(20), 1)
        self.assertTrue(old.closing)
        self.assertFalse(new.closing)

    def test_idleOff(self) -> None:
        """idleTimeout 0 never closes for idleness."""
        factory = makeFactory(idleTimeout=0)
        factory.startFactory()
        self.addCleanup(factory.stopFactory)
        connection = connect(factory)
        factory.reactor.advance(100_000)
        self.assertFalse(connection.closing)

    def test_stuckCloseIsAborted(self) -> None:
        """A close that has not completed within closeTimeout is aborted."""
        factory = makeFactory(idleTimeout=0, closeTimeout=5)
        factory.startFactory()
        self.addCleanup(factory.stopFactory)
        connection = connect(factory)
        connection.context.close()
        self.assertFalse(connection.lost)
        factory.reactor.advance(10)
        self.assertTrue(connection.lost)
        self.assertEqual(connection.context.closeReason, errors.LOCAL)


class AcceptTests(SynchronousTestCase):
    """Connection limit and accept filter, at buildProtocol."""

    def assertRefused(self, protocol: Any) -> None:
        """C{protocol} is no context and closes its connection as soon as it is made."""
        from twisted.internet.testing import StringTransport

        self.assertNotIsInstance(protocol, ConnectionContext)
        transport = StringTransport()
        closed: list[str] = []
        transport.abortConnection = lambda: closed.append("abort")  # type: ignore[method-assign]
        protocol.makeConnection(transport)
        self.assertEqual(closed, ["abort"])

    def test_maxConnections(self) -> None:
        """Past the limit a new connection is refused and counted; others stay."""
        factory = makeFactory(maxConnections=2)
        first, second = connect(factory), connect(factory)
        self.assertRefused(factory.buildProtocol(IPv4Address("TCP", "192.0.2.9", 1)))
        self.assertEqual(
            (factory.counters.refusedTotal, factory.counters.closedTotal[errors.REFUSED]), (1, 1)
        )
        self.assertFalse(first.closing or second.closing)
        first.disconnect()
        self.assertIsInstance(factory.buildProtocol(IPv4Address("TCP", "192.0.2.9", 1)), EchoContext)

    def test_allowAndDeny(self) -> None:
        """deny wins; with allow set only its networks get in; v4, v6, mapped."""
        allow = [parseNetwork("10.0.0.0/8"), parseNetwork("2001:db8::/32")]
        deny = [parseNetwork("10.9.0.0/16")]
        for host, expected in [
            ("10.1.2.3", True),
            ("10.9.1.1", False),
            ("192.0.2.1", False),
            ("2001:db8::1", True),
            ("2001:db9::1", False),
            ("::ffff:10.1.2.3", True),
            ("::ffff:10.9.0.1", False),
        ]:
            address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, 1)
            self.assertEqual(addressAllowed(address, allow, deny), expected, host)
        self.assertTrue(addressAllowed(UNIXAddress(b"/tmp/s"), allow, deny))

    def test_filterRefusesAtAccept(self) -> None:
        """A filtered peer gets no context at all."""
        factory = makeFactory(deny=["192.0.2.0/24"])
        self.assertRefused(factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 1)))
        self.assertIsInstance(factory.buildProtocol(IPv4Address("TCP", "198.51.100.7", 1)), EchoContext)
        self.assertEqual(factory.counters.refusedTotal, 1)

    def test_acceptPeerHook(self) -> None:
        """An overridden acceptPeer refuses by the application's own rule."""

        class OddPortsOnly(ConnectionContextFactory):
            def acceptPeer(self, address: Any) -> bool:
                return bool(address.port % 2)

        factory = OddPortsOnly(EchoContext, reactor=Clock())
        self.assertRefused(factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 2)))
        self.assertIsInstance(factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 3)), EchoContext)

    def test_badNetwork(self) -> None:
        """A bad CIDR is a ValueError naming it."""
        with self.assertRaises(ValueError) as caught:
            ServerLimits(allow=["10.0.0.0/33"])
        self.assertIn("10.0.0.0/33", str(caught.exception))


class Watcher(ConnectionContext):
    """Records writability changes and objects."""

    __slots__ = ("changes", "received")

    def connectionMade(self) -> None:
        self.changes: list[bool] = []
        self.received: list[object] = []

    def writabilityChanged(self, writable: bool) -> None:
        self.changes.append(writable)

    def objectReceived(self, obj: object) -> None:
        self.received.append(obj)
        self.writeObject(obj)


class BackpressureTests(SynchronousTestCase):
    """Write high water (the transport pauses us) and slow clients."""

    def test_registeredAsProducerWithHighWater(self) -> None:
        """The context produces for its transport; bufferSize is the high mark."""
        factory = makeFactory(writeHighWater=1000)
        connection = connect(factory)
        self.assertIs(connection.transport.producer, connection.context)
        self.assertTrue(connection.transport.streaming)

    def test_pausedReadingAndDispatchWhileBlocked(self) -> None:
        """Blocked: reading stops, dispatch stops, the application is told."""
        connection = connect(makeFactory(Watcher))
        context: Any = connection.context
        context.pauseProducing()  # as the transport does past the high mark
        self.assertEqual(connection.transport.producerState, "paused")
        self.assertFalse(context.writable)
        connection.feed(frame(b"a") + frame(b"b"))
        self.assertEqual(context.received, [])
        context.resumeProducing()  # all sent
        self.assertEqual(context.received, [b"a", b"b"])
        self.assertEqual(context.changes, [False, True])
        self.assertEqual(connection.transport.producerState, "producing")

    def test_slowClientClosed(self) -> None:
        """Writes past maxPendingWrite while blocked close it as slow-client."""
        factory = makeFactory(writeHighWater=1000, maxPendingWrite=5000)
        connection = connect(factory)
        context = connection.context
        context.pauseProducing()
        context.writeObject(b"x" * 3000)
        self.assertIsNone(context.closeReason)
        context.writeObject(b"x" * 3000)
        self.assertEqual(context.closeReason, errors.SLOW_CLIENT)
        self.assertTrue(connection.lost)
        self.assertEqual(factory.counters.closedTotal[errors.SLOW_CLIENT], 1)

    def test_broadcastFollowsTheLimits(self) -> None:
        """A broadcast to a blocked client counts against its limit too."""
        factory = makeFactory(writeHighWater=1000, maxPendingWrite=2000)
        slow, fast = connect(factory), connect(factory)
        slow.context.pauseProducing()
        for _ in range(3):
            factory.broadcast(b"y" * 500)
        self.assertEqual(slow.context.closeReason, errors.SLOW_CLIENT)
        self.assertIsNone(fast.context.closeReason)
        self.assertEqual(len(fast.readObjects()), 3)

    def test_closeUnregistersProducer(self) -> None:
        """close() unregisters the context so loseConnection cannot wait on it."""
        connection = connect(makeFactory())
        connection.context.pauseProducing()
        connection.context.close()
        self.assertIsNone(connection.transport.producer)
        self.assertTrue(connection.transport.disconnecting)

    def test_peerGoneIsPeerNotLocal(self) -> None:
        """The transport's stopProducing on connection loss keeps reason peer."""
        connection = connect(makeFactory())
        connection.transport.disconnected = True  # as a lost TCP transport is
        connection.context.stopProducing()
        connection.disconnect()
        self.assertEqual(connection.context.closeReason, errors.PEER)


class SlowHandler(ConnectionContext):
    """Answers each object when the test fires its Deferred."""

    __slots__ = ("waiting", "received")

    def connectionMade(self) -> None:
        self.waiting: list[defer.Deferred[None]] = []
        self.received: list[object] = []

    def objectReceived(self, obj: object) -> defer.Deferred[None]:
        self.received.append(obj)
        d: defer.Deferred[None] = defer.Deferred()
        d.addCallback(lambda _: self.writeObject(obj))
        self.waiting.append(d)
        return d


class OrderedHandlerTests(SynchronousTestCase):
    """objectReceived returning a Deferred or being a coroutine."""

    def test_nextObjectWaits(self) -> None:
        """The next object is dispatched only after the Deferred fires."""
        connection = connect(makeFactory(SlowHandler))
        context: Any = connection.context
        connection.feed(frame(b"1") + frame(b"2") + frame(b"3"))
        self.assertEqual(context.received, [b"1"])
        context.waiting[0].callback(None)
        self.assertEqual(context.received, [b"1", b"2"])
        context.waiting[1].callback(None)
        context.waiting[2].callback(None)
        self.assertEqual(connection.readObjects(), [b"1", b"2", b"3"])

    def test_otherConnectionsKeepGoing(self) -> None:
        """One connection waiting does not hold another."""
        factory = makeFactory(SlowHandler)
        first, second = connect(factory), connect(factory)
        first.feed(frame(b"a") + frame(b"b"))
        second.feed(frame(b"c") + frame(b"d"))
        second.context.waiting[0].callback(None)  # type: ignore[attr-defined]
        self.assertEqual(second.context.received, [b"c", b"d"])  # type: ignore[attr-defined]
        self.assertEqual(first.context.received, [b"a"])  # type: ignore[attr-defined]

    def test_backlogPausesReading(self) -> None:
        """Past maxPendingObjects waiting, reading pauses; it resumes once drained."""
        connection = connect(makeFactory(SlowHandler, maxPendingObjects=4))
        context: Any = connection.context
        connection.feed(b"".join(frame(b"%d" % i) for i in range(4)))
        self.assertEqual(connection.transport.producerState, "producing")
        connection.feed(b"".join(frame(b"%d" % i) for i in range(4, 10)))
        self.assertEqual(connection.transport.producerState, "paused")
        self.assertEqual(context.pendingObjects, 9)
        for index in range(10):
            context.waiting[index].callback(None)
        self.assertEqual(connection.transport.producerState, "producing")
        self.assertEqual(connection.readObjects(), [b"%d" % i for i in range(10)])

    def test_backlogBoundedInBytes(self) -> None:
        """
        Past maxPendingObjectBytes of frames waiting, reading pauses though
        few objects wait; it resumes once they are down to half.
        """
        connection = connect(makeFactory(SlowHandler, maxPendingObjectBytes=100_000))
        context: Any = connection.context
        big = b"j" * 30_000
        connection.feed(frame(big) * 3)  # the first is dispatched, two wait: 60 KB
        self.assertEqual(connection.transport.producerState, "producing")
        self.assertEqual(context.pendingObjectBytes, 2 * (len(big) + 4))
        connection.feed(frame(big) * 2)  # four wait: 120 KB
        self.assertEqual(connection.transport.producerState, "paused")
        self.assertEqual((context.pendingObjects, connection.factory.counters.backlogPausedTotal), (4, 1))
        context.waiting[0].callback(None)
        context.waiting[1].callback(None)  # 60 KB wait: more than half
        self.assertEqual(connection.transport.producerState, "paused")
        context.waiting[2].callback(None)  # 30 KB
        self.assertEqual(connection.transport.producerState, "producing")
        for index in range(3, 5):
            context.waiting[index].callback(None)
        self.assertEqual(context.pendingObjectBytes, 0)
        self.assertEqual(connection.readObjects(), [big] * 5)

    def test_failedDeferredIsHandlerError(self) -> None:
        """A failed Deferred closes the connection with handler-error."""
        connection = connect(makeFactory(SlowHandler))
        connection.feed(frame(b"1") + frame(b"2"))
        connection.context.waiting[0].errback(KeyError("lost"))  # type: ignore[attr-defined]
        self.assertEqual(connection.context.closeReason, errors.HANDLER_ERROR)
        self.assertEqual(connection.context.received, [b"1"])  # type: ignore[attr-defined]
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_coroutineHandler(self) -> None:
        """An async def objectReceived keeps order the same way."""
        gates: list[defer.Deferred[None]] = []

        class Async(ConnectionContext):
            async def objectReceived(self, obj: object) -> None:
                gate: defer.Deferred[None] = defer.Deferred()
                gates.append(gate)
                await gate
                self.writeObject(obj)

        connection = connect(makeFactory(Async))
        connection.feed(frame(b"x") + frame(b"y"))
        self.assertEqual(len(gates), 1)
        gates[0].callback(None)
        gates[1].callback(None)
        self.assertEqual(connection.readObjects(), [b"x", b"y"])

    def test_alreadyFiredDeferredDoesNotWait(self) -> None:
        """A Deferred that has already fired lets dispatch go straight on."""

        class Quick(ConnectionContext):
            def objectReceived(self, obj: object) -> defer.Deferred[None]:
                self.writeObject(obj)
                return defer.succeed(None)

        connection = connect(makeFactory(Quick))
        connection.feed(frame(b"1") + frame(b"2"))
        self.assertEqual(connection.readObjects(), [b"1", b"2"])


class ShutdownFromHandlerTests(SynchronousTestCase):
    """Stopping from inside a handler does not deadlock."""

    def test_closeAllInsideHandler(self) -> None:
        """closeAll called from objectReceived closes after the replies."""
        results: list[defer.Deferred[None]] = []

        class Stopper(ConnectionContext):
            def objectReceived(self, obj: object) -> None:
                self.writeObject(b"bye")
                results.append(self.factory.closeAll(timeout=5))  # type: ignore[union-attr]

        factory = makeFactory(Stopper)
        connection = connect(factory)
        other = connect(factory)
        connection.feed(frame(b"stop") + frame(b"ignored"))
        self.assertEqual(connection.readObjects(), [b"bye"])
        self.assertTrue(connection.closing and other.closing)
        connection.disconnect()
        other.disconnect()
        self.successResultOf(results[0])
        self.assertEqual(factory.counters.closedTotal[errors.SHUTDOWN], 2)


class ThreadPoolTests(TestCase):
    """inThreadPool runs blocking code off the reactor thread, in order."""

    @defer.inlineCallbacks
    def test_inThreadPool(self) -> Any:
        """Replies come back in request order, computed in pool threads."""
        import threading

        from twisted.internet import reactor

        threads: list[str] = []
        running: list[defer.Deferred[None]] = []

        class Blocking(ConnectionContext):
            @inThreadPool
            def work(self, obj: object) -> bytes:
                threads.append(threading.current_thread().name)
                return bytes(obj) * 2  # type: ignore[call-overload]

            def objectReceived(self, obj: object) -> defer.Deferred[None]:
                running.append(self.work(obj))
                return running[-1]

        factory = ConnectionContextFactory(Blocking, reactor=reactor)
        connection = EmbeddedConnection(factory=factory)
        connection.feed(frame(b"a") + frame(b"b") + frame(b"c"))
        for index in range(3):
            self.assertEqual(len(running), index + 1)  # the next waits for this one
            yield running[index]
        self.assertEqual(connection.readObjects(), [b"aa", b"bb", b"cc"])
        self.assertNotIn(threading.current_thread().name, threads)
        connection.disconnect()


class RateLimitedLogTests(SynchronousTestCase):
    """A flood of events becomes a trickle plus a count."""

    def test_burstThenSuppressed(self) -> None:
        """At most burst events per interval; the next one says how many were left out."""
        clock = Clock()
        events: list[dict[str, Any]] = []
        log = RateLimitedLog(Logger(observer=events.append), clock.seconds, burst=3, interval=1)
        for _ in range(10):
            log.warn("bad {n}", n=1)
        self.assertEqual(len(events), 3)
        clock.advance(1)
        log.warn("bad {n}", n=2)
        self.assertEqual(len(events), 4)
        self.assertEqual(events[-1]["suppressed"], 7)
        self.assertEqual(log.suppressedTotal, 7)

    def test_kindsAreLimitedSeparately(self) -> None:
        """A flood of one kind of event does not hide another kind."""
        clock = Clock()
        events: list[dict[str, Any]] = []
        log = RateLimitedLog(Logger(observer=events.append), clock.seconds, burst=2, interval=1)
        for _ in range(50):
            log.warn("refused {n}", n=1)
        log.warn("handler error {n}", n=2)
        self.assertEqual([e["log_format"] for e in events][-1], "handler error {n}")
        self.assertEqual(log.suppressed("refused {n}"), 48)


class PushingTransport:
    """A StringTransport that pauses its producer past C{mark} unsent bytes, as TCP does."""

    @staticmethod
    def make(mark: int) -> Any:
        from twisted.internet.testing import StringTransport

        class Pushing(StringTransport):
            def write(self, data: bytes) -> None:
                super().write(data)
                if len(self.value()) > mark and self.producer is not None:
                    self.producer.pauseProducing()

            def writeSequence(self, data: Any) -> None:
                self.write(b"".join(data))

        return Pushing()


class RegressionTests(SynchronousTestCase):
    """Flow-control and lifecycle cases found in review."""

    def connectWith(self, contextClass: Any, transport: Any, **limits: Any) -> Any:
        factory = makeFactory(contextClass, **limits)
        context = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1))
        context.makeConnection(transport)
        return factory, context

    def test_crossingWriteCounts(self) -> None:
        """A single batch that crosses far past maxPendingWrite closes the client as slow."""
        transport = PushingTransport.make(64 * 1024)
        factory, context = self.connectWith(EchoContext, transport, maxPendingWrite=128 * 1024)
        context.dataReceived(frame(b"z" * 1000) * 200)  # 200 KB of replies in one batch
        self.assertEqual(context.closeReason, errors.SLOW_CLIENT)

    def test_writeDuringFlushNotLost(self) -> None:
        """What writabilityChanged(False) writes while the batch is flushed still goes out."""

        class Polite(EchoContext):
            def writabilityChanged(self, writable: bool) -> None:
                if not writable:
                    self.writeObject(b"slow down")

        transport = PushingTransport.make(1000)
        factory, context = self.connectWith(Polite, transport)
        context.dataReceived(frame(b"y" * 2000))
        out = []
        from tests.helpers import feedChunks

        out = feedChunks(factory.newDecoder(), [transport.value()])
        self.assertEqual(out, [b"y" * 2000, b"slow down"])

    def test_queuedObjectsBeforeDecodeErrorDelivered(self) -> None:
        """Behind a slow handler, objects before a bad header are still delivered, then it closes."""
        connection = connect(makeFactory(SlowHandler))
        context: Any = connection.context
        connection.feed(frame(b"1") + frame(b"2") + struct.pack(">I", 2**31))
        self.assertIsNone(context.closeReason)
        context.waiting[0].callback(None)
        context.waiting[1].callback(None)
        self.assertEqual(connection.readObjects(), [b"1", b"2"])
        self.assertEqual(context.closeReason, errors.FRAME_TOO_LONG)

    def test_longBacklogDrainsInOrder(self) -> None:
        """Thousands of objects behind a slow handler drain one by one, in order."""
        connection = connect(makeFactory(SlowHandler, maxPendingObjects=100_000))
        context: Any = connection.context
        connection.feed(b"".join(frame(b"%d" % i) for i in range(3000)))
        for index in range(3000):
            context.waiting[index].callback(None)
        self.assertEqual(connection.readObjects(), [b"%d" % i for i in range(3000)])

    def test_cancelledHandlerIsNotAnError(self) -> None:
        """Cancelling a pending handler Deferred in connectionLost is clean-up, not an error."""

        class Cancelling(SlowHandler):
            def connectionLost(self, reason: Any = None) -> None:
                for d in self.waiting:
                    d.cancel()

        connection = connect(makeFactory(Cancelling))
        connection.feed(frame(b"1"))
        connection.disconnect()
        self.assertEqual(connection.factory.counters.handlerErrors, 0)
        self.assertEqual(connection.context.closeReason, errors.PEER)

    def test_mixinConnectionLostStillReleases(self) -> None:
        """A connectionLost inherited from a mixin is wrapped too: the context is released."""

        class AuditMixin:
            def connectionLost(self, reason: Any = None) -> None:
                pass

        class Audited(AuditMixin, EchoContext):  # type: ignore[misc]
            pass

        connection = connect(makeFactory(Audited))
        connection.disconnect()
        self.assertEqual(connection.factory.onlineCount, 0)

    def test_decodeLastRaisingStillReleases(self) -> None:
        """A decodeLast that raises is a handler error; the context is still released."""
        from zope.interface import implementer

        from iocpsvc.interfaces import IDecoder

        @implementer(IDecoder)
        class Fragile:
            maxFrameLength = 100

            def decode(self, data: Any, out: list[object]) -> int:
                return 0

            def decodeLast(self, data: bytes) -> list[object]:
                raise UnicodeDecodeError("ascii", b"\xc3", 0, 1, "bad")

        factory = makeFactory()
        factory.registerDecoder(Fragile)
        connection = connect(factory)
        connection.feed(b"partial")
        connection.disconnect()
        self.assertEqual(factory.onlineCount, 0)
        self.assertEqual(factory.counters.handlerErrors, 1)
        self.assertEqual(len(self.flushLoggedErrors(UnicodeDecodeError)), 1)

    def test_overrideAfterSuperStillOnline(self) -> None:
        """Code after super().connectionLost() in a subclass runs while the context is still online."""
        seen: list[int] = []

        class Base(EchoContext):
            def connectionLost(self, reason: Any = None) -> None:
                pass

        class Child(Base):
            def connectionLost(self, reason: Any = None) -> None:
                super().connectionLost(reason)
                seen.append(self.factory.onlineCount)  # type: ignore[union-attr]

        connection = connect(makeFactory(Child))
        connection.disconnect()
        self.assertEqual(seen, [1])
        self.assertEqual(connection.factory.onlineCount, 0)

    def test_decoderClassNeedingArguments(self) -> None:
        """Registering a decoder class that cannot be made without arguments fails at once."""
        from iocpsvc.codecs.line import DelimiterDecoder

        self.assertRaises(TypeError, makeFactory().registerDecoder, DelimiterDecoder)


class KeepReadingTests(SynchronousTestCase):
    """pauseReadingWhenWriteBlocked = False: a client keeps reading while its writes back up."""

    def test_keepsDispatchingWhileBlocked(self) -> None:
        """Blocked writes do not stop reading or dispatch; writability is still reported."""

        class Client(Watcher):
            pauseReadingWhenWriteBlocked = False

        connection = connect(makeFactory(Client))
        context: Any = connection.context
        context.pauseProducing()  # requests back up
        self.assertFalse(context.writable)
        self.assertEqual(connection.transport.producerState, "producing")
        connection.feed(frame(b"reply"))
        self.assertEqual(context.received, [b"reply"])
        context.resumeProducing()
        self.assertEqual(context.changes, [False, True])

    def test_slowClientLimitStillApplies(self) -> None:
        """Past maxPendingWrite the connection still closes as slow-client."""

        class Client(EchoContext):
            pauseReadingWhenWriteBlocked = False

        transport = PushingTransport.make(1000)
        factory = makeFactory(Client, writeHighWater=1000, maxPendingWrite=5000)
        context = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1))
        context.makeConnection(transport)
        context.writeObject(b"q" * 2000)
        self.assertIsNone(context.closeReason)
        context.writeObject(b"q" * 4000)
        self.assertEqual(context.closeReason, errors.SLOW_CLIENT)


# Every test above, again on the pure-Python implementation (iocpsvc.accel).
bothImplementations(globals())
