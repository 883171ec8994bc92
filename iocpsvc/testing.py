"""
Test your contexts and codecs without sockets (the role Netty's
C{EmbeddedChannel} plays)::

    from iocpsvc.testing import EmbeddedConnection

    connection = EmbeddedConnection(MyContext, codec="line+json")
    connection.feed(b'{"op": "ping"}\\n', chunkSize=3)   # any chunking
    assert connection.readObjects() == [{"op": "pong"}]
    connection.clock.advance(30)                        # timers, if any
    connection.disconnect()

The context runs exactly as it would on a socket: the same factory, the same
receive buffer and decode loop, the same write batching; the transport is
Twisted's C{StringTransport} and the reactor a C{Clock}.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from iocpsvc.codecs import Codec, encodedBytes
from iocpsvc.context import ConnectionContext
from iocpsvc.factory import ConnectionContextFactory


class EmbeddedConnection:
    """
    One context on an in-memory transport.

    @ivar factory: the context factory (its registry and counters are live).
    @ivar context: the context under test.
    @ivar transport: the C{StringTransport} it writes to.
    @ivar clock: the C{Clock} used as the reactor.
    """

    def __init__(
        self,
        contextClass: type[ConnectionContext] = ConnectionContext,
        codec: str | Codec | None = None,
        factory: ConnectionContextFactory | None = None,
        clock: Clock | None = None,
        peer: Any = None,
    ) -> None:
        self.clock = clock if clock is not None else Clock()
        if factory is None:
            factory = ConnectionContextFactory(contextClass, codec, reactor=self.clock)
        self.factory = factory
        peer = peer or IPv4Address("TCP", "192.0.2.1", 40000)
        host = IPv4Address("TCP", "127.0.0.1", 9983)
        context = factory.buildProtocol(peer)
        if not isinstance(context, ConnectionContext):
            raise ValueError(f"the factory refused the connection from {peer}")
        self.context: ConnectionContext = context
        self.transport = StringTransport(hostAddress=host, peerAddress=peer)
        self.transport.abortConnection = self._abort  # type: ignore[method-assign]
        self.context.makeConnection(self.transport)
        self._decoder = factory.newDecoder()
        self._unread = bytearray()
        self.lost = False

    def feed(self, data: bytes, chunkSize: int | None = None) -> None:
        """
        Deliver C{data} as received bytes, in chunks of C{chunkSize} (all at
        once by default).
        """
        if chunkSize is None:
            self.context.dataReceived(data)
            return
        for start in range(0, len(data), chunkSize):
            self.context.dataReceived(data[start : start + chunkSize])

    def feedChunks(self, chunks: Iterable[bytes]) -> None:
        """Deliver each of C{chunks} as one read."""
        for chunk in chunks:
            self.context.dataReceived(chunk)

    def feedObjects(self, *objects: object) -> None:
        """Encode C{objects} with the factory's encoder and deliver them."""
        data = b"".join(encodedBytes(self.factory.encoder.encode(obj)) for obj in objects)
        self.context.dataReceived(data)

    def readBytes(self) -> bytes:
        """The bytes written since the last read."""
        data = self.transport.value()
        self.transport.clear()
        return data

    def readObjects(self) -> list[object]:
        """
        Decode what was written since the last read with a fresh decoder of
        the same codec, keeping any partial frame for the next call.
        """
        self._unread += self.readBytes()
        out: list[object] = []
        consumed = self._decoder.decode(self._unread, out)
        del self._unread[:consumed]
        return out

    @property
    def closing(self) -> bool:
        """Whether the context asked the transport to close."""
        return bool(self.transport.disconnecting) or self.lost

    def disconnect(self, reason: Failure | None = None) -> None:
        """The peer goes away: C{connectionLost} runs."""
        if self.lost:
            return
        self.lost = True
        self.transport.disconnecting = True
        self.context.connectionLost(reason or Failure(ConnectionDone()))

    def _abort(self) -> None:
        self.transport.loseConnection()
        self.disconnect()
