"""
The client context: one object per connection (DIOCP's TIocpClientContext).

It owns the connection's receive buffer and runs the decode loop, so codecs
only ever look at bytes::

    dataReceived(bytes)
      -> decoder.decode(buffer, out)        every complete frame at once
      -> objectReceived(obj) for each       the application's code
           -> writeObject(reply)            encoded now, queued in the batch
      -> one transport.write                the batch joined, in order
      -> compact the buffer once            keep only the partial frame

Subclass L{ConnectionContext} and override L{ConnectionContext.objectReceived}
(and, if you like, C{connectionMade} and C{connectionLost}, Twisted's usual
hooks).  Its host (the context factory that made it, known to the context
only as an L{iocpsvc.interfaces.IContextHost}) gives it its id, its decoder,
its encoder and its limits, in one call: L{ConnectionContext.bind}.

Dispatch of received objects stops, in order, while any of these holds:
the application paused reading (L{ConnectionContext.pauseReading}); a
consumer is full (L{ConnectionContext.pauseProducing}: the connection's own
write buffer is over its high water mark, or another consumer it was
registered with); a handler's Deferred has not fired yet; the connection is
closing.

Long: it is one class, and on purpose.  Its receive path, dispatch, send
path, flow control and end share the same slots and call each other once
per read; split into mixins or helpers, the hot path would pay attribute
and call lookups per frame and the one-way data flow would be harder to
follow.  What it needs from outside has moved out: its host's contract
(L{iocpsvc.interfaces.IContextHost}) and the transports' internals
(L{iocpsvc.transports}).
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterator
from inspect import iscoroutine
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IAddress, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from iocpsvc import errors
from iocpsvc.addresses import describePeer
from iocpsvc.errors import DecodeError
from iocpsvc.interfaces import IContextHost
from iocpsvc.transports import (
    abortOrClose,
    canSendNow,
    describeTlsError,
    isProducerOf,
    isTlsError,
    sendNow,
    tlsHandshakeDone,
    unsentBytes,
)

# Why dispatch is held: bit flags in ``_hold``; any bit set stops dispatch.
_PAUSED = 1  # the application called pauseReading()
_BLOCKED = 2  # a consumer is full: pauseProducing() (write backpressure)
_WAITING = 4  # objectReceived returned a Deferred that has not fired
_CLOSING = 8  # close()/abort() was called, or the stream broke

_log = Logger(namespace="iocpsvc.context")


def _releasing(hook: Callable[..., Any]) -> Callable[..., Any]:
    """
    Wrap a subclass's C{connectionLost} so that the context's own
    bookkeeping always runs, whether or not the override calls C{super()}.
    """

    @functools.wraps(hook)
    def connectionLost(self: ConnectionContext, reason: Failure = connectionDone) -> None:
        # Only the outermost override settles and releases, so code after a
        # super() call in a subclass's override still sees the context online.
        outermost = not self._ending
        if outermost:
            self._ending = True
            self._endSafely(reason)
        try:
            hook(self, reason)
        except Exception:
            self._hookFailed(Failure(), "connectionLost")
        finally:
            if outermost:
                self._release()

    connectionLost._iocpsvcReleasing = True  # type: ignore[attr-defined]
    return connectionLost


@implementer(IPushProducer)
class ConnectionContext(Protocol):
    """
    One connection: receive buffer, frame splitting, dispatch of decoded
    objects, encoding of written objects, flow control, and the
    connection's facts.

    Override L{objectReceived}.  Write replies with L{writeObject}; writes
    made while a read is being processed leave together, in order, at the
    end of that read.  Write raw bytes with L{writeBytes}, not
    C{transport.write}, or they may overtake objects written earlier in the
    same batch.

    A context is the streaming producer of its own transport: when more
    than the factory's C{writeHighWater} bytes wait to be sent, the
    transport pauses it (reading and dispatch stop, L{writabilityChanged}
    says so) until they have gone.  To register another producer on the
    transport (a file sender, say), unregister the context first with
    C{self.transport.unregisterProducer()}.  A context can also be given to
    another consumer, e.g. C{otherContext.transport.registerProducer(self,
    True)} in a proxy.

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
    @ivar closingAt: C{reactor.seconds()} when the close began, or C{None}.
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
        "closingAt",
        "_decoder",
        "_encode",
        "_newBatch",
        "_buffer",
        "_batch",
        "_pending",
        "_pendingRuns",
        "_pendingBytes",
        "_hold",
        "_readingPaused",
        "_backlogPaused",
        "_blockedBytes",
        "_blocked",
        "_seconds",
        "_producing",
        "_direct",
        "_decodeFailed",
        "_closeWhenDrained",
        "_ending",
        "_released",
    )

    factory: Any
    """
    The context's host (an L{IContextHost}): the factory that made it, whose
    other methods (C{broadcast}, C{sendTo}, ...) the application may call;
    C{None} until the context is bound.
    """

    objectType: type | None = None
    """
    The kind of object this context writes and expects to receive, e.g.
    C{str} for a context that works in text; C{None} (the default) for one
    that takes whatever its codec carries.  C{twistd iocpsvc} checks it
    against the codec at start (L{iocpsvc.factory.agreeWithContext}): a
    framer alone, which carries bytes, is completed with C{+text} for a
    C{str} context; any other mismatch is refused with one line.
    """

    pauseReadingWhenWriteBlocked = True
    """
    Whether reading (and dispatch) stops while more than the high water
    mark of written bytes waits to be sent.  Right for a server: its writes
    are replies, and reading more requests only makes more.  A client whose
    writes are requests of its own sets it to False, so that it keeps
    reading replies while its requests back up (otherwise two sides that
    both wait for the other to read would stall).  The C{maxPendingWrite}
    limit applies either way.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Resolved through the MRO, so a mixin's connectionLost is wrapped too.
        resolved = cls.connectionLost
        if resolved is not ConnectionContext.connectionLost and not getattr(
            resolved, "_iocpsvcReleasing", False
        ):
            cls.connectionLost = _releasing(resolved)  # type: ignore[method-assign]

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
        self.closingAt: float | None = None
        self._decoder: Any = None
        self._encode: Callable[[object], Any] = _noEncoder
        self._newBatch: Callable[[], Any] = list
        self._buffer: bytearray | None = None
        # None outside a read's dispatch; during it, a list of encoded
        # chunks, or the IBatch of a batch encoder.
        self._batch: Any = None
        self._pending: deque[object] | None = None
        # Beside the pending objects: [objects left, bytes each] per read
        # they came from, and the received bytes they add up to.
        self._pendingRuns: deque[list[int]] | None = None
        self._pendingBytes = 0
        self._hold = 0
        self._readingPaused = False
        self._backlogPaused = False
        self._blockedBytes = 0
        self._blocked = False
        self._seconds: Callable[[], float] = _noClock
        self._producing = False
        self._direct = False
        self._decodeFailed = False
        self._closeWhenDrained: DecodeError | None = None
        self._ending = False
        self._released = False

    def bind(
        self,
        host: IContextHost,
        contextId: int,
        decoder: Any,
        encode: Callable[[object], Any],
        newBatch: Callable[[], Any] | None = None,
    ) -> None:
        """
        Give this context its host, its id, its decoder (its own, one per
        connection unless the decoder is stateless), the C{encode} of its
        encoder (one bound method shared by every context of the host) and,
        for an L{IBatchEncoder}, its C{newBatch}, before it connects.  The
        factory does it for each context it makes.
        """
        self.factory = host
        self.contextId = contextId
        self._decoder = decoder
        self._encode = encode
        self._newBatch = newBatch or list
        self._seconds = host.seconds  # one bound method shared by all contexts

    # -- the application's API ---------------------------------------------

    def objectReceived(self, obj: object) -> Deferred[Any] | Any:
        """
        Called once for every decoded object, in stream order.  Override it.

        It may return a Deferred, or be a coroutine (C{async def}): this
        connection's next object is then dispatched only after it fires,
        so order is kept while other connections are served; reading from
        this client pauses while more than the factory's
        C{maxPendingObjects} wait behind it.  L{iocpsvc.threads.inThreadPool}
        runs blocking code this way.

        An exception raised here (or a failed Deferred) is logged with the
        peer and its traceback, and closes this connection (reason
        C{handler-error}); other connections go on.
        """

    def writeObject(self, obj: object) -> None:
        """
        Encode C{obj} with the factory's encoder (or C{obj}'s L{IEncoder}
        adapter) and send it.

        @raise iocpsvc.errors.EncodeError: C{obj} cannot be encoded.
        """
        # Hot path.  During a read, a batch encoder's batch checks obj now
        # and frames it with the read's other writes at the flush, in one C
        # call (iocpsvc.accel); a list batch takes what encode returned
        # (one class check tells a single bytes from a chunk sequence);
        # outside a read, the encoded object is sent now.
        batch = self._batch
        if batch is None:
            self._send(self._encode(obj))
        elif batch.__class__ is list:
            encoded = self._encode(obj)
            if encoded.__class__ is bytes:
                batch.append(encoded)
            else:
                batch.extend(encoded)
        else:
            batch.add(obj)
        self.framesSent += 1

    def writeBytes(self, data: bytes) -> None:
        """
        Send raw bytes, in order with the objects written around them (no
        encoding).
        """
        if self._batch is not None:
            self._batch.append(data)
        else:
            self._send(data)

    def close(self, reason: str = errors.LOCAL) -> None:
        """
        Close gracefully: what was written so far is sent first (within the
        factory's C{closeTimeout}, after which the connection is aborted).
        No further received objects are dispatched.
        """
        if self.closeReason is None:
            self.closeReason = reason
        if self._hold & _CLOSING:
            return
        self._hold |= _CLOSING
        self.closingAt = self._seconds()
        self._flush()
        transport = self.transport
        if transport is not None and not self._released:
            self._unregister()
            transport.loseConnection()

    def abort(self, reason: str = errors.LOCAL) -> None:
        """
        Close at once, dropping anything not yet sent.
        """
        if self.closeReason is None:
            self.closeReason = reason
        self._hold |= _CLOSING
        if self.closingAt is None:
            self.closingAt = self._seconds()
        self._batch = self._newBatch() if self._batch is not None else None
        transport = self.transport
        if transport is None or self._released:
            return
        self._unregister()
        abortOrClose(transport)

    def pauseReading(self) -> None:
        """
        Stop reading from this client and stop dispatching objects already
        received, until L{resumeReading} (HP-Socket's PauseReceive).
        """
        self._hold |= _PAUSED
        self._updateReading()

    def resumeReading(self) -> None:
        """Dispatch the objects held by L{pauseReading}, then read again."""
        if self._hold & _PAUSED:
            self._hold &= ~_PAUSED
            self._drain()

    def writabilityChanged(self, writable: bool) -> None:
        """
        Called when more than the high water mark of written bytes is
        waiting to be sent (C{writable} false: reading and dispatch have
        stopped), and again once it has all been sent.  Override it to
        stop and restart writes that do not come from received objects
        (timers, broadcasts); see also L{writable}.
        """

    @property
    def writable(self) -> bool:
        """Whether writes are going out (no consumer is full)."""
        return not self._blocked

    # -- IPushProducer: the consumer (normally our own transport) ---------------

    def pauseProducing(self) -> None:
        """
        A consumer is full: stop reading from this client and stop
        dispatching until L{resumeProducing}.
        """
        if self._blocked:
            return
        self._blocked = True
        if self.pauseReadingWhenWriteBlocked:
            self._hold |= _BLOCKED
        self._blockedBytes = 0
        factory = self.factory
        if factory is not None:
            factory.counters.writeBlockedTotal += 1
            factory.rateLimitedLog.info(
                "{peer}: more than {highWater} bytes waiting to be sent; reading paused",
                peer=describePeer(self.peer),
                highWater=factory.limits.writeHighWater,
                contextId=self.contextId,
            )
        self._updateReading()
        self._tellWritability(False)

    def resumeProducing(self) -> None:
        """The consumer has room again: dispatch what was held, read again."""
        if not self._blocked:
            return
        self._blocked = False
        self._hold &= ~_BLOCKED
        self._blockedBytes = 0
        self._tellWritability(True)
        self._drain()

    def stopProducing(self) -> None:
        """A consumer gave up on this context: close it at once."""
        transport = self.transport
        if transport is None or self._hold & _CLOSING:
            return
        if getattr(transport, "disconnected", False) or not getattr(transport, "connected", True):
            return  # our own transport is going away; connectionLost follows
        self.abort()

    # -- facts ----------------------------------------------------------------

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
        """Whether dispatch is held by L{pauseReading} or a full consumer."""
        return bool(self._hold & (_PAUSED | _BLOCKED))

    @property
    def pendingObjects(self) -> int:
        """Objects decoded but not yet dispatched."""
        return len(self._pending) if self._pending else 0

    @property
    def pendingObjectBytes(self) -> int:
        """The received bytes whose objects are decoded but not yet dispatched."""
        return self._pendingBytes

    @property
    def bufferedBytes(self) -> int:
        """Received bytes not yet decoded (a partial frame)."""
        return len(self._buffer) if self._buffer else 0

    @property
    def pendingWriteBytes(self) -> int:
        """
        Bytes written but not yet sent, as far as the transport tells (see
        L{iocpsvc.transports.unsentBytes}): exact for Twisted's TCP
        transports; behind Twisted's TLS, the plaintext TLS holds
        unencrypted plus the ciphertext not yet written to the socket;
        otherwise an upper bound while writing is blocked and 0 when it is
        not.
        """
        unsent = unsentBytes(self.transport)
        if unsent is not None:
            return unsent
        if self._blocked and self.factory is not None:
            # An estimate: the mark plus everything written since it was
            # crossed, the crossing write included.
            return self.factory.limits.writeHighWater + self._blockedBytes
        return 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} #{self.contextId} peer={describePeer(self.peer)}>"

    # -- Twisted's protocol API ---------------------------------------------

    def makeConnection(self, transport: Any) -> None:
        factory = self.factory
        if factory is not None and factory.holdConnection(self, transport):
            return  # behind haproxy: connected once the PROXY header is in (iocpsvc.proxy)
        self.connected = 1
        self.transport = transport
        if factory is not None:
            now = self._seconds()
            self.connectedAt = now
            self.lastActivity = now
            factory.contextConnected(self)
        # Replies may go straight to the socket only on Twisted's own POSIX TCP
        # transports; TLS, the IOCP reactor, wrappers and anything unknown
        # take the plain path.
        self._direct = canSendNow(transport) and (factory is None or factory.directWrites)
        register = getattr(transport, "registerProducer", None)
        if register is not None:
            # Our own transport tells us when its write buffer passes the high
            # water mark (pauseProducing) and when it has drained.
            register(self, True)
            self._producing = True
        try:
            self.connectionMade()
        except Exception:
            self._handlerError(Failure(), "connectionMade")

    def dataReceived(self, data: bytes) -> None:
        # Counting is per read, not per frame or byte: two additions.
        self.bytesReceived += len(data)
        self.lastActivity = self._seconds()
        self._receive(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Called when the connection is gone; C{self.closeReason} says why.
        Overrides need not call this base method: the context's bookkeeping
        runs either way.
        """
        if self._ending:
            return  # called through super() from an override, whose wrapper releases
        self._ending = True
        self._endSafely(reason)
        self._release()

    # -- the receive path ----------------------------------------------------

    def _receive(self, data: bytes) -> None:
        buffer = self._buffer
        hold = self._hold
        if hold & _CLOSING or self._decodeFailed:
            return  # nothing more is dispatched: don't keep what arrives
        if buffer:
            # A partial frame is waiting: append (amortised O(1) on a
            # bytearray) and decode from its start.
            buffer += data
            data = buffer  # type: ignore[assignment]
        if hold & ~_WAITING:
            # Paused: keep the bytes undecoded (reading has stopped, so at
            # most what was in flight arrives).
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
            self._handlerError(Failure(), "decoder")
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
            if hold:
                self._queue(out, consumed)  # behind a handler that has not finished
            else:
                self._dispatch(out, consumed)
        if failure is not None:
            if self._pending:
                # Objects decoded before the error still wait behind a slow
                # handler: they are delivered first, then the connection closes.
                self._decodeFailed = True
                self._closeWhenDrained = failure
                self._updateReading()
            else:
                self._decodeError(failure)

    def _dispatch(self, objects: list[object], size: int = 0) -> None:
        """
        Deliver freshly decoded C{objects}, which came from C{size} received
        bytes (nothing is pending when this runs), to L{objectReceived},
        batching the writes they make; as soon as dispatch is held, queue
        the rest, in order.
        """
        objectReceived = self.objectReceived
        iterator: Iterator[object] = iter(objects)
        outer = self._batch
        self._batch = self._newBatch()
        try:
            for obj in iterator:
                result = objectReceived(obj)
                if result is not None:
                    self._awaitResult(result)
                if self._hold:
                    if not self._hold & _CLOSING:
                        rest = list(iterator)
                        if rest:
                            self._queue(rest, size * len(rest) // len(objects))
                    break
        except Exception:
            self._handlerError(Failure())
        finally:
            self._flush()
            self._batch = outer

    def _dispatchPending(self) -> None:
        """
        Deliver held objects, popping them one at a time from the pending
        deque (never copying what is left: a long backlog drains in linear
        time), until dispatch is held again.
        """
        pending = self._pending
        runs = self._pendingRuns
        if not pending or runs is None:
            return
        objectReceived = self.objectReceived
        outer = self._batch
        self._batch = self._newBatch()
        try:
            while pending and not self._hold:
                obj = pending.popleft()
                run = runs[0]
                run[0] -= 1
                self._pendingBytes -= run[1]
                if not run[0]:
                    runs.popleft()
                result = objectReceived(obj)
                if result is not None:
                    self._awaitResult(result)
        except Exception:
            self._handlerError(Failure())
        finally:
            self._flush()
            self._batch = outer
        if not pending and self._pending is pending:
            self._dropPending()

    def _queue(self, objects: list[object], size: int) -> None:
        """
        Keep C{objects}, decoded from C{size} received bytes, for later
        dispatch; pause reading past either bound (objects, bytes).
        """
        pending = self._pending
        if pending is None:
            pending = self._pending = deque(objects)
            self._pendingRuns = deque()
        else:
            pending.extend(objects)
        # Bytes are known per read, not per object: each object of a read
        # counts for an equal share of it.
        each = size // len(objects)
        self._pendingRuns.append([len(objects), each])  # type: ignore[union-attr]
        self._pendingBytes += each * len(objects)
        factory = self.factory
        if self._backlogPaused or factory is None:
            return
        limits = factory.limits
        if len(pending) > limits.maxPendingObjects:
            why, bound = "objects", limits.maxPendingObjects
        elif self._pendingBytes > limits.maxPendingObjectBytes:
            why, bound = "bytes of frames", limits.maxPendingObjectBytes
        else:
            return
        self._backlogPaused = True
        factory.counters.backlogPausedTotal += 1
        factory.rateLimitedLog.info(
            "{peer}: more than {bound} {why} waiting for a slow handler; reading paused",
            peer=describePeer(self.peer),
            bound=bound,
            why=why,
            contextId=self.contextId,
        )
        self._updateReading()

    def _dropPending(self) -> None:
        """Forget the pending objects (dispatched, or dropped at the close)."""
        self._pending = None
        self._pendingRuns = None
        self._pendingBytes = 0

    def _awaitResult(self, result: Any) -> None:
        """objectReceived returned something: wait for it if it is async."""
        if iscoroutine(result):
            result = Deferred.fromCoroutine(result)
        if isinstance(result, Deferred):
            self._hold |= _WAITING
            result.addBoth(self._handlerDone)

    def _handlerDone(self, result: object) -> None:
        self._hold &= ~_WAITING
        if isinstance(result, Failure):
            if not result.check(CancelledError):  # cancelled by the application itself
                self._handlerError(result)
        elif self._batch is None:
            # Fired later, from the reactor: carry on with what waited.
            self._drain()

    def _drain(self) -> None:
        """Dispatch what was held, decode what was buffered, read again."""
        if not self._hold and self._pending:
            self._dispatchPending()
        if not self._hold and self._buffer:
            self._receive(b"")
        if self._backlogPaused:
            factory = self.factory
            limits = factory.limits if factory is not None else None
            if limits is None or (
                self.pendingObjects <= limits.maxPendingObjects // 2
                and self._pendingBytes <= limits.maxPendingObjectBytes // 2
            ):
                self._backlogPaused = False
        error = self._closeWhenDrained
        if error is not None and not self._hold and not self._pending:
            self._closeWhenDrained = None
            self._decodeError(error)
            return
        self._updateReading()

    def _updateReading(self) -> None:
        """Pause or resume the transport's reading to match why we hold."""
        want = bool(self._hold & (_PAUSED | _BLOCKED)) or self._backlogPaused or self._decodeFailed
        transport = self.transport
        if want == self._readingPaused or transport is None or self._hold & _CLOSING:
            return
        self._readingPaused = want
        if want:
            transport.pauseProducing()  # type: ignore[attr-defined]
        else:
            transport.resumeProducing()  # type: ignore[attr-defined]

    # -- the send path -------------------------------------------------------

    def _flush(self) -> None:
        """
        Send the current batch as one write, keeping batch mode on.  Writes
        made during that write (from writabilityChanged, when it crosses the
        high water mark) go out after it.
        """
        batch = self._batch
        while batch and self.transport is not None:
            self._batch = self._newBatch()
            # One transport call per batch, whatever its size.
            if batch.__class__ is not list:
                self._send(batch.take())  # framed together, in one call
            else:
                self._send(batch[0] if len(batch) == 1 else batch)
            batch = self._batch

    def _send(self, data: Any) -> None:
        if data.__class__ is not bytes:
            # One C-level join beats Twisted's per-chunk writeSequence loops
            # for the many small chunks of a batch.
            data = b"".join(data)
        size = len(data)
        self.bytesSent += size
        transport = self.transport
        if transport is None:
            return
        if self._direct:
            # Nothing queued: sent now, from this reactor turn (transports.sendNow).
            sent = sendNow(transport, data)
            if sent >= 0:
                if self.factory is not None:
                    self.factory.counters.directSends += 1
                if sent == size:
                    return
                if sent:
                    data = data[sent:]
        wasBlocked = self._blocked
        transport.write(data)
        if self._blocked:
            # More than the high water mark waits to be sent; this write may
            # be the one that crossed it (the transport paused us inside it).
            self._blockedBytes = self._blockedBytes + size if wasBlocked else size
            factory = self.factory
            if factory is not None and self.pendingWriteBytes > factory.maxPendingWrite:
                self._slowClient()

    def writeEncoded(self, encoded: Any) -> None:
        """
        Send C{encoded}, what an encoder of this context's codec returned
        (C{bytes}, or a sequence of chunks), as L{writeObject} sends an object
        it encoded: counted as a frame, batched during a read.  A broadcast
        encodes once and writes the same bytes to every context this way.
        """
        self.framesSent += 1
        batch = self._batch
        if batch is None:
            self._send(encoded)
        elif encoded.__class__ is bytes:
            batch.append(encoded)
        else:
            batch.extend(encoded)

    def _unregister(self) -> None:
        # A paused streaming producer would keep loseConnection waiting.
        if not self._producing:
            return
        self._producing = False
        transport = self.transport
        if transport is None:
            return
        # Unregister only if we are still the producer: the application may
        # have replaced us.
        if isProducerOf(transport, self):
            transport.unregisterProducer()  # type: ignore[attr-defined]

    # -- failures and the end of the connection --------------------------------

    def _slowClient(self) -> None:
        factory = self.factory
        if factory is not None:
            factory.rateLimitedLog.warn(
                "closing {peer}: slow-client: more than {limit} bytes written and not sent",
                peer=describePeer(self.peer),
                limit=factory.maxPendingWrite,
                contextId=self.contextId,
            )
        self.abort(errors.SLOW_CLIENT)

    def _decodeError(self, error: DecodeError) -> None:
        self._decodeFailed = True
        self._buffer = None
        factory = self.factory
        if factory is not None:
            factory.counters.decodeErrors += 1
            factory.rateLimitedLog.warn(
                "closing {peer}: {closeReason}: {reason}",
                peer=describePeer(self.peer),
                closeReason=error.closeReason,
                reason=error.reason,
                contextId=self.contextId,
            )
        self.close(error.closeReason)

    def _handlerError(self, failure: Failure, hook: str = "objectReceived") -> None:
        """
        Application code (C{hook}, or an encoder it called) raised: count
        it, log it (the traceback once, then one rate-limited line) and
        close this connection, and only this one.
        """
        self._countHandlerError(failure, hook, _HANDLER_ERROR, errors.HANDLER_ERROR)
        self._buffer = None
        self._dropPending()
        self.close(errors.HANDLER_ERROR)

    def _hookFailed(self, failure: Failure, hook: str) -> None:
        """
        A hook that runs once the connection is gone (C{connectionLost})
        raised: count and log it as L{_handlerError} does; there is nothing
        left to close.
        """
        self._countHandlerError(failure, hook, _HANDLER_ERROR_AFTER_CLOSE, self.closeReason)

    def _countHandlerError(self, failure: Failure, hook: str, format: str, closeReason: str | None) -> None:
        factory = self.factory
        if factory is None:
            return
        factory.counters.handlerErrors += 1
        factory.rateLimitedLog.failure(
            format,
            failure,
            peer=describePeer(self.peer),
            context=type(self).__name__,
            hook=hook,
            closeReason=closeReason,
            contextId=self.contextId,
        )

    def _tellWritability(self, writable: bool) -> None:
        """Call L{writabilityChanged}; an exception in it is a handler error."""
        try:
            self.writabilityChanged(writable)
        except Exception:
            self._handlerError(Failure(), "writabilityChanged")

    def connectionEnding(self, reason: Failure) -> None:
        """
        Called once as the connection ends, before C{connectionLost}: the
        close reason is settled and the objects the decoder still found in
        the last bytes have been dispatched.  Runs whether or not a
        subclass's C{connectionLost} calls C{super()}, so it is the place
        for a class's own bookkeeping (L{iocpsvc.client.RequestContext}
        fails its waiting requests here).  An exception is counted and
        logged as a handler error.
        """

    def _endSafely(self, reason: Failure) -> None:
        """L{_settle} then L{connectionEnding}, whose failures must not skip the release."""
        if self._released:
            return
        try:
            self._settle(reason)
        except Exception:
            self._hookFailed(Failure(), "decodeLast")
        try:
            self.connectionEnding(reason)
        except Exception:
            self._hookFailed(Failure(), "connectionEnding")

    def _settle(self, reason: Failure) -> None:
        """
        Before the application's C{connectionLost}: settle the close reason
        and give the decoder its last bytes -- unless dispatch was held
        (closed by us, paused, waiting for a handler): then what is still
        held is dropped.
        """
        if self.closeReason is None:
            self.closeReason = errors.PROTOCOL_ERROR if self._tlsFailed(reason) else errors.PEER
        held = self._hold or self._decodeFailed
        self._hold |= _CLOSING
        self._dropPending()
        buffer = self._buffer
        self._buffer = None
        if not buffer:
            return
        last: list[object] = []
        if not held:
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
            self.factory.counters.truncatedFrames += 1

    def _tlsFailed(self, reason: Failure) -> bool:
        """
        Whether the connection was lost to a TLS error: a client that sent
        something other than a TLS handshake, shared no protocol or cipher,
        rejected our certificate, or broke a record later.  That is the peer
        breaking the protocol, not leaving, so it is counted as
        C{protocol-error} and logged, rate-limited, with OpenSSL's reason
        and no traceback (a port scanner must not flood the log).
        """
        if not isTlsError(reason):
            return False
        factory = self.factory
        if factory is not None:
            factory.rateLimitedLog.warn(
                _TLS_ERROR if tlsHandshakeDone(self.transport) else _TLS_HANDSHAKE_FAILED,
                peer=describePeer(self.peer),
                error=describeTlsError(reason.value),
                closeReason=errors.PROTOCOL_ERROR,
                contextId=self.contextId,
            )
        return True

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self.connected = 0
        if self.factory is not None:
            discarded = getattr(self._decoder, "discardedFrames", 0)
            if discarded:
                self.factory.counters.discardedFrames += discarded
            self.factory.contextDisconnected(self)


_HANDLER_ERROR = "closing {peer}: handler-error in {context}.{hook}"
_HANDLER_ERROR_AFTER_CLOSE = (
    "{peer}: handler-error in {context}.{hook} after the connection closed ({closeReason})"
)

# Separate formats, so that the rate-limited log keeps a separate budget for
# each: a flood of failed handshakes cannot hide other protocol errors.
_TLS_HANDSHAKE_FAILED = "closing {peer}: protocol-error: TLS handshake failed: {error}"
_TLS_ERROR = "closing {peer}: protocol-error: TLS error: {error}"


def _noClock() -> float:
    return 0.0


def _noEncoder(obj: object) -> Any:
    raise errors.UnboundContext("this context has no encoder: it was not bound to a host (bind)")
