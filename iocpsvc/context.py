"""
The client context: one object per connection (DIOCP's TIocpClientContext).

It owns the connection's receive buffer and runs the decode loop, so codecs
only ever look at bytes::

    dataReceived(bytes)
      -> decoder.decode(buffer, out)        every complete frame at once
      -> objectReceived(obj) for each       the application's code
           -> writeObject(reply)            encoded now, queued in the batch
      -> one transport.write/writeSequence  the batch, in order
      -> compact the buffer once            keep only the partial frame

Subclass L{ConnectionContext} and override L{ConnectionContext.objectReceived}
(and, if you like, C{connectionMade} and C{connectionLost}, Twisted's usual
hooks).  The factory (L{iocpsvc.factory.ConnectionContextFactory}) gives each
context its decoder and encoder.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IAddress, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from iocpsvc import errors
from iocpsvc.errors import DecodeError

if TYPE_CHECKING:
    from iocpsvc.factory import ConnectionContextFactory

# Why dispatch is held (bit flags in ``_hold``; any bit set stops dispatch).
_PAUSED = 1  # the application called pauseProducing()
_CLOSING = 2  # close()/abort() was called or the stream broke

_log = Logger(namespace="iocpsvc.context")


def _releasing(hook: Callable[..., Any]) -> Callable[..., Any]:
    """
    Wrap a subclass's C{connectionLost} so that the context's own
    bookkeeping always runs, whether or not the override calls C{super()}.
    """

    @functools.wraps(hook)
    def connectionLost(self: ConnectionContext, reason: Failure = connectionDone) -> None:
        self._connectionEnding(reason)
        try:
            hook(self, reason)
        finally:
            self._release()

    connectionLost._iocpsvcReleasing = True  # type: ignore[attr-defined]
    return connectionLost


@implementer(IPushProducer)
class ConnectionContext(Protocol):
    """
    One connection: receive buffer, frame splitting, dispatch of decoded
    objects, encoding of written objects, and the connection's facts.

    Override L{objectReceived}.  Write replies with L{writeObject}; writes
    made while a read is being processed leave together, in order, at the
    end of that read.  Write raw bytes with L{writeBytes}, not
    C{transport.write}, or they may overtake objects written earlier in the
    same batch.

    A context is an C{IPushProducer} of its incoming objects: register it
    (not its transport) with a consumer that may fall behind, e.g.
    C{otherContext.transport.registerProducer(self, True)} in a proxy, and
    both reading and the dispatch of already-received objects stop while
    that consumer is full.

    @ivar contextId: this connection's id, unique within its factory.
    @ivar connectedAt: C{reactor.seconds()} when the connection was made.
    @ivar lastActivity: C{reactor.seconds()} of the last bytes received.
    @ivar bytesReceived: bytes received on this connection.
    @ivar bytesSent: bytes handed to the transport.
    @ivar framesReceived: objects decoded.
    @ivar framesSent: objects written.
    @ivar closeReason: C{None} while open; then one of
        L{iocpsvc.errors.CLOSE_REASONS}, already set when C{connectionLost}
        runs.
    """

    # Per-connection state is small and fixed: slots, and nothing allocated
    # until needed (the receive buffer and the pending deque stay None).
    __slots__ = (
        "factory",
        "transport",
        "connected",
        "contextId",
        "connectedAt",
        "lastActivity",
        "bytesReceived",
        "bytesSent",
        "framesReceived",
        "framesSent",
        "closeReason",
        "_decoder",
        "_encode",
        "_buffer",
        "_batch",
        "_pending",
        "_hold",
        "_decodeFailed",
        "_released",
    )

    factory: ConnectionContextFactory | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("connectionLost")
        if own is not None and not getattr(own, "_iocpsvcReleasing", False):
            cls.connectionLost = _releasing(own)  # type: ignore[method-assign]

    def __init__(self) -> None:
        self.factory = None
        self.transport = None
        self.connected = 0
        self.contextId = 0
        self.connectedAt = 0.0
        self.lastActivity = 0.0
        self.bytesReceived = 0
        self.bytesSent = 0
        self.framesReceived = 0
        self.framesSent = 0
        self.closeReason: str | None = None
        self._decoder: Any = None
        self._encode: Callable[[object], Any] = _noEncoder
        self._buffer: bytearray | None = None
        self._batch: list[bytes] | None = None
        self._pending: deque[object] | None = None
        self._hold = 0
        self._decodeFailed = False
        self._released = False

    # -- the application's API ---------------------------------------------

    def objectReceived(self, obj: object) -> None:
        """
        Called once for every decoded object, in stream order.  Override it.

        An exception raised here is logged with the peer, and closes this
        connection (reason C{handler-error}); other connections go on.
        """

    def writeObject(self, obj: object) -> None:
        """
        Encode C{obj} with the factory's encoder (or C{obj}'s L{IEncoder}
        adapter) and send it.

        @raise iocpsvc.errors.EncodeError: C{obj} cannot be encoded.
        """
        # Hot path: encode, then either join the batch or write now; one
        # class check tells a single bytes from a chunk sequence.
        encoded = self._encode(obj)
        self.framesSent += 1
        batch = self._batch
        if batch is not None:
            if encoded.__class__ is bytes:
                batch.append(encoded)
            else:
                batch.extend(encoded)
        elif encoded.__class__ is bytes:
            self.bytesSent += len(encoded)
            self.transport.write(encoded)  # type: ignore[union-attr]
        else:
            self.bytesSent += sum(map(len, encoded))
            self.transport.writeSequence(encoded)  # type: ignore[union-attr]

    def writeBytes(self, data: bytes) -> None:
        """
        Send raw bytes, in order with the objects written around them (no
        encoding).
        """
        if self._batch is not None:
            self._batch.append(data)
        else:
            self.bytesSent += len(data)
            self.transport.write(data)  # type: ignore[union-attr]

    def close(self, reason: str = errors.LOCAL) -> None:
        """
        Close gracefully: what was written so far is sent first.  No further
        received objects are dispatched.
        """
        if self.closeReason is None:
            self.closeReason = reason
        self._hold |= _CLOSING
        self._flush()
        if self.transport is not None:
            self.transport.loseConnection()

    def abort(self, reason: str = errors.LOCAL) -> None:
        """
        Close at once, dropping anything not yet sent.
        """
        if self.closeReason is None:
            self.closeReason = reason
        self._hold |= _CLOSING
        self._batch = [] if self._batch is not None else None
        transport = self.transport
        if transport is None:
            return
        abortConnection = getattr(transport, "abortConnection", None)
        if abortConnection is not None:
            abortConnection()
        else:
            transport.loseConnection()

    def pauseProducing(self) -> None:
        """
        Stop reading from this client and stop dispatching objects already
        received, until L{resumeProducing}.
        """
        self._hold |= _PAUSED
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        """
        Dispatch the objects held while paused, then read again.
        """
        self._hold &= ~_PAUSED
        if self._hold:
            return
        pending = self._pending
        if pending:
            self._pending = None
            self._dispatch(pending)
        if not self._hold and self._buffer:
            self._receive(b"")
        if not self._hold and self.transport is not None:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        """Stop for good: close the connection at once."""
        self.abort()

    @property
    def peer(self) -> IAddress | None:
        """The peer's address (the proxied client's, behind C{haproxy:})."""
        return self.transport.getPeer() if self.transport is not None else None

    @property
    def host(self) -> IAddress | None:
        """This side's address."""
        return self.transport.getHost() if self.transport is not None else None

    @property
    def paused(self) -> bool:
        """Whether dispatch is held by L{pauseProducing}."""
        return bool(self._hold & _PAUSED)

    @property
    def pendingObjects(self) -> int:
        """Objects decoded but not yet dispatched (held while paused)."""
        return len(self._pending) if self._pending else 0

    @property
    def bufferedBytes(self) -> int:
        """Received bytes not yet decoded (a partial frame)."""
        return len(self._buffer) if self._buffer else 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} #{self.contextId} peer={_describe(self.peer)}>"

    # -- Twisted's protocol API ---------------------------------------------

    def makeConnection(self, transport: Any) -> None:
        factory = self.factory
        if factory is not None:
            now = factory.reactor.seconds()
            self.connectedAt = now
            self.lastActivity = now
            factory.contextConnected(self)
        Protocol.makeConnection(self, transport)

    def dataReceived(self, data: bytes) -> None:
        # Counting is per read, not per frame or byte: two additions.
        self.bytesReceived += len(data)
        self.lastActivity = self.factory.reactor.seconds()  # type: ignore[union-attr]
        self._receive(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Called when the connection is gone; C{self.closeReason} says why.
        Overrides need not call this base method: the context's bookkeeping
        runs either way.
        """
        self._connectionEnding(reason)
        self._release()

    # -- the receive path ----------------------------------------------------

    def _receive(self, data: bytes) -> None:
        buffer = self._buffer
        if buffer:
            # A partial frame is waiting: append (amortised O(1) on a
            # bytearray) and decode from its start.
            buffer += data
            data = buffer  # type: ignore[assignment]
        if self._hold:
            if data is not buffer:
                self._buffer = bytearray(data)
            return
        out: list[object] = []
        failure: DecodeError | None = None
        try:
            consumed = self._decoder.decode(data, out)
        except DecodeError as e:
            failure = e
            consumed = len(data)
        except Exception:
            # Not a wire-format verdict but a bug in the decoder, which is
            # application code: a handler error, with its traceback.
            self._decodeFailed = True
            self._handlerError(Failure())
            return
        # Compact once per read, never per frame.
        if consumed >= len(data):
            self._buffer = None
        elif buffer is not None and data is buffer:
            del buffer[:consumed]
        else:
            # The first partial frame: one copy of just its bytes.
            self._buffer = bytearray(memoryview(data)[consumed:])
        if out:
            self.framesReceived += len(out)
            self._dispatch(out)
        if failure is not None:
            self._decodeError(failure)

    def _dispatch(self, objects: Iterable[object]) -> None:
        """
        Deliver C{objects} to L{objectReceived}, batching the writes they
        make; stop (and keep the rest) as soon as dispatch is held.
        """
        objectReceived = self.objectReceived
        iterator: Iterator[object] = iter(objects)
        outer = self._batch
        batch: list[bytes] = []
        self._batch = batch
        try:
            for obj in iterator:
                objectReceived(obj)
                if self._hold:
                    # Paused or closing: keep what is left, in order.
                    rest = deque(iterator)
                    if rest and not self._hold & _CLOSING:
                        if self._pending:
                            rest.extend(self._pending)
                        self._pending = rest
                    break
        except Exception:
            self._handlerError(Failure())
        finally:
            self._flush()
            self._batch = outer

    def _flush(self) -> None:
        """Send the current batch as one write, keeping batch mode on."""
        batch = self._batch
        if not batch or self.transport is None:
            return
        self._batch = []
        # One transport call per batch, whatever its size.
        if len(batch) == 1:
            data = batch[0]
            self.bytesSent += len(data)
            self.transport.write(data)
        else:
            self.bytesSent += sum(map(len, batch))
            self.transport.writeSequence(batch)

    def _writeEncoded(self, encoded: Any) -> None:
        """Send bytes already encoded (by L{broadcast}), as L{writeObject} does."""
        self.framesSent += 1
        batch = self._batch
        if batch is not None:
            if encoded.__class__ is bytes:
                batch.append(encoded)
            else:
                batch.extend(encoded)
        elif encoded.__class__ is bytes:
            self.bytesSent += len(encoded)
            self.transport.write(encoded)  # type: ignore[union-attr]
        else:
            self.bytesSent += sum(map(len, encoded))
            self.transport.writeSequence(encoded)  # type: ignore[union-attr]

    # -- failures and the end of the connection --------------------------------

    def _decodeError(self, error: DecodeError) -> None:
        self._decodeFailed = True
        self._buffer = None
        factory = self.factory
        if factory is not None:
            factory.decodeErrors += 1
            factory.rateLimitedLog.warn(
                "closing {peer}: {closeReason}: {reason}",
                peer=_describe(self.peer),
                closeReason=error.closeReason,
                reason=error.reason,
                contextId=self.contextId,
            )
        self.close(error.closeReason)

    def _handlerError(self, failure: Failure) -> None:
        factory = self.factory
        if factory is not None:
            factory.handlerErrors += 1
            factory.rateLimitedLog.failure(
                "closing {peer}: handler-error in {context}",
                failure,
                peer=_describe(self.peer),
                context=type(self).__name__,
                contextId=self.contextId,
            )
        self._buffer = None
        self._pending = None
        self.close(errors.HANDLER_ERROR)

    def _connectionEnding(self, reason: Failure) -> None:
        """
        Before the application's C{connectionLost}: settle the close reason
        and give the decoder its last bytes.
        """
        if self._released:
            return
        if self.closeReason is None:
            self.closeReason = errors.PEER
        self._hold |= _CLOSING
        self._pending = None
        buffer = self._buffer
        self._buffer = None
        if buffer and not self._decodeFailed:
            try:
                last = self._decoder.decodeLast(bytes(buffer))
            except DecodeError:
                last = []
            if last:
                self.framesReceived += len(last)
                self._hold &= ~_CLOSING
                self._dispatch(last)
                self._hold |= _CLOSING
            elif self.factory is not None:
                self.factory.truncatedFrames += 1

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self.connected = 0
        if self.factory is not None:
            self.factory.contextDisconnected(self)


def _noEncoder(obj: object) -> Any:
    raise RuntimeError("this context has no encoder: it was not built by a factory")


def _describe(address: object) -> str:
    """C{host:port} for IP addresses, the repr otherwise."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
