"""
Tests for L{iocpsvc.cluster.resp}: the RESP commands written, the replies
parsed (cut anywhere), and the connection matching replies to commands,
reporting its unsent bytes and when Redis last answered, without sockets.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.cluster.resp import (
    MAX_BULK_LENGTH,
    RedisConnection,
    RedisConnectionLost,
    RedisError,
    ReplyParser,
    RespProtocolError,
    encodeCommand,
)

REPLIES = (
    b"+OK\r\n"
    b"-ERR wrong number of arguments\r\n"
    b":42\r\n"
    b":-7\r\n"
    b"$5\r\nhe\r\no\r\n"
    b"$0\r\n\r\n"
    b"$-1\r\n"
    b"*3\r\n$7\r\nmessage\r\n$3\r\nall\r\n$3\r\n\x00\xff\n\r\n"
    b"*2\r\n*1\r\n:1\r\n*-1\r\n"
    b"*0\r\n"
)


def checkReplies(test: SynchronousTestCase, replies: list[Any]) -> None:
    """The values of L{REPLIES}, in order."""
    test.assertEqual(replies[0], b"OK")
    test.assertIsInstance(replies[1], RedisError)
    test.assertEqual(str(replies[1]), "ERR wrong number of arguments")
    test.assertEqual(
        replies[2:],
        [42, -7, b"he\r\no", b"", None, [b"message", b"all", b"\x00\xff\n"], [[1], None], []],
    )


class EncodeTests(SynchronousTestCase):
    """Commands as RESP arrays of bulk strings."""

    def test_command(self) -> None:
        """Each argument is a bulk string; str is UTF-8, int is its digits."""
        self.assertEqual(
            encodeCommand([b"SET", "kä", 30]),
            b"*3\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa4\r\n$2\r\n30\r\n",
        )

    def test_binary(self) -> None:
        """Binary arguments (CRLF, NUL) are sent as they are, counted."""
        self.assertEqual(encodeCommand([b"\r\n\x00"]), b"*1\r\n$3\r\n\r\n\x00\r\n")


class ParserTests(SynchronousTestCase):
    """Replies split out of the byte stream."""

    def test_allTypes(self) -> None:
        """Every reply type, fed at once."""
        checkReplies(self, ReplyParser().feed(REPLIES))

    def test_anyCut(self) -> None:
        """The same replies, fed one byte at a time and in two pieces cut anywhere."""
        parser = ReplyParser()
        replies: list[Any] = []
        for index in range(len(REPLIES)):
            replies += parser.feed(REPLIES[index : index + 1])
        checkReplies(self, replies)
        for cut in range(len(REPLIES) + 1):
            parser = ReplyParser()
            checkReplies(self, parser.feed(REPLIES[:cut]) + parser.feed(REPLIES[cut:]))

    def test_largeBulkWaits(self) -> None:
        """A large bulk string is not parsed again until all its bytes are there."""
        parser = ReplyParser()
        payload = b"x" * 100_000
        self.assertEqual(parser.feed(b"$100000\r\n" + payload[:10]), [])
        self.assertEqual(parser._need, 100_000 + 2 + 9)  # from the start of the reply
        self.assertEqual(parser.feed(payload[10:50_000]), [])
        self.assertEqual(parser.feed(payload[50_000:] + b"\r\n:1\r\n"), [payload, 1])

    def test_corrupt(self) -> None:
        """Bytes that are not RESP raise RespProtocolError."""
        for data in (
            b"?what\r\n",
            b":notanumber\r\n",
            b"$3\r\nabcXY",
            b"$-2\r\n",
            b"*-3\r\n",
            b"$%d\r\n" % (MAX_BULK_LENGTH + 1),
            b"+" + b"x" * 70_000,
        ):
            with self.assertRaises(RespProtocolError, msg=repr(data[:20])):
                ReplyParser().feed(data)


class ConnectionTests(SynchronousTestCase):
    """Replies matched to commands, pub/sub messages handed over."""

    def connect(self, **kwargs: Any) -> tuple[RedisConnection, StringTransport]:
        connection = RedisConnection(**kwargs)
        transport = StringTransport()
        connection.makeConnection(transport)
        return connection, transport

    def test_pipelined(self) -> None:
        """Commands are written at once; replies fire their Deferreds in order; errors fail."""
        connection, transport = self.connect()
        first = connection.execute(b"SET", b"k", b"v")
        second = connection.execute(b"GET", b"missing")
        third = connection.execute(b"BAD")
        self.assertEqual(
            transport.value(),
            encodeCommand([b"SET", b"k", b"v"])
            + encodeCommand([b"GET", b"missing"])
            + encodeCommand([b"BAD"]),
        )
        connection.dataReceived(b"+OK\r\n$-1\r\n-ERR unknown command\r\n")
        self.assertEqual(self.successResultOf(first), b"OK")
        self.assertIsNone(self.successResultOf(second))
        self.failureResultOf(third, RedisError)

    def test_messages(self) -> None:
        """On a subscriber, pushed messages go to onMessage, between replies."""
        messages: list[tuple[bytes, bytes]] = []
        connection, _ = self.connect(onMessage=lambda channel, data: messages.append((channel, data)))
        subscribed = connection.execute(b"SUBSCRIBE", b"all")
        connection.dataReceived(
            b"*3\r\n$9\r\nsubscribe\r\n$3\r\nall\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$3\r\nall\r\n$2\r\nhi\r\n"
        )
        self.assertEqual(self.successResultOf(subscribed), [b"subscribe", b"all", 1])
        self.assertEqual(messages, [(b"all", b"hi")])

    def test_lost(self) -> None:
        """When the connection ends, waiting commands fail, notifyLost and onLost fire."""
        reasons: list[Failure] = []
        connection, _ = self.connect(onLost=reasons.append)
        waiting = connection.execute(b"PING")
        lost = connection.notifyLost()
        reason = Failure(ConnectionLost())
        connection.connectionLost(reason)
        # Why it ended goes with it (a failed TLS handshake, say, for the bus's log line).
        self.assertIs(self.failureResultOf(waiting, RedisConnectionLost).value.reason, reason)
        self.successResultOf(lost)
        self.successResultOf(connection.notifyLost())
        self.assertEqual(len(reasons), 1)
        self.failureResultOf(connection.execute(b"PING"), RedisConnectionLost)

    def test_lostIsNotARefusal(self) -> None:
        """
        An error reply is a plain RedisError; a reply that will never come
        (connection ended, or never made) is a RedisConnectionLost, so that
        a caller can tell "Redis refused it" from "nobody knows".
        """
        replies: list[Any] = []
        connection, _ = self.connect()
        connection.sendCommand([b"BAD"], replies.append)
        connection.sendCommand([b"PING"], replies.append)
        connection.dataReceived(b"-ERR unknown command\r\n")
        connection.connectionLost(Failure(ConnectionLost()))
        self.assertEqual([type(reply) for reply in replies], [RedisError, RedisConnectionLost])
        RedisConnection().writeCommand(encodeCommand([b"PING"]), replies.append)
        self.assertIsInstance(replies[2], RedisConnectionLost)

    def test_writeCommand(self) -> None:
        """A command encoded beforehand is written as it is, and its reply matched like any other."""
        replies: list[Any] = []
        connection, transport = self.connect()
        command = encodeCommand([b"PUBLISH", b"all", b"\x00hi"])
        connection.writeCommand(command, replies.append)
        self.assertEqual(transport.value(), command)
        connection.dataReceived(b":2\r\n")
        self.assertEqual(replies, [2])

    def test_unsentBytes(self) -> None:
        """
        The unsent bytes are those of Twisted's descriptor transports (still
        buffered, or written this turn); None for a transport that does not
        tell, or before there is one.
        """
        self.assertIsNone(RedisConnection().unsentBytes())
        connection, transport = self.connect()
        self.assertIsNone(connection.unsentBytes())  # StringTransport keeps no such buffer
        transport.dataBuffer = b"x" * 100  # type: ignore[attr-defined]
        transport.offset = 30  # type: ignore[attr-defined]
        transport._tempDataLen = 7  # type: ignore[attr-defined]
        self.assertEqual(connection.unsentBytes(), 77)

    def test_lastReceivedAt(self) -> None:
        """Each chunk from Redis stamps the time, by the clock given; without one, nothing."""
        clock = Clock()
        connection, _ = self.connect(seconds=clock.seconds)
        self.assertIsNone(connection.lastReceivedAt)
        clock.advance(4.5)
        connection.execute(b"PING")
        connection.dataReceived(b"+PO")  # even a partial reply is an answer
        self.assertEqual(connection.lastReceivedAt, 4.5)
        clock.advance(1)
        connection.dataReceived(b"NG\r\n")
        self.assertEqual(connection.lastReceivedAt, 5.5)
        unclocked, _ = self.connect()
        unclocked.dataReceived(b"+OK\r\n")
        self.assertIsNone(unclocked.lastReceivedAt)

    def test_corruptAborts(self) -> None:
        """A server that does not speak RESP is disconnected."""
        connection, transport = self.connect()
        aborted: list[bool] = []
        transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        connection.dataReceived(b"HTTP/1.1 400 Bad Request\r\n")
        self.assertEqual(aborted, [True])
