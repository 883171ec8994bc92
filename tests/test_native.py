"""
Native transports (L{iocpsvc.native}): the event loop's protocol and the
context's transport in one object, tested against a stand-in for an
asyncio transport; then, under Twisted's asyncio reactor (C{trial
--reactor=uvloop}, as CI runs the suite a second time), over real sockets.
"""

from __future__ import annotations

import socket
import struct
import sys
from typing import Any

from twisted.internet import defer, error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from iocpsvc import errors
from iocpsvc.apps import EchoContext
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.limits import ServerLimits
from iocpsvc.native import NativeConnection, servesNatively
from iocpsvc.service import SocketServerService, describeTransports
from iocpsvc.transports import unsentBytes
from tests.helpers import frame
from tests.netutil import connectRaw, servedNatively, waitUntil


class FakeSocket:
    """The socket-like object of a stand-in transport: options only."""

    def __init__(self) -> None:
        self.options: dict[tuple[int, int], Any] = {}

    def setsockopt(self, level: int, name: int, value: Any) -> None:
        self.options[(level, name)] = value

    def getsockopt(self, level: int, name: int) -> Any:
        return self.options.get((level, name), 0)


class FakeTransport:
    """Stands for an asyncio transport: records what was asked of it."""

    def __init__(self, peer: Any = ("127.0.0.1", 40000), host: Any = ("127.0.0.1", 9983)) -> None:
        self.extra = {"peername": peer, "sockname": host, "socket": FakeSocket()}
        self.written: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.reading = True
        self.limits = (16384, 65536)
        self.bufferSize = 0
        self.eof = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, data: Any) -> None:
        self.written.extend(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        self.limits = (low, high)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.limits

    def get_write_buffer_size(self) -> int:
        return self.bufferSize

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True


class FakeLoop:
    def __init__(self) -> None:
        self.soon: list[Any] = []

    def call_soon(self, f: Any, *args: Any) -> None:
        self.soon.append((f, args))

    def run(self) -> None:
        while self.soon:
            f, args = self.soon.pop(0)
            f(*args)


class FakePort:
    """Stands for a native port: its factory, its gate, its address types."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self._gate = factory
        self._loop = FakeLoop()

    def _peerAddress(self, name: Any) -> Any:
        return IPv4Address("TCP", *name)


class Producer:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class NativeConnectionTests(SynchronousTestCase):
    """A L{NativeConnection} between a stand-in transport and a real context."""

    def connect(self, limits: ServerLimits | None = None, **extra: Any) -> tuple[Any, Any, Any]:
        from twisted.internet.task import Clock

        factory = ConnectionContextFactory(EchoContext, reactor=Clock(), limits=limits)
        connection = NativeConnection(FakePort(factory))
        transport = FakeTransport(**extra)
        connection.connection_made(transport)
        return factory, connection, transport

    def test_echo(self) -> None:
        """Bytes in go to the context; its batch leaves in one write."""
        factory, connection, transport = self.connect()
        self.assertEqual(factory.onlineCount, 1)
        context = next(iter(factory.contexts()))
        self.assertIs(context.transport, connection)
        connection.data_received(frame(b"a") + frame(b"b") + frame(b"c")[:3])
        connection.data_received(frame(b"c")[3:])
        self.assertEqual(b"".join(transport.written), frame(b"a") + frame(b"b") + frame(b"c"))
        self.assertEqual(len(transport.written), 2)  # one write per read
        self.assertEqual(context.bytesReceived, 15)

    def test_addresses(self) -> None:
        """getPeer and getHost are Twisted's address objects."""
        _, connection, _ = self.connect()
        self.assertEqual(connection.getPeer(), IPv4Address("TCP", "127.0.0.1", 40000))
        self.assertEqual(connection.getHost(), IPv4Address("TCP", "127.0.0.1", 9983))

    def test_highWaterAndUnsent(self) -> None:
        """The context's high water mark becomes the loop's write limits; unsent bytes are the loop's."""
        _, connection, transport = self.connect(ServerLimits(writeHighWater=1000))
        self.assertEqual(transport.limits, (0, 1000))
        self.assertEqual(connection.bufferSize, 1000)
        transport.bufferSize = 1234
        self.assertEqual(unsentBytes(connection), 1234)
        context = connection._protocol
        self.assertEqual(context.pendingWriteBytes, 1234)

    def test_keepAlive(self) -> None:
        """The factory's keep-alive reaches the socket's options."""
        _, connection, transport = self.connect(ServerLimits(keepAlive=True, keepAliveIdle=30))
        options = transport.extra["socket"].options
        self.assertEqual(options[(socket.SOL_SOCKET, socket.SO_KEEPALIVE)], 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            self.assertEqual(options[(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)], 30)
        self.assertTrue(connection.getTcpKeepAlive())

    def test_backpressure(self) -> None:
        """pause_writing and resume_writing reach the context: reading stops and resumes."""
        _, connection, transport = self.connect()
        context = connection._protocol
        connection.pause_writing()
        self.assertFalse(context.writable)
        self.assertFalse(transport.reading)
        connection.resume_writing()
        self.assertTrue(context.writable)
        self.assertTrue(transport.reading)

    def test_slowClient(self) -> None:
        """Past the pending-write limit, the connection is aborted as a slow client."""
        factory, connection, transport = self.connect(ServerLimits(writeHighWater=10, maxPendingWrite=100))
        context = connection._protocol
        connection.pause_writing()
        transport.bufferSize = 101
        context.writeObject(b"x" * 50)
        self.assertTrue(transport.aborted)
        self.assertEqual(context.closeReason, errors.SLOW_CLIENT)

    def test_close(self) -> None:
        """close() hands the loop a graceful close; the loss reaches the context once."""
        factory, connection, transport = self.connect()
        context = connection._protocol
        context.close()
        self.assertTrue(transport.closed)
        self.assertTrue(connection.disconnecting)
        connection.write(b"late")  # dropped, as Twisted's transports drop it
        self.assertEqual(transport.written, [])
        connection.connection_lost(None)
        self.assertEqual(factory.onlineCount, 0)
        self.assertEqual(context.closeReason, errors.LOCAL)
        self.assertEqual(connection.connected, 0)

    def test_abort(self) -> None:
        """abortConnection aborts the loop's transport; the context hears ConnectionAborted."""
        _, connection, transport = self.connect()
        lost: list[Failure] = []
        context = connection._protocol
        context.connectionLost = lost.append  # type: ignore[method-assign]
        connection.abortConnection()
        self.assertTrue(transport.aborted)
        connection.connection_lost(None)
        self.assertTrue(lost[0].check(error.ConnectionAborted))

    def test_peerLeaves(self) -> None:
        """A clean end is ConnectionDone, an error ConnectionLost; the context is released."""
        factory, connection, _ = self.connect()
        context = connection._protocol
        connection.connection_lost(ConnectionResetError(104, "reset"))
        self.assertEqual(context.closeReason, errors.PEER)
        self.assertEqual(factory.onlineCount, 0)
        self.assertEqual(factory.counters.closedTotal[errors.PEER], 1)

    def test_refusedAtAccept(self) -> None:
        """Past the connection limit: reset and aborted, no context made, counted."""
        factory, first, _ = self.connect(ServerLimits(maxConnections=1))
        second = NativeConnection(first._port)
        transport = FakeTransport(peer=("127.0.0.1", 40001))
        second.connection_made(transport)
        self.assertTrue(transport.aborted)
        self.assertEqual(
            transport.extra["socket"].options[(socket.SOL_SOCKET, socket.SO_LINGER)],
            struct.pack("ii", 1, 0),
        )
        self.assertEqual(factory.counters.refusedTotal, 1)
        self.assertEqual(factory.onlineCount, 1)
        second.connection_lost(None)  # nothing to tell: no context
        self.assertEqual(factory.onlineCount, 1)

    def test_filteredAtAccept(self) -> None:
        """The accept filter refuses before any context is made."""
        factory, connection, transport = self.connect(ServerLimits(deny=["127.0.0.0/8"]))
        self.assertTrue(transport.aborted)
        self.assertIsNone(connection._protocol)
        self.assertEqual(factory.onlineCount, 0)
        self.assertEqual(factory.counters.closedTotal[errors.REFUSED], 1)

    def test_streamingProducer(self) -> None:
        """Another streaming producer hears backpressure and the end."""
        _, connection, _ = self.connect()
        context = connection._protocol
        connection.unregisterProducer()  # the context was registered
        context._producing = False
        producer = Producer()
        connection.registerProducer(producer, True)
        self.assertRaises(RuntimeError, connection.registerProducer, Producer(), True)
        connection.pause_writing()
        connection.resume_writing()
        connection.connection_lost(None)
        self.assertEqual(producer.calls, ["pause", "resume", "stop"])

    def test_pullProducer(self) -> None:
        """A pull producer is asked turn by turn while the socket keeps up, and not while it is full."""
        _, connection, _ = self.connect()
        connection.unregisterProducer()
        connection._protocol._producing = False
        producer = Producer()
        connection.registerProducer(producer, False)
        self.assertEqual(producer.calls, ["resume"])
        connection.pause_writing()
        connection._port._loop.run()  # the next turn: the socket is full, not asked
        self.assertEqual(producer.calls, ["resume"])
        connection.resume_writing()
        self.assertEqual(producer.calls, ["resume", "resume"])
        connection.unregisterProducer()
        connection._port._loop.run()
        self.assertEqual(producer.calls, ["resume", "resume"])

    def test_pausedReading(self) -> None:
        """The context's pauseReading pauses the loop's reading."""
        _, connection, transport = self.connect()
        context = connection._protocol
        context.pauseReading()
        self.assertFalse(transport.reading)
        context.resumeReading()
        self.assertTrue(transport.reading)

    def test_halfClose(self) -> None:
        """loseWriteConnection ends this side's stream."""
        _, connection, transport = self.connect()
        connection.loseWriteConnection()
        self.assertTrue(transport.eof)

    def test_onlyPlainContextFactories(self) -> None:
        """A context factory is served natively; a wrapping factory or one that opts out is not."""
        from twisted.internet.task import Clock
        from twisted.protocols.policies import WrappingFactory

        factory = ConnectionContextFactory(EchoContext, reactor=Clock())
        self.assertTrue(servesNatively(factory))
        self.assertFalse(servesNatively(WrappingFactory(factory)))
        factory.nativeTransports = False
        self.assertFalse(servesNatively(factory))

    def test_ipv6Peer(self) -> None:
        """An IPv6 peer is Twisted's IPv6Address, as Twisted's own port builds it."""
        from iocpsvc.native import NativeTCPPort

        port = NativeTCPPort(0, None, 50, "::1", None)
        self.assertEqual(port._peerAddress(("::1", 4000, 0, 0)), IPv6Address("TCP", "::1", 4000))


class StartLogTests(SynchronousTestCase):
    """The start log says, per listener, which transports serve it."""

    def test_notOnOtherReactors(self) -> None:
        from twisted.internet.task import Clock

        self.assertEqual(describeTransports(Clock(), []), "")

    def test_perListener(self) -> None:
        class Reactor:
            _asyncioEventloop = object()

        class Port:
            def __init__(self, number: int, kind: str | None) -> None:
                self.number = number
                if kind is not None:
                    self.describeTransport = kind

            def getHost(self) -> Any:
                return IPv4Address("TCP", "127.0.0.1", self.number)

        self.assertEqual(
            describeTransports(Reactor(), [Port(1, "native uvloop"), Port(2, "native uvloop")]),
            "; transports=native uvloop",
        )
        self.assertEqual(
            describeTransports(Reactor(), [Port(1, "native uvloop"), Port(2, None)]),
            "; transports=tcp:127.0.0.1:1: native uvloop, tcp:127.0.0.1:2: Twisted",
        )


class RealNativeTests(TestCase):
    """
    Over real sockets, under Twisted's asyncio reactor (the suite's second
    run in CI: C{python -m twisted.trial --reactor=uvloop tests}).
    """

    timeout = 60

    def setUp(self) -> None:
        from twisted.internet import reactor

        if not servedNatively(reactor):
            raise self.skipTest("native transports: run under trial --reactor=uvloop (or asyncio)")

    def start(self, *descriptions: str, limits: ServerLimits | None = None) -> tuple[Any, Any]:
        from twisted.internet import reactor

        factory = ConnectionContextFactory(EchoContext, reactor=reactor, limits=limits)
        service = SocketServerService(
            factory, list(descriptions or ["tcp:0:interface=127.0.0.1"]), reactor=reactor, shutdownTimeout=5
        )
        service.startService()
        self.addCleanup(service.stopService)
        return factory, service

    @defer.inlineCallbacks
    def test_servedNatively(self) -> Any:
        """A tcp: listener's connections are NativeConnections; the start log says so."""
        from twisted.internet import reactor

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        factory, service = self.start()
        port = service.ports[0]
        self.assertEqual(port.describeTransport.split()[0], "native")
        [client] = yield connectRaw(reactor, port.getHost().port, 1)
        client.transport.write(frame(b"hello"))
        yield waitUntil(reactor, lambda: bytes(client.received) == frame(b"hello"))
        [context] = list(factory.contexts())
        self.assertIsInstance(context.transport, NativeConnection)
        if sys.platform.startswith("linux"):
            # Keep-alive set once on the listening socket, and inherited.
            self.assertTrue(context.transport.keepAliveInherited)
        self.assertEqual(context.peer, client.transport.getHost())
        self.assertEqual(context.host, client.transport.getPeer())
        self.assertEqual(
            context.transport.getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0,
            factory.limits.keepAlive,
        )
        yield waitUntil(reactor, lambda: any("iocpsvc listening" in e.get("log_format", "") for e in events))
        started = [e for e in events if "iocpsvc listening" in e.get("log_format", "")][0]
        self.assertIn("transports=native", started["transports"])
        client.transport.loseConnection()
        yield client.lost
        yield waitUntil(reactor, lambda: factory.onlineCount == 0)

    @defer.inlineCallbacks
    def test_wrappedListenerKeepsTwisted(self) -> Any:
        """haproxy: wraps the factory: that listener keeps Twisted's transports."""
        from twisted.internet import reactor

        factory, service = self.start("tcp:0:interface=127.0.0.1", "haproxy:tcp:0:interface=127.0.0.1")
        native, wrapped = service.ports
        self.assertTrue(hasattr(native, "describeTransport"))
        self.assertFalse(hasattr(wrapped, "describeTransport"))
        self.assertIn("Twisted", describeTransports(reactor, service.ports))
        yield defer.succeed(None)

    @defer.inlineCallbacks
    def test_backpressureOverRealSockets(self) -> Any:
        """A client that does not read: reading pauses past the high water mark, then resumes."""
        from twisted.internet import reactor

        factory, service = self.start(limits=ServerLimits(writeHighWater=64 * 1024))
        [client] = yield connectRaw(reactor, service.ports[0].getHost().port, 1)
        client.transport.pauseProducing()
        yield waitUntil(reactor, lambda: factory.onlineCount == 1)
        [context] = list(factory.contexts())
        big = b"x" * (4 * 1024 * 1024)
        context.writeObject(big)
        yield waitUntil(reactor, lambda: not context.writable)
        self.assertGreater(context.pendingWriteBytes, 0)
        self.assertEqual(factory.counters.writeBlockedTotal, 1)
        client.transport.resumeProducing()
        yield waitUntil(reactor, lambda: len(client.received) >= len(big) + 4, timeout=30)
        yield waitUntil(reactor, lambda: context.writable)
        self.assertEqual(bytes(client.received), frame(big))
        client.transport.loseConnection()
        yield client.lost

    @defer.inlineCallbacks
    def test_unixSocket(self) -> Any:
        """unix: listeners are served natively too; peers are UNIX addresses."""
        from twisted.internet import reactor
        from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol

        from tests.netutil import temporaryDirectory

        path = temporaryDirectory(self) + "/s.sock"
        factory, service = self.start(f"unix:{path}")
        self.assertTrue(hasattr(service.ports[0], "describeTransport"))
        received = defer.Deferred()

        from twisted.internet.protocol import Protocol

        class Client(Protocol):
            def connectionMade(self) -> None:
                self.transport.write(frame(b"unix"))  # type: ignore[union-attr]

            def dataReceived(self, data: bytes) -> None:
                received.callback(data)
                self.transport.loseConnection()  # type: ignore[union-attr]

        yield connectProtocol(UNIXClientEndpoint(reactor, path), Client())
        data = yield received
        self.assertEqual(data, frame(b"unix"))
        yield waitUntil(reactor, lambda: factory.counters.acceptedTotal == 1 and factory.onlineCount == 0)

    @defer.inlineCallbacks
    def test_refusedPastTheLimit(self) -> Any:
        """--max-connections on a native listener: refused at accept and counted."""
        from twisted.internet import reactor

        factory, service = self.start(limits=ServerLimits(maxConnections=2))
        clients = yield connectRaw(reactor, service.ports[0].getHost().port, 5)
        yield waitUntil(reactor, lambda: factory.counters.refusedTotal + factory.counters.acceptedTotal == 5)
        self.assertEqual(factory.counters.acceptedTotal, 2)
        self.assertEqual(factory.counters.closedTotal[errors.REFUSED], 3)
        for client in clients:
            client.transport.abortConnection()
        yield defer.gatherResults([c.lost for c in clients])


class KeepAliveTests(TestCase):
    """TCP keep-alive and its timing reach the socket, on either reactor's transports."""

    timeout = 30

    @defer.inlineCallbacks
    def test_keepAliveOnTheSocket(self) -> Any:
        from twisted.internet import reactor

        limits = ServerLimits(keepAlive=True, keepAliveIdle=42, keepAliveInterval=7, keepAliveCount=3)
        factory = ConnectionContextFactory(EchoContext, reactor=reactor, limits=limits)
        service = SocketServerService(factory, ["tcp:0:interface=127.0.0.1"], reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        [client] = yield connectRaw(reactor, service.ports[0].getHost().port, 1)
        yield waitUntil(reactor, lambda: factory.onlineCount == 1)
        [context] = list(factory.contexts())
        handle = context.transport.getHandle()
        self.assertNotEqual(handle.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), 0)
        if hasattr(socket, "TCP_KEEPIDLE"):
            self.assertEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), 42)
            self.assertEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL), 7)
            self.assertEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT), 3)
        client.transport.loseConnection()
        yield client.lost
