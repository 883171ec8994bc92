"""
The subset of the Redis protocol (RESP2) that the cluster bus speaks: commands
out, replies and pub/sub messages in, over one Twisted protocol per connection.

A command is an array of bulk strings::

    *3\\r\\n $7\\r\\n PUBLISH\\r\\n $11\\r\\n iocpsvc:all\\r\\n $18\\r\\n <message>\\r\\n
    ^ count  ^ length, then the bytes, for each argument

A reply is one typed value; arrays nest::

    +OK\\r\\n              simple string    -> b"OK"
    -ERR reason\\r\\n      error            -> a RedisError instance (not raised)
    :42\\r\\n              integer          -> 42
    $5\\r\\nhello\\r\\n     bulk string      -> b"hello"   ($-1\\r\\n -> None)
    *2\\r\\n...            array            -> [..., ...] (*-1\\r\\n -> None)

On a subscribed connection Redis also pushes messages nobody asked for, as
arrays C{[b"message", channel, data]}; the connection hands those to its
C{onMessage} and matches every other reply, in order, to the command
waiting for it.

The connection writes whatever it is given: it never refuses a command.
What is still unsent (L{RedisConnection.unsentBytes}) and when Redis last
sent anything (L{RedisConnection.lastReceivedAt}) are there for its user to
decide when to stop writing (the cluster bus caps the first; see
L{iocpsvc.cluster.redis}).

Like the codecs, L{ReplyParser} is pure (bytes in, values out) and is tested
without sockets.

Why iocpsvc has its own client rather than txredisapi: see
L{iocpsvc.cluster.redis}.  Logging in (C{AUTH}, C{SELECT}) and TLS are the
bus's: to this module they are commands and a transport like any other.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from iocpsvc.transports import unsentBytes

_log = Logger(namespace="iocpsvc.cluster.resp")

MAX_BULK_LENGTH = 512 * 1024 * 1024
"""Redis's own limit on a string; a longer bulk header is a corrupt stream."""

MAX_LINE_LENGTH = 64 * 1024
"""A header line longer than this (no CRLF found) is a corrupt stream."""

_CRLF = b"\r\n"


class RedisError(Exception):
    """An error reply from Redis (C{-ERR ...}), or a connection gone before its reply."""


class RedisConnectionLost(RedisError):
    """
    No reply will come: the connection ended (or never was) before it.
    Unlike an error reply, the command may or may not have reached Redis.

    @ivar reason: why the connection ended (a failed TLS handshake, a
        reset, ...), or C{None}: it never was.
    """

    def __init__(self, message: str, reason: Failure | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class RespProtocolError(Exception):
    """The bytes from the server are not RESP: the connection cannot be trusted any more."""


class _Incomplete(Exception):
    """More bytes are needed; C{need} is the buffer length worth trying again at."""

    def __init__(self, need: int) -> None:
        self.need = need


def encodeCommand(args: Sequence[bytes | str | int]) -> bytes:
    """One command as RESP (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode("utf-8")
        elif isinstance(arg, int):
            arg = b"%d" % arg
        parts.append(b"$%d\r\n" % len(arg))
        parts.append(arg)
        parts.append(_CRLF)
    return b"".join(parts)


def _parse(buffer: bytearray, position: int) -> tuple[Any, int]:
    """The value starting at C{position} and where the next one starts."""
    end = buffer.find(_CRLF, position)
    if end < 0:
        if len(buffer) - position > MAX_LINE_LENGTH:
            raise RespProtocolError(f"no line end within {MAX_LINE_LENGTH} bytes")
        raise _Incomplete(len(buffer) + 1)
    kind = buffer[position]
    line = bytes(buffer[position + 1 : end])
    following = end + 2
    if kind == 0x2B:  # "+"
        return line, following
    if kind == 0x2D:  # "-"
        return RedisError(line.decode("utf-8", "replace")), following
    try:
        number = int(line) if kind in (0x3A, 0x24, 0x2A) else None
    except ValueError:
        raise RespProtocolError(f"bad number {line[:40]!r} in a {chr(kind)!r} header") from None
    if kind == 0x3A:  # ":"
        return number, following
    if kind == 0x24:  # "$"
        assert number is not None
        if number == -1:
            return None, following
        if not 0 <= number <= MAX_BULK_LENGTH:
            raise RespProtocolError(f"bulk string length {number} out of range")
        stop = following + number
        if len(buffer) < stop + 2:
            # The exact length is known: do not parse again before it is all here.
            raise _Incomplete(stop + 2)
        if buffer[stop : stop + 2] != _CRLF:
            raise RespProtocolError("bulk string not followed by CRLF")
        return bytes(buffer[following:stop]), stop + 2
    if kind == 0x2A:  # "*"
        assert number is not None
        if number == -1:
            return None, following
        if number < 0:
            raise RespProtocolError(f"array length {number} out of range")
        items = []
        for _ in range(number):
            item, following = _parse(buffer, following)
            items.append(item)
        return items, following
    raise RespProtocolError(f"unknown reply type {bytes([kind])!r}")


class ReplyParser:
    """
    Splits the bytes from a Redis server into replies.  Incremental: feed it
    whatever arrived; an incomplete reply stays buffered, and a large bulk
    string is not re-parsed until all its bytes are there.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._need = 0

    def feed(self, data: bytes) -> list[Any]:
        """
        The replies completed by C{data}, in order.

        @raise RespProtocolError: the stream is not RESP.
        """
        buffer = self._buffer
        buffer += data
        if len(buffer) < self._need:
            return []
        replies = []
        position = 0
        self._need = 0
        while position < len(buffer):
            try:
                reply, position = _parse(buffer, position)
            except _Incomplete as incomplete:
                self._need = incomplete.need - position
                break
            replies.append(reply)
        del buffer[:position]
        return replies


Waiter = Callable[[Any], None]
"""Called with a command's reply: a value, a L{RedisError}, or None."""


class RedisConnection(Protocol):
    """
    One connection to Redis.  Commands are pipelined: each is written at
    once and its waiter called with its reply, in order.  A reply that is an
    error is passed as a L{RedisError} instance; when the connection ends,
    every waiter still waiting gets a L{RedisError} saying so.

    @ivar onMessage: called with C{(channel, data)} for each pub/sub message
        (on a subscribed connection), or C{None}.
    @ivar onLost: called with the reason once the connection has ended.
    @ivar lastReceivedAt: when Redis last sent anything on this connection
        (by the C{seconds} clock), or C{None}: not yet, or no clock given.
    """

    def __init__(
        self,
        onMessage: Callable[[bytes, bytes], None] | None = None,
        onLost: Callable[[Failure], None] | None = None,
        seconds: Callable[[], float] | None = None,
    ) -> None:
        """
        @param seconds: the clock for L{lastReceivedAt} (a reactor's
            C{seconds}); read once per chunk received, not per reply.
        """
        self.onMessage = onMessage
        self.onLost = onLost
        self._seconds = seconds
        self.lastReceivedAt: float | None = None
        self._parser = ReplyParser()
        self._waiting: deque[Waiter] = deque()
        self._lostWaiters: list[Deferred[None]] = []
        self.ended = False

    def sendCommand(self, args: Sequence[bytes | str | int], waiter: Waiter) -> None:
        """
        Write one command; C{waiter} gets its reply.  (No Deferred: the bus
        publishes on the hot path.)
        """
        self.writeCommand(encodeCommand(args), waiter)

    def writeCommand(self, command: bytes, waiter: Waiter) -> None:
        """
        Write one command already encoded by L{encodeCommand} (so that its
        caller knows its exact size before deciding to send it); C{waiter}
        gets its reply, or a L{RedisConnectionLost} at once when the
        connection has ended.
        """
        if self.ended or self.transport is None:
            waiter(RedisConnectionLost("not connected"))
            return
        self._waiting.append(waiter)
        self.transport.write(command)

    def unsentBytes(self) -> int | None:
        """
        Bytes written and not yet taken by the socket: they grow without
        limit while Redis does not read.  C{None} when the transport does
        not tell (see L{iocpsvc.transports.unsentBytes}), or before it is
        connected.
        """
        if self.transport is None:
            return None
        return unsentBytes(self.transport)

    def execute(self, *args: bytes | str | int) -> Deferred[Any]:
        """Write one command; the Deferred fires with its reply, or fails with L{RedisError}."""
        done: Deferred[Any] = Deferred()

        def fire(reply: Any) -> None:
            if isinstance(reply, RedisError):
                done.errback(reply)
            else:
                done.callback(reply)

        self.sendCommand(args, fire)
        return done

    def notifyLost(self) -> Deferred[None]:
        """A Deferred that fires once this connection has ended."""
        lost: Deferred[None] = Deferred()
        if self.ended:
            lost.callback(None)
        else:
            self._lostWaiters.append(lost)
        return lost

    def abort(self) -> None:
        """Drop the connection now (unsent commands are lost)."""
        if self.transport is not None and not self.ended:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self._seconds is not None:
            self.lastReceivedAt = self._seconds()
        try:
            replies = self._parser.feed(data)
        except RespProtocolError as e:
            _log.error("Redis sent bytes that are not RESP ({error}); closing the connection", error=e)
            self.abort()
            return
        onMessage = self.onMessage
        for reply in replies:
            if (
                onMessage is not None
                and reply.__class__ is list
                and len(reply) == 3
                and reply[0] == b"message"
            ):
                onMessage(reply[1], reply[2])
            elif self._waiting:
                self._waiting.popleft()(reply)
            else:
                _log.warn("ignored a Redis reply nothing was waiting for: {reply!r:.80}", reply=reply)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.ended = True
        waiting, self._waiting = self._waiting, deque()
        gone = RedisConnectionLost(f"connection lost before the reply: {reason.getErrorMessage()}", reason)
        for waiter in waiting:
            waiter(gone)
        lostWaiters, self._lostWaiters = self._lostWaiters, []
        for lost in lostWaiters:
            lost.callback(None)
        if self.onLost is not None:
            self.onLost(reason)
