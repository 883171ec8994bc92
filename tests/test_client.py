"""
The client side (iocpsvc.client): connect() and RequestContext against
iocpsvc servers and Twisted's own Int32StringReceiver over real TCP on
127.0.0.1, request timeouts and cancellation on a Clock, the reconnecting
ClientService after a dropped connection and a server restart, and 200
client contexts at once.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.application.internet import ClientService
from twisted.internet import defer, protocol
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionClosed, ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock, deferLater
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from iocpsvc import errors
from iocpsvc.apps import EchoContext
from iocpsvc.client import (
    ReconnectingClientService,
    RequestContext,
    clientEndpoint,
    clientFactory,
    connect,
    reconnectingClient,
)
from iocpsvc.context import ConnectionContext
from iocpsvc.errors import EncodeError
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.limits import ServerLimits
from iocpsvc.service import SocketServerService
from iocpsvc.testing import EmbeddedConnection
from tests.helpers import encodedBytes, startServer

CONNECTIONS = 200


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def address(port: int) -> str:
    """The client endpoint description of 127.0.0.1:C{port}."""
    return f"tcp:host=127.0.0.1:port={port}:timeout=30"


class DroppingEchoContext(EchoContext):
    """Echoes, except that C{b"drop"} aborts the connection instead."""

    __slots__ = ()

    def objectReceived(self, obj: object) -> None:
        if obj == b"drop":
            self.abort()
        else:
            self.writeObject(obj)


class LossNotifyingContext(RequestContext):
    """A RequestContext whose C{lost} fires once its connection is gone (C{lostReason} says why)."""

    def __init__(self) -> None:
        super().__init__()
        self.lost: Deferred[None] = Deferred()
        self.lostReason: Failure | None = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lostReason = reason
        self.lost.callback(None)


class JsonEchoContext(EchoContext):
    """An echo context that carries its codec, to use on both sides."""

    __slots__ = ()

    defaultCodec = "line+json"


class JsonRequestContext(RequestContext):
    """A request context with the same codec as L{JsonEchoContext}."""

    __slots__ = ()

    defaultCodec = JsonEchoContext.defaultCodec


class ServerMixin:
    """Start iocpsvc servers on 127.0.0.1 and stop them after the test."""

    def startServer(
        self, codec: str | None, contextClass: Any = EchoContext, port: int = 0
    ) -> tuple[ConnectionContextFactory, int, SocketServerService]:
        return startServer(self, codec, contextClass, listen=f"tcp:{port}:interface=127.0.0.1")

    @defer.inlineCallbacks
    def connectClient(self, port: int, contextClass: Any = RequestContext, codec: str | None = None) -> Any:
        """Connect a client context; it is closed after the test."""
        context = yield connect(_reactor(), address(port), contextClass, codec)
        self.addCleanup(context.factory.closeAll, errors.LOCAL)  # type: ignore[attr-defined]
        return context


class ConnectTests(ServerMixin, TestCase):
    """connect() gives a connected context that talks to iocpsvc servers."""

    timeout = 60

    @defer.inlineCallbacks
    def test_echoLength(self) -> Any:
        """A RequestContext gets its request back from an echo server (codec length)."""
        factory, port, _ = self.startServer("length")
        client = yield self.connectClient(port, RequestContext, "length")
        self.assertIsInstance(client, RequestContext)
        self.assertEqual(client.factory.limits.idleTimeout, 0)
        reply = yield client.request(b"hello, server")
        self.assertEqual(reply, b"hello, server")
        reply = yield client.request(b"")
        self.assertEqual(reply, b"")
        self.assertEqual(client.waitingRequests, 0)
        self.assertEqual((client.framesSent, client.framesReceived), (2, 2))
        self.assertEqual(factory.counters.acceptedTotal, 1)

    @defer.inlineCallbacks
    def test_pipelinedRepliesInOrder(self) -> Any:
        """A thousand requests written at once come back each to its own Deferred, in order."""
        _, port, _ = self.startServer("length")
        client = yield self.connectClient(port, RequestContext, "length")
        rng = random.Random(1)
        payloads = [rng.randbytes(rng.choice((0, 1, 10, 1000, 70_000))) for _ in range(1000)]
        replies = yield defer.gatherResults([client.request(p) for p in payloads])
        self.assertEqual(replies, payloads)

    @defer.inlineCallbacks
    def test_lineJson(self) -> Any:
        """Over line+json, JSON objects make the round trip, pipelined and in order."""
        _, port, _ = self.startServer("line+json")
        client = yield self.connectClient(port, RequestContext, "line+json")
        requests = [
            {"op": "ping", "n": n, "text": "é" * (n % 7), "list": [n, None, True]} for n in range(300)
        ]
        replies = yield defer.gatherResults([client.request(r) for r in requests])
        self.assertEqual(replies, requests)

    @defer.inlineCallbacks
    def test_diocp(self) -> Any:
        """Over DIOCP's stream coder, payloads make the round trip, pipelined and in order."""
        _, port, _ = self.startServer("diocp")
        client = yield self.connectClient(port, RequestContext, "diocp")
        rng = random.Random(2)
        # Not b"": an empty DIOCP frame is a keep-alive, which gets no reply.
        payloads = [rng.randbytes(rng.randrange(1, 5000)) for _ in range(300)]
        replies = yield defer.gatherResults([client.request(p) for p in payloads])
        self.assertEqual(replies, payloads)

    @defer.inlineCallbacks
    def test_defaultCodecOnBothSides(self) -> Any:
        """Context classes that carry their codec (defaultCodec) need no codec argument on either side."""
        _, port, _ = self.startServer(None, JsonEchoContext)
        client = yield self.connectClient(port, JsonRequestContext)
        self.assertEqual(client.factory.codec.spec, "line+json")
        reply = yield client.request({"same": "codec"})
        self.assertEqual(reply, {"same": "codec"})

    @defer.inlineCallbacks
    def test_endpointInsteadOfDescription(self) -> Any:
        """connect() also takes an IStreamClientEndpoint, and a shared factory."""
        reactor = _reactor()
        _, port, _ = self.startServer("length")
        shared = clientFactory(reactor, RequestContext, "length")
        self.addCleanup(shared.closeAll, errors.LOCAL)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        self.assertIs(clientEndpoint(reactor, endpoint), endpoint)
        first = yield connect(reactor, endpoint, factory=shared)
        second = yield connect(reactor, address(port), factory=shared)
        self.assertEqual(shared.onlineCount, 2)
        self.assertEqual((yield first.request(b"1")), b"1")
        self.assertEqual((yield second.request(b"2")), b"2")

    def test_factoryWithOtherArguments(self) -> None:
        """A shared factory cannot be combined with a context class, codec or limits."""
        reactor = _reactor()
        shared = clientFactory(reactor)
        self.assertRaises(TypeError, connect, reactor, address(1), RequestContext, factory=shared)
        self.assertRaises(TypeError, connect, reactor, address(1), codec="line", factory=shared)

    def test_notAnEndpoint(self) -> None:
        """A description that is neither a string nor an endpoint is a TypeError."""
        self.assertRaises(TypeError, clientEndpoint, _reactor(), 9983)

    @defer.inlineCallbacks
    def test_connectionRefused(self) -> Any:
        """With nothing listening, the Deferred fails with ConnectionRefusedError."""
        _, port, service = self.startServer("length")
        yield service.stopService()
        yield self.assertFailure(connect(_reactor(), address(port)), ConnectionRefusedError)

    @defer.inlineCallbacks
    def test_lossFailsWaitingRequests(self) -> Any:
        """When the server drops the connection, every waiting request fails with the loss."""
        _, port, _ = self.startServer("length", DroppingEchoContext)
        client = yield self.connectClient(port, LossNotifyingContext, "length")
        self.assertEqual((yield client.request(b"before")), b"before")
        waiting = [client.request(b"drop"), client.request(b"a"), client.request(b"b")]
        for request in waiting:
            yield self.assertFailure(request, ConnectionClosed)
        yield client.lost
        self.assertIsInstance(client.lostReason.value, ConnectionClosed)
        self.assertEqual(client.closeReason, errors.PEER)
        self.assertEqual(client.waitingRequests, 0)
        late = client.request(b"after")
        yield self.assertFailure(late, ConnectionClosed)

    @defer.inlineCallbacks
    def test_closeFailsWaitingRequests(self) -> Any:
        """Closing the client with requests waiting fails them with ConnectionDone."""
        _, port, _ = self.startServer("length", ConnectionContext)  # never replies
        client = yield self.connectClient(port, LossNotifyingContext, "length")
        waiting = [client.request(b"x"), client.request(b"y")]
        client.close()
        self.assertEqual(client.closeReason, errors.LOCAL)
        yield self.assertFailure(client.request(b"z"), ConnectionClosed)
        for request in waiting:
            yield self.assertFailure(request, ConnectionDone)
        yield client.lost


class _ReversingServer(Int32StringReceiver):
    """Twisted's own length-prefixed receiver, answering each string reversed."""

    MAX_LENGTH = 10_000_000
    factory: Any

    def connectionMade(self) -> None:
        self.lost: Deferred[None] = Deferred()
        self.factory.connections.append(self)

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string[::-1])

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


class TwistedPeerTests(TestCase):
    """The client side talks to an independent peer: Twisted's Int32StringReceiver."""

    timeout = 60

    @defer.inlineCallbacks
    def test_int32StringReceiverServer(self) -> Any:
        """Requests over the length codec get Int32StringReceiver's answers, in order."""
        reactor = _reactor()
        serverFactory = protocol.Factory.forProtocol(_ReversingServer)
        serverFactory.connections = []  # type: ignore[attr-defined]
        port = reactor.listenTCP(0, serverFactory, interface="127.0.0.1")

        def stopServer() -> Deferred[Any]:
            port.stopListening()
            for connection in serverFactory.connections:  # type: ignore[attr-defined]
                connection.transport.loseConnection()
            return defer.gatherResults([c.lost for c in serverFactory.connections])  # type: ignore[attr-defined]

        self.addCleanup(stopServer)
        client = yield connect(reactor, address(port.getHost().port), RequestContext, "length")
        self.addCleanup(client.factory.closeAll, errors.LOCAL)
        rng = random.Random(3)
        payloads = [rng.randbytes(rng.choice((0, 5, 300, 100_000))) for _ in range(200)]
        replies = yield defer.gatherResults([client.request(p) for p in payloads])
        self.assertEqual(replies, [p[::-1] for p in payloads])


class RequestContextTests(SynchronousTestCase):
    """RequestContext on an in-memory connection with a Clock: matching, timeouts, errors."""

    def connection(self) -> EmbeddedConnection:
        return EmbeddedConnection(RequestContext, codec="length")

    def test_repliesMatchRequestsInOrder(self) -> None:
        """Replies arriving in one read fire the waiting requests oldest first."""
        connection = self.connection()
        context: Any = connection.context
        requests = [context.request(b"q%d" % n) for n in range(3)]
        self.assertEqual(connection.readObjects(), [b"q0", b"q1", b"q2"])
        self.assertEqual(context.waitingRequests, 3)
        connection.feedObjects(b"r0", b"r1")
        self.assertEqual([self.successResultOf(d) for d in requests[:2]], [b"r0", b"r1"])
        self.assertNoResult(requests[2])
        connection.feedObjects(b"r2")
        self.assertEqual(self.successResultOf(requests[2]), b"r2")

    def test_timeoutFailsAndCloses(self) -> None:
        """A request with no reply within its timeout fails with TimeoutError and closes the connection."""
        connection = self.connection()
        context: Any = connection.context
        timed = context.request(b"slow", timeout=5)
        other = context.request(b"next")
        connection.clock.advance(4.9)
        self.assertNoResult(timed)
        self.assertFalse(connection.closing)
        connection.clock.advance(0.1)
        self.failureResultOf(timed, TimeoutError)
        self.assertTrue(connection.closing)
        self.assertEqual(context.closeReason, errors.LOCAL)
        # A late reply is not taken for the next request's.
        connection.feedObjects(b"late reply to slow")
        self.assertNoResult(other)
        connection.disconnect()
        self.failureResultOf(other, ConnectionDone)
        self.assertEqual(connection.clock.getDelayedCalls(), [])

    def test_replyCancelsTimer(self) -> None:
        """A reply in time cancels the request's timer; the connection stays open."""
        connection = self.connection()
        context: Any = connection.context
        request = context.request(b"fast", timeout=5)
        self.assertEqual(len(connection.clock.getDelayedCalls()), 1)
        connection.feedObjects(b"ok")
        self.assertEqual(self.successResultOf(request), b"ok")
        self.assertEqual(connection.clock.getDelayedCalls(), [])
        connection.clock.advance(10)
        self.assertFalse(connection.closing)

    def test_lossFailsEveryWaitingRequest(self) -> None:
        """connectionLost fails every waiting request with its reason and cancels their timers."""
        connection = self.connection()
        context: Any = connection.context
        requests = [
            context.request(b"a", timeout=30),
            context.request(b"b"),
            context.request(b"c", timeout=1),
        ]
        connection.disconnect(Failure(ConnectionLost("reset")))
        for request in requests:
            self.failureResultOf(request, ConnectionLost)
        self.assertEqual(context.waitingRequests, 0)
        self.assertEqual(connection.clock.getDelayedCalls(), [])
        self.failureResultOf(context.request(b"after"), ConnectionClosed)

    def test_requestsFailBeforeSubclassConnectionLost(self) -> None:
        """A subclass's connectionLost, even without super(), finds every request already failed."""
        seen = []

        class Client(RequestContext):
            def connectionLost(self, reason: Failure = connectionDone) -> None:
                seen.append(request.called)

        connection = EmbeddedConnection(Client, codec="length")
        request = connection.context.request(b"x")  # type: ignore[attr-defined]
        connection.disconnect()
        self.assertEqual(seen, [True])
        self.failureResultOf(request, ConnectionDone)

    def test_unsolicitedObjectIsProtocolError(self) -> None:
        """An object received with no request waiting closes the connection (protocol-error)."""
        connection = self.connection()
        connection.feedObjects(b"who asked?")
        self.assertTrue(connection.closing)
        self.assertEqual(connection.context.closeReason, errors.PROTOCOL_ERROR)

    def test_unsolicitedObjectAfterReplies(self) -> None:
        """One reply too many in a read: the requests get theirs, then the connection closes."""
        connection = self.connection()
        request = connection.context.request(b"q")  # type: ignore[attr-defined]
        connection.feedObjects(b"r", b"extra")
        self.assertEqual(self.successResultOf(request), b"r")
        self.assertEqual(connection.context.closeReason, errors.PROTOCOL_ERROR)

    def test_cancelKeepsPlace(self) -> None:
        """A cancelled request fails with CancelledError; its reply is dropped and the next gets its own."""
        connection = self.connection()
        context: Any = connection.context
        first = context.request(b"1", timeout=5)
        second = context.request(b"2")
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.assertEqual(len(connection.clock.getDelayedCalls()), 0)
        connection.feedObjects(b"reply 1", b"reply 2")
        self.assertEqual(self.successResultOf(second), b"reply 2")
        self.assertFalse(connection.closing)

    def test_encodeErrorSendsNothing(self) -> None:
        """A request the codec cannot encode fails with EncodeError; nothing is sent, the connection stays."""
        connection = self.connection()
        context: Any = connection.context
        self.failureResultOf(context.request("not bytes"), EncodeError)
        self.assertEqual(context.waitingRequests, 0)
        self.assertEqual(connection.readBytes(), b"")
        self.assertFalse(connection.closing)
        request = context.request(b"fine")
        connection.feedObjects(b"ok")
        self.assertEqual(self.successResultOf(request), b"ok")

    def test_negativeTimeout(self) -> None:
        """A negative timeout is refused before anything is sent."""
        connection = self.connection()
        self.assertRaises(ValueError, connection.context.request, b"x", timeout=-1)  # type: ignore[attr-defined]
        self.assertEqual(connection.readBytes(), b"")

    def test_callbackMayRequestAgain(self) -> None:
        """A reply's callback can send the next request; it is written in order, once the read is done."""
        connection = self.connection()
        context: Any = connection.context
        results: list[object] = []

        def again(reply: object) -> None:
            results.append(reply)
            context.request(b"follow-up").addCallback(results.append)

        context.request(b"first").addCallback(again)
        connection.readObjects()
        connection.feedObjects(b"one")
        self.assertEqual(connection.readObjects(), [b"follow-up"])
        connection.feedObjects(b"two")
        self.assertEqual(results, [b"one", b"two"])

    def test_keepsReadingWhileWritesBackUp(self) -> None:
        """Past the write high water mark a RequestContext says so, but keeps reading and dispatching."""
        changes: list[bool] = []

        class Client(RequestContext):
            def writabilityChanged(self, writable: bool) -> None:
                changes.append(writable)

        connection = EmbeddedConnection(Client, codec="length")
        context: Any = connection.context
        self.assertIs(connection.transport.producer, context)
        request = context.request(b"big")
        connection.transport.producer.pauseProducing()  # what a full transport does
        self.assertFalse(context.writable)
        self.assertEqual(connection.transport.producerState, "producing")
        connection.feedObjects(b"reply")
        self.assertEqual(self.successResultOf(request), b"reply")
        connection.transport.producer.resumeProducing()
        self.assertTrue(context.writable)
        self.assertEqual(changes, [False, True])

    def test_clientLimitsDefault(self) -> None:
        """A client factory has no idle timeout and no connection limit unless given limits."""
        clock = Clock()
        self.assertEqual(clientFactory(clock).limits.idleTimeout, 0)
        self.assertIsNone(clientFactory(clock).limits.maxConnections)
        given = ServerLimits(idleTimeout=7)
        self.assertIs(clientFactory(clock, limits=given).limits, given)


class ReconnectingClientTests(ServerMixin, TestCase):
    """reconnectingClient keeps a connection up through drops and server restarts."""

    timeout = 60

    def startClient(self, port: int) -> ReconnectingClientService:
        service = reconnectingClient(
            _reactor(), address(port), LossNotifyingContext, "length", retryPolicy=lambda attempt: 0.01
        )
        self.assertIsInstance(service, ClientService)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    @defer.inlineCallbacks
    def nextContext(self, service: ClientService, old: LossNotifyingContext) -> Any:
        """The connection after C{old}: wait until C{old} is lost, then for the service to reconnect."""
        yield old.lost
        # One reactor turn: the service hears of the loss only after the
        # context's connectionLost has returned.
        yield deferLater(_reactor(), 0, lambda: None)
        context = yield service.whenConnected()
        self.assertIsNot(context, old)
        return context

    @defer.inlineCallbacks
    def test_reconnectsAfterServerDrops(self) -> Any:
        """After the server aborts the connection, the service connects again with a new context."""
        serverFactory, port, _ = self.startServer("length")
        service = self.startClient(port)
        first = yield service.whenConnected()
        self.assertIsInstance(first, LossNotifyingContext)
        self.assertEqual((yield first.request(b"one")), b"one")
        for serverContext in serverFactory.contexts():
            serverContext.abort()
        second = yield self.nextContext(service, first)
        self.assertEqual((yield second.request(b"two")), b"two")
        self.assertEqual(serverFactory.counters.acceptedTotal, 2)
        self.assertEqual(service.factory.counters.acceptedTotal, 2)

    @defer.inlineCallbacks
    def test_reconnectsAfterServerRestart(self) -> Any:
        """When the server stops and a new one listens on the same port, the service connects to it."""
        _, port, server = self.startServer("length")
        service = self.startClient(port)
        first = yield service.whenConnected()
        self.assertEqual((yield first.request(b"one")), b"one")
        yield server.stopService()
        yield first.lost
        newFactory, newPort, _ = self.startServer("length", port=port)
        self.assertEqual(newPort, port)
        second = yield self.nextContext(service, first)
        self.assertEqual((yield second.request(b"two")), b"two")
        self.assertEqual(newFactory.counters.acceptedTotal, 1)

    @defer.inlineCallbacks
    def test_stopClosesWithShutdown(self) -> Any:
        """stopService closes the context (reason shutdown) and fires once it is gone."""
        _, port, _ = self.startServer("length")
        service = self.startClient(port)
        context = yield service.whenConnected()
        yield service.stopService()
        self.assertEqual(context.closeReason, errors.SHUTDOWN)
        self.assertTrue(context.lost.called)
        self.assertEqual(service.factory.onlineCount, 0)


class ConcurrentClientTests(ServerMixin, TestCase):
    """Many client contexts at once against one server."""

    timeout = 120

    @defer.inlineCallbacks
    def test_manyClients(self) -> Any:
        """200 client contexts, each pipelining random payloads, all get byte-exact echoes."""
        reactor = _reactor()
        serverFactory, port, _ = self.startServer("length")
        clients = clientFactory(reactor, RequestContext, "length")
        self.addCleanup(clients.closeAll, errors.LOCAL)
        contexts = yield defer.gatherResults(
            [connect(reactor, address(port), factory=clients) for _ in range(CONNECTIONS)]
        )
        self.assertEqual(clients.onlineCount, CONNECTIONS)
        rng = random.Random(4)
        sent = [
            [rng.randbytes(rng.randrange(0, 20_000)) for _ in range(rng.randrange(1, 10))] for _ in contexts
        ]
        received = yield defer.gatherResults(
            [
                defer.gatherResults([context.request(payload) for payload in payloads])
                for context, payloads in zip(contexts, sent, strict=True)
            ]
        )
        self.assertEqual(sum(r == s for r, s in zip(received, sent, strict=True)), CONNECTIONS)
        self.assertEqual(serverFactory.counters.acceptedTotal, CONNECTIONS)
        self.assertEqual(clients.bytesReceivedTotal, clients.bytesSentTotal)
        yield clients.closeAll(errors.LOCAL)
        self.assertEqual(clients.counters.closedTotal[errors.LOCAL], CONNECTIONS)


class KeepAliveContext(RequestContext):
    """Sends DIOCP keep-alives after a second of sending nothing."""

    keepAliveInterval = 1.0


def recordWrites(connection: EmbeddedConnection) -> list[bytes]:
    """Every transport write of C{connection}'s context, one entry each."""
    writes: list[bytes] = []
    original = connection.transport.write

    def write(data: bytes) -> None:
        writes.append(bytes(data))
        original(data)

    connection.transport.write = write  # type: ignore[method-assign]
    return writes


class KeepAliveTests(SynchronousTestCase):
    """DIOCP keep-alives: sent only when idle, never in the same write as data."""

    def test_keepAliveRequestRefused(self) -> None:
        """request(b"") on diocp encodes to the keep-alive, which gets no reply: it fails, nothing is sent."""
        connection = EmbeddedConnection(RequestContext, codec="diocp")
        context: Any = connection.context
        failure = self.failureResultOf(context.request(b""), EncodeError)
        self.assertIn("keep-alive", str(failure.value))
        self.assertEqual((context.waitingRequests, connection.readBytes()), (0, b""))
        self.assertFalse(connection.closing)

    def test_sentOnlyWhenIdle(self) -> None:
        """sendKeepAlive writes the frame alone; with a batch being collected it sends nothing."""
        from iocpsvc.codecs.diocp import DiocpStreamEncoder

        connection = EmbeddedConnection(RequestContext, codec="diocp")
        context: Any = connection.context
        writes = recordWrites(connection)
        self.assertTrue(context.sendKeepAlive())
        self.assertEqual(writes, [DiocpStreamEncoder.keepAliveFrame])
        context._batch = []  # as while the replies of a read are collected
        self.assertFalse(context.sendKeepAlive())
        context._batch = None
        self.assertFalse(EmbeddedConnection(RequestContext, codec="length").context.sendKeepAlive())  # type: ignore[attr-defined]

    def test_notWhileDataWaits(self) -> None:
        """While written bytes wait to be sent, no keep-alive is sent."""
        connection = EmbeddedConnection(RequestContext, codec="diocp")
        context: Any = connection.context
        context.pauseProducing()  # the transport is over its high water mark
        context._blockedBytes = 100  # and these wait
        self.assertGreater(context.pendingWriteBytes, 0)
        self.assertFalse(context.sendKeepAlive())

    def test_intervalSendsWhenSilent(self) -> None:
        """With keepAliveInterval, a keep-alive goes after a silent interval, alone, never beside requests."""
        from iocpsvc.codecs.diocp import DiocpStreamEncoder

        connection = EmbeddedConnection(KeepAliveContext, codec="diocp")
        context: Any = connection.context
        writes = recordWrites(connection)
        keepAlive = DiocpStreamEncoder.keepAliveFrame
        requests = []
        for second in range(6):
            if second % 3 == 0:
                requests.append(context.request(b"busy %d" % second))
            connection.clock.advance(1)
        # Each write is either a keep-alive on its own or requests, never both.
        self.assertTrue(all(w == keepAlive or keepAlive not in w for w in writes), writes)
        # Requests at 0 s and 3 s; ticks each second: the ticks at 2, 3, 5
        # and 6 s each end a second in which nothing was sent.
        self.assertEqual(writes.count(keepAlive), 4)
        connection.disconnect()
        for request in requests:
            self.failureResultOf(request, ConnectionDone)
        connection.clock.advance(5)
        self.assertEqual(connection.clock.getDelayedCalls(), [])


class DiocpLikePeer(protocol.Protocol):
    """
    Decodes DIOCP frames as DIOCP's own server does: a read is decoded up
    to a keep-alive, and what follows it waits for the next read; each data
    frame is echoed.
    """

    def connectionMade(self) -> None:
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        from iocpsvc.codecs.diocp import DiocpStreamEncoder

        self.buffer += data
        encoder = DiocpStreamEncoder()
        while len(self.buffer) >= 10:
            length = int.from_bytes(self.buffer[6:10], "big")
            if len(self.buffer) < 10 + length:
                return
            payload, self.buffer = self.buffer[10 : 10 + length], self.buffer[10 + length :]
            if not length:
                return  # DIOCP stops here: the rest waits for the next read
            self.transport.write(encodedBytes(encoder.encode(payload)))  # type: ignore[union-attr]


class KeepAliveOverTCPTests(TestCase):
    """Against a peer that stops decoding a read at a keep-alive, as DIOCP does."""

    timeout = 30

    @defer.inlineCallbacks
    def test_noRequestStalls(self) -> Any:
        """Rounds of pipelined requests with idle keep-alives between them: every reply comes."""
        reactor = _reactor()
        factory = protocol.Factory.forProtocol(DiocpLikePeer)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        clock = Clock()
        clients = clientFactory(clock, KeepAliveContext, "diocp")
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        context: Any = yield connect(reactor, endpoint, factory=clients)
        self.addCleanup(clients.closeAll, errors.LOCAL)
        for round in range(24):
            payloads = [b"r%d-%d" % (round, n) for n in range(5)]
            replies = yield defer.gatherResults([context.request(p, timeout=None) for p in payloads])
            self.assertEqual(replies, payloads)
            clock.advance(1)
            clock.advance(1)  # a silent interval: a keep-alive goes out alone
        self.assertGreaterEqual(context.bytesSent, 24 * 10)  # the keep-alives went out too
