"""
L{RequestContext}: a context whose L{RequestContext.request} writes an
object and returns a Deferred fired with the reply to it, for protocols
whose replies come back in the order the requests went out (one reply per
request).  It works on either side; L{iocpsvc.client} connects it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError, fail
from twisted.internet.error import ConnectionClosed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from iocpsvc import errors
from iocpsvc.addresses import describePeer
from iocpsvc.context import ConnectionContext
from iocpsvc.errors import EncodeError

__all__ = ["RequestContext"]

_log = Logger(namespace="iocpsvc.client")


class _Waiter:
    """One request waiting for its reply: its Deferred and its timer."""

    __slots__ = ("deferred", "timer")

    def __init__(self) -> None:
        self.deferred: Deferred[Any] = Deferred(self._cancelled)
        self.timer: IDelayedCall | None = None

    def _cancelled(self, deferred: Deferred[Any]) -> None:
        # The caller gave up (Deferred.cancel: CancelledError).  The slot
        # stays in the queue so that the reply, when it comes, is matched
        # to this request and dropped, and the next reply goes to the next.
        self.stopTimer()

    def stopTimer(self) -> None:
        timer = self.timer
        if timer is not None:
            self.timer = None
            if timer.active():
                timer.cancel()


class RequestContext(ConnectionContext):
    """
    A context for protocols whose replies come back in the order the
    requests were sent (one reply per request): L{request} writes an object
    and returns a Deferred that fires with the reply to it.

    Requests can be pipelined: call L{request} as often as you like without
    waiting; the replies are matched to the requests by order alone.  Each
    received object fires the oldest waiting request's Deferred.

    Contracts:

      - Do not override C{objectReceived}: it is what matches replies.  An
        object received while no request is waiting goes to
        L{unsolicitedObjectReceived}, which by default logs it and closes
        the connection (reason C{protocol-error}).
      - Objects written with C{writeObject} (not L{request}) expect no
        reply; use that only for messages the peer does not answer.
      - When the connection is lost, every waiting request fails with the
        reason (C{ConnectionDone} for a clean close, C{ConnectionLost}
        otherwise: both C{ConnectionClosed}), before the context's own
        C{connectionLost} runs.  A request made once the context is
        closing fails at once with C{ConnectionClosed}.
      - A request that times out fails with
        C{twisted.internet.defer.TimeoutError} and closes the connection
        (reason C{local}): a reply arriving later would be taken for the
        reply to the next request.  Requests still waiting then fail with
        the connection's loss.
      - Cancelling a request's Deferred (C{Deferred.cancel}) fails it with
        C{CancelledError} and keeps its place: its reply is dropped when it
        arrives, and the connection stays open.

    Flow control differs from a server's context on one point: when more
    than the factory's C{writeHighWater} bytes of requests wait to be sent,
    a C{RequestContext} keeps reading and dispatching replies.  A server
    context stops reading then, because its writes come from what it
    reads; a client's requests do not, and the replies it would stop
    reading are what lets the server read more requests, so stopping would
    deadlock any pipeline larger than the socket buffers (the class sets
    C{pauseReadingWhenWriteBlocked = False}).  L{writable} and
    C{writabilityChanged} still say when requests are backing up: pace
    requests by them.  The C{slow-client} limit, C{maxPendingWrite}, still
    bounds what may wait to be sent (256 MiB in L{clientLimits}).

    Keep-alives: with a codec that has a keep-alive frame (C{diocp}), set
    L{keepAliveInterval} (a class attribute) and the context sends one
    after that many seconds with nothing sent, or call L{sendKeepAlive}.
    A keep-alive never goes out in the same write as data: a real DIOCP
    peer stops decoding a read at a keep-alive, so data behind it would
    wait for the peer's next read.  A request that encodes to the
    keep-alive frame (C{request(b"")} on C{diocp}) fails at once with
    L{iocpsvc.errors.EncodeError}: the peer never answers it.
    """

    __slots__ = ("_waiting", "_keepAliveTimer", "_sentAtLastTick", "_keepAlive")

    keepAliveInterval: float | None = None
    """
    Seconds without sending anything after which the codec's keep-alive
    frame is sent (C{None}: never).  Ignored for codecs without one.
    """

    def __init__(self) -> None:
        super().__init__()
        self._waiting: deque[_Waiter] = deque()
        self._keepAliveTimer: Any = None
        self._sentAtLastTick = -1
        self._keepAlive: bytes | None = None

    # Keep reading replies while requests back up; maxPendingWrite still
    # bounds what may wait to be sent.
    pauseReadingWhenWriteBlocked = False

    @property
    def waitingRequests(self) -> int:
        """Requests sent whose reply has not arrived yet (timed out or cancelled ones included)."""
        return len(self._waiting)

    def request(self, obj: object, timeout: float | None = None) -> Deferred[Any]:
        """
        Write C{obj} and return a Deferred that fires with the next reply
        in order, the reply to this request.

        @param obj: the request, encoded by the factory's codec (or its
            L{iocpsvc.interfaces.IEncoder} adapter) as C{writeObject} does.
        @param timeout: seconds to wait for the reply, timed by the
            factory's reactor from now until the reply is dispatched;
            C{None} waits as long as the connection lasts.

        @return: a Deferred that fires with the reply, or fails with:
            C{twisted.internet.defer.TimeoutError} (C{timeout} passed; the
            connection is being closed); C{ConnectionDone} or
            C{ConnectionLost} (the connection ended first);
            C{ConnectionClosed} (it was already closing);
            L{iocpsvc.errors.EncodeError} (C{obj} cannot be encoded:
            nothing was sent and the connection stays open);
            C{CancelledError} (the caller cancelled it).

        @raise ValueError: C{timeout} is negative.
        """
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0, not {timeout!r}")
        if self.closeReason is not None or self.transport is None or not self.connected:
            return fail(ConnectionClosed(f"the connection is closed ({self.closeReason or 'not connected'})"))
        try:
            encoded = self._encode(obj)
            if encoded.__class__ is bytes and encoded == self._keepAliveFrame():
                raise EncodeError(
                    f"{obj!r} encodes to the codec's keep-alive frame, which the peer never "
                    f"answers; send keep-alives with sendKeepAlive() or keepAliveInterval"
                )
        except Exception:
            # Nothing went out: the connection stays open.
            return fail()
        waiter = _Waiter()
        # Queued before the write: whatever the write sets off (a
        # synchronous reply or loss on an in-memory transport) finds it.
        self._waiting.append(waiter)
        self.writeEncoded(encoded)
        deferred = waiter.deferred
        if timeout is not None and not deferred.called:
            waiter.timer = self._reactor().callLater(timeout, self._timedOut, waiter, timeout)
        return deferred

    def bind(
        self,
        host: Any,
        contextId: int,
        decoder: Any,
        encode: Callable[[object], Any],
        newBatch: Callable[[], Any] | None = None,
    ) -> None:
        super().bind(host, contextId, decoder, encode, newBatch)
        # The codec's keep-alive frame, if it has one: an attribute of the
        # encoder whose encode this is.
        self._keepAlive = getattr(getattr(encode, "__self__", None), "keepAliveFrame", None)

    def _keepAliveFrame(self) -> bytes | None:
        return self._keepAlive

    def sendKeepAlive(self) -> bool:
        """
        Send the codec's keep-alive frame now, if nothing else is on its way:
        not while replies to a read are being collected, and not while
        written bytes still wait to be sent (they tell the peer the
        connection is alive, and a keep-alive must not share a write with
        data).

        @return: whether it was sent (C{False} also for a codec without
            one, or a connection that is closing).
        """
        frame = self._keepAliveFrame()
        if (
            frame is None
            or self.closeReason is not None
            or self.transport is None
            or self._batch is not None
            or self.pendingWriteBytes
        ):
            return False
        self.writeBytes(frame)
        return True

    def makeConnection(self, transport: Any) -> None:
        # Here rather than in connectionMade, which subclasses override.
        super().makeConnection(transport)
        interval = self.keepAliveInterval
        if interval and self.connected and self._keepAliveFrame() is not None:
            from twisted.internet.task import LoopingCall

            self._keepAliveTimer = LoopingCall(self._keepAliveTick)
            self._keepAliveTimer.clock = self._reactor()
            self._keepAliveTimer.start(interval, now=False)

    def _keepAliveTick(self) -> None:
        # Idle since the last tick (nothing sent): send a keep-alive.
        if self.bytesSent == self._sentAtLastTick:
            self.sendKeepAlive()
        self._sentAtLastTick = self.bytesSent

    def unsolicitedObjectReceived(self, obj: object) -> None:
        """
        An object arrived while no request was waiting for a reply.  By
        default that breaks the protocol: it is logged and the connection
        is closed (reason C{protocol-error}).  Override it for protocols in
        which the peer may also speak first between replies (only when no
        request is waiting: a pushed object is otherwise taken for a
        reply).
        """
        factory = self.factory
        format = "closing {peer}: protocol-error: {kind} received with no request waiting"
        fields = {"peer": describePeer(self.peer), "kind": type(obj).__name__, "contextId": self.contextId}
        if factory is not None:
            factory.rateLimitedLog.warn(format, **fields)
        else:
            _log.warn(format, **fields)
        self.close(errors.PROTOCOL_ERROR)

    # -- the receive path and the end of the connection -----------------------

    def objectReceived(self, obj: object) -> None:
        """Fire the oldest waiting request with C{obj}, its reply."""
        waiting = self._waiting
        if not waiting:
            self.unsolicitedObjectReceived(obj)
            return
        waiter = waiting.popleft()
        waiter.stopTimer()
        deferred = waiter.deferred
        if not deferred.called:  # else cancelled: the reply is dropped
            deferred.callback(obj)

    def _timedOut(self, waiter: _Waiter, timeout: float) -> None:
        waiter.timer = None
        if waiter.deferred.called:
            return
        factory = self.factory
        format = "closing {peer}: request timed out after {timeout}s"
        fields = {"peer": describePeer(self.peer), "timeout": timeout, "contextId": self.contextId}
        if factory is not None:
            factory.rateLimitedLog.warn(format, **fields)
        else:
            _log.warn(format, **fields)
        # Closed first, so that code run by the errback (a retry, say) finds
        # the connection closing rather than writing to it.
        self.close(errors.LOCAL)
        waiter.deferred.errback(TimeoutError(f"no reply within {timeout} seconds"))

    def connectionEnding(self, reason: Failure) -> None:
        """
        Replies the decoder still found in the last bytes have been
        delivered: whoever still waits hears of the loss now, before the
        application's C{connectionLost} runs (whether or not it calls
        C{super()}).  Subclasses that override this call C{super()}.
        """
        timer = self._keepAliveTimer
        if timer is not None and timer.running:
            timer.stop()
        self._keepAliveTimer = None
        waiting = self._waiting
        while waiting:
            waiter = waiting.popleft()
            waiter.stopTimer()
            if not waiter.deferred.called:
                waiter.deferred.errback(reason)

    def _reactor(self) -> Any:
        factory = self.factory
        if factory is not None:
            return factory.clock
        from twisted.internet import reactor  # an unbound context: the global one

        return reactor
