"""
Tests for L{iocpsvc.factory.ConnectionContextFactory}: registrations (with
adaptation), the online registry, broadcast and closeAll; and the examples
built on it (chat, the command protocol with its IEncoder adapter).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.python.components import registerAdapter
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface, implementer

from examples.commands import Command, CommandContext, makeFactory
from iocpsvc import errors
from iocpsvc.apps import ChatContext, EchoContext
from iocpsvc.codecs.length import LengthFieldDecoder, LengthFieldPrepender
from iocpsvc.context import ConnectionContext
from iocpsvc.errors import EncodeError
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.interfaces import IDecoder, IEncoder
from iocpsvc.testing import EmbeddedConnection


class Point:
    """An application message class with no codec of its own."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


@implementer(IEncoder)
class PointEncoder:
    def __init__(self, original: Point) -> None:
        self.original = original

    def encode(self, obj: object) -> bytes:
        assert isinstance(obj, Point)
        return f"{obj.x},{obj.y}".encode()


registerAdapter(PointEncoder, Point, IEncoder)


class ICodecSettings(Interface):
    """An application's own settings object, adaptable to IEncoder/IDecoder."""


@implementer(ICodecSettings)
class CodecSettings:
    size = 2


registerAdapter(lambda settings: LengthFieldPrepender(settings.size), CodecSettings, IEncoder)
registerAdapter(lambda settings: LengthFieldDecoder(lengthFieldLength=settings.size), CodecSettings, IDecoder)


class RegistrationTests(SynchronousTestCase):
    """RegisterContextClass / RegisterDecoder / RegisterEncoder, DIOCP-style."""

    def test_contextClass(self) -> None:
        """Connections become instances of the registered class."""
        factory = ConnectionContextFactory(reactor=Clock())
        factory.registerContextClass(EchoContext)
        self.assertIsInstance(factory.buildProtocol(None), EchoContext)  # type: ignore[arg-type]
        self.assertRaises(TypeError, factory.registerContextClass, object)

    def test_decoderClassGivesOnePerConnection(self) -> None:
        """A registered IDecoder class is instantiated per connection."""
        from iocpsvc.codecs.netstring import NetstringDecoder

        factory = ConnectionContextFactory(reactor=Clock())
        factory.registerDecoder(NetstringDecoder)
        self.assertIsNot(factory.newDecoder(), factory.newDecoder())

    def test_statelessDecoderShared(self) -> None:
        """A decoder class marked stateless serves every connection from one instance."""
        factory = ConnectionContextFactory(reactor=Clock())
        factory.registerDecoder(LengthFieldDecoder)
        self.assertIs(factory.newDecoder(), factory.newDecoder())

    def test_decoderInstanceIsCopied(self) -> None:
        """A registered decoder instance is a prototype: each gets a copy."""
        from iocpsvc.codecs.line import LineDecoder

        factory = ConnectionContextFactory(reactor=Clock())
        prototype = LineDecoder(maxFrameLength=77)
        factory.registerDecoder(prototype)
        made = factory.newDecoder()
        self.assertIsNot(made, prototype)
        self.assertEqual(made.maxFrameLength, 77)

    def test_adaptableRegistrations(self) -> None:
        """Objects adaptable to IEncoder/IDecoder are accepted."""
        factory = ConnectionContextFactory(EchoContext, reactor=Clock())
        factory.registerEncoder(CodecSettings())
        factory.registerDecoder(CodecSettings())
        connection = EmbeddedConnection(factory=factory)
        connection.feed(b"\x00\x02hi")
        self.assertEqual(connection.readBytes(), b"\x00\x02hi")

    def test_notAnEncoder(self) -> None:
        """Registering something that is no encoder is a TypeError."""
        factory = ConnectionContextFactory(reactor=Clock())
        self.assertRaises(TypeError, factory.registerEncoder, 42)
        self.assertRaises(TypeError, factory.registerDecoder, 42)


class AdapterTests(SynchronousTestCase):
    """writeObject encodes application classes through their IEncoder adapter."""

    def test_writeObjectAdapts(self) -> None:
        """A Point is written through PointEncoder, framed by the codec."""
        for spec, expected in (("line", b"1,2\n"), ("length", b"\x00\x00\x00\x031,2")):
            connection = EmbeddedConnection(ConnectionContext, spec)
            connection.context.writeObject(Point(1, 2))
            self.assertEqual(connection.readBytes(), expected)

    def test_adapterThroughObjectStage(self) -> None:
        """Through line+text the adapter's bytes are framed unchanged."""
        connection = EmbeddedConnection(ConnectionContext, "line+text")
        connection.context.writeObject(Point(3, 4))
        self.assertEqual(connection.readObjects(), ["3,4"])

    def test_noAdapter(self) -> None:
        """An object with neither codec nor adapter is an EncodeError."""
        connection = EmbeddedConnection(ConnectionContext, "line")
        self.assertRaises(EncodeError, connection.context.writeObject, object())

    def test_contextBringsItsCodec(self) -> None:
        """A context class's defaultCodec (a Codec object) is used by default."""
        connection = EmbeddedConnection(CommandContext)
        connection.feed(b"PING x\n")
        self.assertEqual(connection.readBytes(), b"PONG x\n")
        factory = ConnectionContextFactory(CommandContext, reactor=Clock())
        self.assertIs(factory.codec, CommandContext.defaultCodec)

    def test_commandExample(self) -> None:
        """The commands example: its decoder, its adapter, its context."""
        connection = EmbeddedConnection(factory=makeFactory(Clock()))
        self.assertIsInstance(connection.context, CommandContext)
        connection.feed(b"ping hello\r\nADD 2 3\nnope\n", chunkSize=4)
        self.assertEqual(
            connection.readBytes(), b"PONG hello\nSUM 5\nERROR unknown command NOPE; known: PING, ADD\n"
        )
        self.assertEqual(Command("A", "b"), Command("A", "b"))

    def test_commandExampleAnswersBadInput(self) -> None:
        """A typo, bad UTF-8 or an empty line is answered with ERROR; the connection stays."""
        connection = EmbeddedConnection(factory=makeFactory(Clock()))
        connection.feed(b"ADD x y\n\xff\xfe\n\nADD 1 2 3\n")
        self.assertEqual(
            connection.readBytes().split(b"\n"),
            [
                b"ERROR ADD takes whole numbers, not 'x'",
                b"ERROR a command must be UTF-8 text",
                b"ERROR empty line; try PING hello or ADD 2 3",
                b"SUM 6",
                b"",
            ],
        )
        self.assertIsNone(connection.context.closeReason)
        self.assertEqual(connection.context.factory.counters.handlerErrors, 0)

    def test_commandExampleLongLine(self) -> None:
        """Only a line past the 4 KiB limit closes the connection."""
        connection = EmbeddedConnection(factory=makeFactory(Clock()))
        connection.feed(b"PING " + b"x" * 5000)
        self.assertEqual(connection.context.closeReason, errors.FRAME_TOO_LONG)


class RegistryTests(SynchronousTestCase):
    """The online registry: count, peak, find, iterate, totals."""

    def connect(self, factory: ConnectionContextFactory, n: int) -> list[EmbeddedConnection]:
        return [EmbeddedConnection(factory=factory, clock=factory.reactor) for _ in range(n)]

    def test_onlineAndPeak(self) -> None:
        """Count and peak follow connects and disconnects."""
        factory = ConnectionContextFactory(EchoContext, reactor=Clock())
        connections = self.connect(factory, 3)
        connections[0].disconnect()
        self.connect(factory, 1)
        self.assertEqual(
            (factory.onlineCount, factory.counters.peakOnline, factory.counters.acceptedTotal), (3, 3, 4)
        )
        ids = [c.context.contextId for c in connections]
        self.assertEqual(len(set(ids)), 3)
        self.assertIsNone(factory.findContext(ids[0]))
        self.assertIs(factory.findContext(ids[1]), connections[1].context)
        self.assertEqual(len(list(factory.contexts())), 3)

    def test_totalsIncludeClosedConnections(self) -> None:
        """Byte and frame totals add closed connections to online ones."""
        factory = ConnectionContextFactory(EchoContext, reactor=Clock())
        first, second = self.connect(factory, 2)
        first.feed(b"\x00\x00\x00\x01a")
        second.feed(b"\x00\x00\x00\x02bc")
        first.disconnect()
        self.assertEqual(factory.bytesReceivedTotal, 11)
        self.assertEqual(factory.bytesSentTotal, 11)
        self.assertEqual((factory.framesReceivedTotal, factory.framesSentTotal), (2, 2))

    def test_broadcastEncodesOnce(self) -> None:
        """broadcast writes the same encoded bytes to everyone but exclude."""
        factory = ConnectionContextFactory(EchoContext, "line", reactor=Clock())
        calls: list[Any] = []
        encoder = factory.encoder
        original = encoder.encode

        class Counting:
            def encode(self, obj: object) -> Any:
                calls.append(obj)
                return original(obj)

        factory._encoder = Counting()
        connections = self.connect(factory, 4)
        self.assertEqual(factory.broadcast(b"hi", exclude=connections[0].context), 3)
        self.assertEqual(len(calls), 1)
        self.assertEqual([c.readBytes() for c in connections], [b"", b"hi\n", b"hi\n", b"hi\n"])

    def test_closeAllAbortsAfterTimeout(self) -> None:
        """closeAll closes gracefully, then aborts stragglers at the timeout."""
        clock = Clock()
        factory = ConnectionContextFactory(EchoContext, reactor=clock)
        connections = self.connect(factory, 2)
        done = factory.closeAll(timeout=10)
        self.assertTrue(all(c.closing for c in connections))
        connections[0].disconnect()
        self.assertNoResult(done)
        clock.advance(10)
        self.successResultOf(done)
        self.assertEqual(factory.onlineCount, 0)
        self.assertEqual(factory.counters.closedTotal[errors.SHUTDOWN], 2)


class ChatTests(SynchronousTestCase):
    """The chat example: every line goes to everyone online."""

    def test_chat(self) -> None:
        """Joins, messages, nick changes and leaves are broadcast."""
        factory = ConnectionContextFactory(ChatContext, reactor=Clock())
        self.assertEqual(factory.codec.spec, "line+text")  # type: ignore[union-attr]
        alice = EmbeddedConnection(factory=factory, clock=factory.reactor)
        bob = EmbeddedConnection(factory=factory, clock=factory.reactor)
        alice.feed(b"/nick alice\nhello\r\n")
        bob.disconnect()
        self.assertEqual(
            alice.readObjects(),
            [
                "* user1 joined (id 1)",
                "* user2 joined (id 2)",
                "* user1 is now alice",
                "alice: hello",
                "* user2 left",
            ],
        )
