"""
The context factory (DIOCP's TIocpClientContextFactory): creates a context
for each accepted connection, holds the registrations (context class,
decoder, encoder), the registry of online contexts and the counters.

Long: it is DIOCP's one context factory, and its public API is one class's:
the registrations, the online set and its ids, broadcast and directed
messages (with the cluster bus), the accept gate (L{IAcceptGate}), the
context host (L{IContextHost}) and the periodic sweep.  Each part is short
and uses the same state (the online set, the limits, the counters); the
concerns that had their own state have moved out: the counters
(L{iocpsvc.counters}), the PROXY-header gate (L{iocpsvc.proxy}), the
transports' tuning (L{iocpsvc.transports}).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from iocpsvc import accel, errors
from iocpsvc.accept import Refuse
from iocpsvc.addresses import addressAllowed, describePeer
from iocpsvc.cluster import MAX_CONTEXT_ID, NODE_SHIFT, firstContextId, lastContextId, nodeOfContext
from iocpsvc.codecs import Codec, decoderFactoryOf, encodedBytes, parseCodecSpec, sharedIfStateless
from iocpsvc.context import ConnectionContext
from iocpsvc.counters import Counters
from iocpsvc.errors import CodecSpecError
from iocpsvc.interfaces import (
    IAcceptGate,
    IBatchEncoder,
    IClusterBus,
    IClusterReceiver,
    IContextHost,
    IEncoder,
)
from iocpsvc.limits import ServerLimits
from iocpsvc.logs import RateLimitedLog
from iocpsvc.machine import reactorOrGlobal
from iocpsvc.transports import enableKeepAlive, isProxyWrapper, setWriteHighWater

if TYPE_CHECKING:
    from iocpsvc.proxy import ProxyHeaderGate

_log = Logger(namespace="iocpsvc.factory")

_SEQUENCE_SIZE = 1 << NODE_SHIFT
"""How many sequence numbers a node has (0 is never used)."""

# Where a node's sequence of context ids starts.  The OS's randomness, not
# a seeded generator, so that processes started or forked alike (workers of
# one parent) do not start alike.  Tests replace it to choose the start.
_sequenceStarts: random.Random = random.SystemRandom()


@implementer(IClusterReceiver, IAcceptGate, IContextHost)
class ConnectionContextFactory(ServerFactory):
    """
    Creates a L{ConnectionContext} per connection and tracks them.

    Register what the contexts use, DIOCP-style::

        factory = ConnectionContextFactory()
        factory.registerContextClass(EchoContext)
        factory.registerCodec("length")            # decoder and encoder
        # or separately:
        factory.registerDecoder(LengthFieldDecoder)
        factory.registerEncoder(LengthFieldPrepender())

    @ivar reactor: the reactor (its C{seconds()} stamps the contexts).
    @ivar contextClass: the L{ConnectionContext} subclass to instantiate.
    @ivar codec: the L{Codec} registered by spec, if any.
    @ivar maxFrameLength: the registered decoder's largest frame, if it
        says (what the default C{maxPendingWrite} is derived from).
    @ivar online: context id -> online context.
    @ivar limits: the L{ServerLimits} in force.
    @ivar counters: the event counters (L{iocpsvc.counters.Counters}:
        accepted, refused, closed by reason, decode and handler errors,
        ...), added to by this factory and its contexts; every figure the
        monitor shows is in L{iocpsvc.counters.FIGURES}.
    @ivar cluster: the L{IClusterBus} joining this node to others, or
        C{None} (standalone: L{broadcast} and L{sendTo} stay on this node).
    @ivar nodeId: this node's id in its cluster (0 standalone); the high
        part of every context id it gives out.  A standalone factory's ids
        are 1, 2, 3, ...; a node's sequence starts at a random point (see
        L{joinCluster}).
    """

    noisy = False

    directWrites = True
    """
    Let contexts on Twisted's own POSIX TCP transports send a reply straight
    to the socket when nothing is queued (falling back to the transport's
    buffer for what the socket does not take).  Off: every write goes through
    C{transport.write}.
    """

    nativeTransports = True
    """
    Under Twisted's asyncio reactor (C{twistd -r uvloop}, C{-r asyncio}),
    serve this factory's plain stream listeners (C{tcp:}, C{tcp6:},
    C{unix:}, C{systemd:}, a worker's sockets) with the event loop's own
    transports (L{iocpsvc.native}).  Off: Twisted's transports, on any
    reactor.
    """

    def __init__(
        self,
        contextClass: type[ConnectionContext] = ConnectionContext,
        codec: str | Codec | None = None,
        reactor: Any = None,
        limits: ServerLimits | None = None,
    ) -> None:
        """
        @param contextClass: the context class to register.
        @param codec: a codec spec or L{Codec}; by default the context
            class's own C{defaultCodec}, else C{"length"}.
        @param reactor: the reactor; the global one by default.
        @param limits: the limits to enforce; L{ServerLimits}'s defaults
            when not given.
        """
        self.reactor = reactor = reactorOrGlobal(reactor)
        self.seconds = reactor.seconds
        self.limits = limits if limits is not None else ServerLimits()
        self.contextClass: type[ConnectionContext] = ConnectionContext
        self.codec: Codec | None = None
        self.maxFrameLength: int | None = None
        self._newDecoder: Callable[[], Any] = _missingDecoder
        self._encoder: Any = None
        self._newBatch: Callable[[], Any] | None = None
        self.online: dict[int, ConnectionContext] = {}
        self.cluster: Any = None
        self.nodeId = 0
        self._ids = itertools.count(1)
        self._lastContextId = lastContextId(0)
        # The event counters, added to by this factory and its contexts.
        self.counters = Counters()
        # Connections behind haproxy: whose PROXY header is not in yet; made
        # with the first such connection (see proxyGate).
        self._proxyGate: ProxyHeaderGate | None = None
        # The address admit() just let in: the port builds its protocol next,
        # and buildProtocol does not judge it again (see admit).
        self._admitted: IAddress | None = None
        self._sweeper: LoopingCall | None = None
        # Totals of closed connections; online ones are summed on demand,
        # so the hot path updates only the context's own counters.
        self._closedBytesReceived = 0
        self._closedBytesSent = 0
        self._closedFramesReceived = 0
        self._closedFramesSent = 0
        self.startedAt = reactor.seconds()
        self.rateLimitedLog = RateLimitedLog(_log, reactor.seconds)
        self._drained: list[Deferred[None]] = []
        self.registerContextClass(contextClass)
        if codec is None:
            codec = getattr(contextClass, "defaultCodec", None) or "length"
        self.registerCodec(codec)

    # -- registrations (DIOCP: RegisterContextClass, RegisterDecoder, ...) ---

    def registerContextClass(self, contextClass: type[ConnectionContext]) -> None:
        """Make new connections instances of C{contextClass}."""
        if not (isinstance(contextClass, type) and issubclass(contextClass, ConnectionContext)):
            raise TypeError(f"{contextClass!r} is not a ConnectionContext subclass")
        self.contextClass = contextClass
        self.protocol = contextClass

    def registerCodec(self, codec: str | Codec) -> None:
        """
        Register a decoder and an encoder at once, from a spec string
        (C{"line:max=8192+json"}) or a parsed L{Codec}.
        """
        codec = parseCodecSpec(codec)
        self.codec = codec
        self.maxFrameLength = codec.maxFrameLength
        self._newDecoder = codec.newDecoder
        self._useEncoder(codec.encoder)

    def registerDecoder(self, decoder: Any) -> None:
        """
        Register how each connection gets its decoder: an L{IDecoder} class
        or a callable returning a fresh L{IDecoder}, or an object providing
        (or adaptable to) L{IDecoder}, which is copied for each connection.
        """
        self._newDecoder = sharedIfStateless(decoderFactoryOf(decoder))
        self.maxFrameLength = getattr(self._newDecoder(), "maxFrameLength", None)
        self.codec = None

    def registerEncoder(self, encoder: Any) -> None:
        """
        Register the encoder all connections share: any object providing,
        or adaptable to, L{IEncoder}.
        """
        try:
            adapted = IEncoder(encoder)
        except TypeError:
            raise TypeError(f"{encoder!r} does not provide and cannot be adapted to IEncoder") from None
        self._useEncoder(adapted)
        self.codec = None

    def _useEncoder(self, encoder: Any) -> None:
        self._encoder = encoder
        # One bound method shared by every context, not one per connection.
        self._encode = encoder.encode
        # A batch encoder frames a read's writes together (iocpsvc.accel).
        self._newBatch = encoder.newBatch if IBatchEncoder.providedBy(encoder) else None

    def describeCodec(self) -> str:
        """The codec in words, for logs: its spec, or the registered classes."""
        decoder = self._newDecoder()
        hotPath = accel.describeHotPath(decoder, self._encoder)
        if self.codec is not None:
            note = f"{self.codec.note}; " if self.codec.note else ""
            return f"{self.codec.spec} ({note}max frame {self.codec.maxFrameLength} bytes; {hotPath})"
        return (
            f"decoder {type(decoder).__name__} (max frame "
            f"{getattr(decoder, 'maxFrameLength', '?')} bytes), "
            f"encoder {type(self._encoder).__name__}; {hotPath}"
        )

    @property
    def maxPendingWrite(self) -> int:
        """
        Bytes written and not yet sent past which a connection is closed as
        C{slow-client}: C{limits.maxPendingWrite}, or by default derived
        from the decoder's largest frame (L{ServerLimits.pendingWriteLimit}).
        """
        return self.limits.pendingWriteLimit(self.maxFrameLength)

    @property
    def encoder(self) -> Any:
        """The registered L{IEncoder}."""
        return self._encoder

    def newDecoder(self) -> Any:
        """A fresh decoder, as each new connection gets."""
        return self._newDecoder()

    # -- creating and releasing contexts --------------------------------------

    def acceptPeer(self, address: IAddress) -> bool:
        """
        Whether to accept a connection from C{address}; the accept filter
        (C{limits.allow} / C{limits.deny}).  Override it to refuse peers by
        your own rule; a refused peer is closed before any data is read.

        Asked once per connection.  Behind C{haproxy:} it is asked about
        the client the header names, once the header is in; on a port that
        does not judge at accept (the IOCP reactor's), it is first asked
        about the proxy's own address as well, and that answer is not used.
        Should it raise, the connection is closed as a C{handler-error}
        (counted in C{handlerErrors} and C{refusedTotal}).
        A header that names no client (C{LOCAL},
        C{UNKNOWN}) or one that is not an IP address (C{AF_UNIX}) leaves the
        proxy's own address to be judged; but with C{limits.allow} or
        C{limits.deny} in force, a header naming a non-IP client is refused
        before this is asked (see L{iocpsvc.proxy.ProxyHeaderGate.headerReceived}).
        """
        limits = self.limits
        if not limits.allow and not limits.deny:
            return True
        return addressAllowed(address, limits.allow, limits.deny)

    def buildProtocol(self, addr: IAddress) -> Protocol:  # type: ignore[override]
        if addr is not None and addr is self._admitted:
            # Judged a moment ago by admit(), for the port that now builds
            # it: asking acceptPeer again would call application code twice.
            self._admitted = None
            try:
                return self._newContext()
            except Exception:
                self.failedAtAccept(addr, Failure())
                return Refuse()
        maxConnections = self.limits.maxConnections
        # Connections waiting for their PROXY header hold a descriptor too.
        if maxConnections is not None and len(self.online) + self.awaitingProxyHeader >= maxConnections:
            return self._refuse(addr, f"max-connections ({maxConnections}) reached")
        try:
            if not self.acceptPeer(addr):
                # Refused once the transport is known: behind haproxy: this is
                # the proxy's address, and the header's client decides instead.
                return self.proxyGate.filtered(addr)
            return self._newContext()
        except Exception:
            # The application's acceptPeer, context class or decoder factory
            # raised: Twisted would log a traceback per connection.
            self.failedAtAccept(addr, Failure())
            return Refuse()

    # -- IAcceptGate: judged by the listening port (iocpsvc.accept) ------------

    def admit(self, address: IAddress, proxied: bool) -> bool:
        """
        Whether to serve a connection from C{address}: under the connection
        limit and, unless it comes through C{haproxy:} (the client is judged
        once its PROXY header is in), let in by L{acceptPeer}.  A refusal is
        counted and logged here; the port closes the socket in the same
        reactor turn.  An admitted C{address} is remembered until the port
        asks L{buildProtocol} for it, which then judges it no more.
        """
        self._admitted = None
        maxConnections = self.limits.maxConnections
        # Connections waiting for their PROXY header hold a descriptor too.
        if maxConnections is not None and len(self.online) + self.awaitingProxyHeader >= maxConnections:
            self.countRefusal(address, f"max-connections ({maxConnections}) reached")
            return False
        if not proxied:
            try:
                allowed = self.acceptPeer(address)
            except Exception:
                self.failedAtAccept(address, Failure())
                return False
            if not allowed:
                self.countRefusal(address, "address filtered")
                return False
        self._admitted = address
        return True

    def acceptFailed(self, error: str, closed: int) -> None:
        """
        The listening socket could not accept (C{error}); C{closed}
        connections that waited were closed for want of a descriptor.
        """
        self.counters.acceptErrors += 1
        if closed:
            self.counters.refusedTotal += closed
            self.counters.closedTotal[errors.NO_DESCRIPTORS] += closed
        self.rateLimitedLog.warn(
            "accept failed: {error}; closed {closed} waiting connections ({closeReason}); "
            "raise the open-files limit or lower --max-connections",
            error=error,
            closed=closed,
            closeReason=errors.NO_DESCRIPTORS,
        )

    def failedAtAccept(self, address: IAddress, failure: Failure) -> None:
        """
        Judging C{address} or making its context failed in application
        code (C{acceptPeer}, the context class, the decoder factory): count
        it as a handler error and as refused (it never got a context), and
        log it (the traceback once, then one rate-limited line); the caller
        closes the connection at once.
        """
        self.counters.handlerErrors += 1
        self.counters.refusedTotal += 1
        self.counters.closedTotal[errors.HANDLER_ERROR] += 1
        self.rateLimitedLog.failure(
            "closing {peer}: handler-error making its context ({context})",
            failure,
            peer=describePeer(address),
            context=self.contextClass.__name__,
            closeReason=errors.HANDLER_ERROR,
        )

    def _newContext(self) -> ConnectionContext:
        context = self.contextClass()
        context.bind(self, self._nextContextId(), self._newDecoder(), self._encode, self._newBatch)
        return context

    def _refuse(self, address: IAddress, why: str) -> Protocol:
        self.countRefusal(address, why)
        # Not None: wrapping factories (haproxy:, ssl:) would wrap None.  This
        # protocol closes the connection as soon as it is made, reading nothing.
        return Refuse()

    def countRefusal(self, address: IAddress, why: str) -> None:
        """Count and log (rate-limited) a connection refused for C{why}."""
        self.counters.refusedTotal += 1
        self.counters.closedTotal[errors.REFUSED] += 1
        self.rateLimitedLog.warn(
            "refused {peer}: {why}", peer=describePeer(address), why=why, closeReason=errors.REFUSED
        )

    # -- behind haproxy: the PROXY header (iocpsvc.proxy) ---------------------

    @property
    def proxyGate(self) -> ProxyHeaderGate:
        """
        The connections behind C{haproxy:} whose PROXY header is not in yet
        (L{iocpsvc.proxy.ProxyHeaderGate}), made on first use: a server
        that is not behind C{haproxy:} never imports the PROXY protocol.
        """
        gate = self._proxyGate
        if gate is None:
            from iocpsvc.proxy import ProxyHeaderGate

            gate = self._proxyGate = ProxyHeaderGate(self, self._newContext)
        return gate

    @property
    def awaitingProxyHeader(self) -> int:
        """Connections behind C{haproxy:} whose PROXY header is not in yet."""
        gate = self._proxyGate
        return 0 if gate is None else len(gate)

    # -- IContextHost: what the contexts ask ------------------------------------

    @property
    def clock(self) -> Any:
        """The reactor, for the contexts' own timers."""
        return self.reactor

    def holdConnection(self, context: ConnectionContext, transport: Any) -> bool:
        """Behind C{haproxy:}, hold C{context} back until its PROXY header is in."""
        gate = self._proxyGate
        if gate is None:
            if not isProxyWrapper(transport):
                return False  # not behind haproxy: (so far): no gate to make
            gate = self.proxyGate
        return gate.hold(context, transport)

    # -- connected contexts ----------------------------------------------------

    def contextConnected(self, context: ConnectionContext) -> None:
        """Called by a context when its connection is made."""
        self.counters.acceptedTotal += 1
        online = self.online
        online[context.contextId] = context
        if len(online) > self.counters.peakOnline:
            self.counters.peakOnline = len(online)
        transport = context.transport
        if transport is not None:
            # The transport pauses its producer (the context) past this many
            # unsent bytes: that is the high water mark.
            setWriteHighWater(transport, self.limits.writeHighWater)
            limits = self.limits
            if limits.keepAlive:
                enableKeepAlive(
                    transport, limits.keepAliveIdle, limits.keepAliveInterval, limits.keepAliveCount
                )

    def contextDisconnected(self, context: ConnectionContext) -> None:
        """Called by a context once, after its connection is gone."""
        if self.online.pop(context.contextId, None) is None:
            return
        reason = context.closeReason or errors.PEER
        self.counters.closedTotal[reason] = self.counters.closedTotal.get(reason, 0) + 1
        self._closedBytesReceived += context.bytesReceived
        self._closedBytesSent += context.bytesSent
        self._closedFramesReceived += context.framesReceived
        self._closedFramesSent += context.framesSent
        if not self.online and self._drained:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    # -- idle kick-out and stuck closes ----------------------------------------

    def startFactory(self) -> None:
        """Start the periodic sweep (idle kick-out, stuck closes)."""
        if self._sweeper is None:
            self._sweeper = LoopingCall(self.sweep)
            self._sweeper.clock = self.reactor
            self._sweeper.start(self.limits.sweepInterval(), now=False)

    def stopFactory(self) -> None:
        """Stop the periodic sweep."""
        if self._sweeper is not None:
            if self._sweeper.running:
                self._sweeper.stop()
            self._sweeper = None

    def sweep(self) -> None:
        """
        One pass over the online contexts: close those idle for longer than
        C{limits.idleTimeout} (reason C{idle}), and abort those that have
        been closing for longer than C{limits.closeTimeout}.  Behind
        C{haproxy:}, also close the connections whose PROXY header has not
        come within C{limits.proxyHeaderTimeout} (reason C{idle}).  One periodic
        sweep per factory, not a timer per connection or per read.
        """
        limits = self.limits
        if limits.idleTimeout:
            self.kickOut(limits.idleTimeout)
        if self._proxyGate is not None:
            self._proxyGate.expire()
        deadline = self.reactor.seconds() - limits.closeTimeout
        stuck = [c for c in self.online.values() if c.closingAt is not None and c.closingAt <= deadline]
        self._abortStuck(stuck, limits.closeTimeout)

    def _abortStuck(self, contexts: list[ConnectionContext], seconds: float) -> None:
        if not contexts:
            return
        self.counters.closeTimeouts += len(contexts)
        self.rateLimitedLog.warn(
            "aborting {count} connections still closing after {seconds}s (unsent data dropped)",
            count=len(contexts),
            seconds=seconds,
        )
        for context in contexts:
            context.abort()

    def kickOut(self, seconds: float, reason: str = errors.IDLE) -> int:
        """
        Close every connection that has received nothing for C{seconds} or
        more (DIOCP's KickOut).

        @return: how many were closed.
        """
        idleSince = self.reactor.seconds() - seconds
        closed = 0
        for context in list(self.online.values()):
            if context.lastActivity <= idleSince and context.closeReason is None:
                context.close(reason)
                closed += 1
        if closed:
            self.rateLimitedLog.info(
                "kicked out {count} connections idle for {seconds}s or more",
                count=closed,
                seconds=seconds,
                closeReason=reason,
            )
        return closed

    # -- the online registry -------------------------------------------------

    @property
    def onlineCount(self) -> int:
        """How many contexts are online."""
        return len(self.online)

    def contexts(self) -> Iterator[ConnectionContext]:
        """Iterate over the online contexts (a snapshot: closing is safe)."""
        return iter(list(self.online.values()))

    def findContext(self, contextId: int) -> ConnectionContext | None:
        """The online context with this id, or C{None}."""
        return self.online.get(contextId)

    def broadcast(self, obj: object, exclude: ConnectionContext | None = None) -> int:
        """
        Send C{obj} to every online context (but C{exclude}), encoding it
        once; in a cluster, also to every context of the other nodes.

        @return: the number of contexts of this node it was written to.
        """
        encoded = encodedBytes(self._encoder.encode(obj))
        excludeId = exclude.contextId if exclude is not None else 0
        if self.cluster is not None:
            self.cluster.publishBroadcast(encoded, excludeId)
        return self.deliverBroadcast(encoded, excludeId)

    def _nextContextId(self) -> int:
        """
        The next context id of this node.  Past the node's last id the
        sequence goes on at its first (never spilling into the next node's
        ids, never using sequence number 0), skipping ids still online.
        """
        contextId = next(self._ids)
        if contextId > self._lastContextId:
            self._ids = itertools.count(firstContextId(self.nodeId))
            contextId = next(self._ids)
        while contextId in self.online:
            contextId = next(self._ids)
        return contextId

    def sendTo(self, contextId: int, obj: object) -> bool:
        """
        Send C{obj} to the context C{contextId}, on this node or, in a
        cluster, on the node that holds it (its id says which).

        @return: whether it was written here or handed to the cluster (a
            remote node's delivery is not confirmed); C{False} when the id
            is neither online here nor another node's.
        """
        if not 0 < contextId <= MAX_CONTEXT_ID:
            return False
        node = nodeOfContext(contextId)
        if node == self.nodeId:
            context = self.online.get(contextId)
            if context is None or context.closeReason is not None:
                return False
            context.writeObject(obj)
            return True
        if self.cluster is None:
            return False
        encoded = encodedBytes(self._encoder.encode(obj))
        self.cluster.publishTo(contextId, encoded)
        return True

    def joinCluster(self, bus: Any) -> None:
        """
        Join the cluster of C{bus} (an L{IClusterBus}): take its node id
        (context ids given out from now on carry it), and send broadcasts
        and messages for other nodes through it.  Call before listening.

        The node's sequence starts at a random point of its 2**32 - 1 ids.
        A node restarted with the same id (C{--node-id}, or a worker slot's
        replacement) forgets which ids it gave out, while other nodes may
        still hold them (a chat user's C{/msg ID}); starting again at the
        first id would hand them to other clients.  From a random start, a
        restart hands out an id of its previous run only with a chance of
        about (ids given out by both runs) / 2**32.
        """
        bus = IClusterBus(bus)
        self.cluster = bus
        self.nodeId = bus.nodeId
        start = _sequenceStarts.randrange(1, _SEQUENCE_SIZE)
        self._ids = itertools.count(firstContextId(bus.nodeId) - 1 + start)
        self._lastContextId = lastContextId(bus.nodeId)

    # -- IClusterReceiver: what the other nodes send -------------------------

    def deliverBroadcast(self, payload: bytes, excludeContextId: int) -> int:
        """Write encoded C{payload} to every online context but one."""
        count = 0
        for context in list(self.online.values()):
            if context.contextId != excludeContextId and context.closeReason is None:
                context.writeEncoded(payload)
                count += 1
        return count

    def deliverTo(self, contextId: int, payload: bytes) -> bool:
        """Write encoded C{payload} to the online context C{contextId}."""
        context = self.online.get(contextId)
        if context is None or context.closeReason is not None:
            return False
        context.writeEncoded(payload)
        return True

    def closeAll(self, reason: str = errors.SHUTDOWN, timeout: float | None = None) -> Deferred[None]:
        """
        Close every online context gracefully (pending writes are sent
        first); abort those still open after C{timeout} seconds.

        @return: a Deferred that fires when none is online.
        """
        # Those still waiting for a PROXY header have nothing to send.
        if self._proxyGate is not None:
            self._proxyGate.closeAll(reason)
        for context in list(self.online.values()):
            context.close(reason)
        if not self.online:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._drained.append(done)
        if timeout is not None:

            def abortRest() -> None:
                self._abortStuck(list(self.online.values()), timeout)

            call = self.reactor.callLater(timeout, abortRest)

            def cancelTimer(result: None) -> None:
                if call.active():
                    call.cancel()
                return result

            done.addBoth(cancelTimer)
        return done

    # -- counters ------------------------------------------------------------

    def totals(self) -> dict[str, int]:
        """
        Bytes and frames in and out over every connection ever (closed ones
        plus the online ones, summed in one pass), and the bytes written but
        not yet sent over the online ones.
        """
        receivedBytes = self._closedBytesReceived
        sentBytes = self._closedBytesSent
        receivedFrames = self._closedFramesReceived
        sentFrames = self._closedFramesSent
        pending = 0
        for context in self.online.values():
            receivedBytes += context.bytesReceived
            sentBytes += context.bytesSent
            receivedFrames += context.framesReceived
            sentFrames += context.framesSent
            pending += context.pendingWriteBytes
        return {
            "receivedBytes": receivedBytes,
            "sentBytes": sentBytes,
            "receivedFrames": receivedFrames,
            "sentFrames": sentFrames,
            "pendingWriteBytes": pending,
        }

    @property
    def bytesReceivedTotal(self) -> int:
        """Bytes received, over all connections ever."""
        return self.totals()["receivedBytes"]

    @property
    def bytesSentTotal(self) -> int:
        """Bytes handed to transports, over all connections ever."""
        return self.totals()["sentBytes"]

    @property
    def framesReceivedTotal(self) -> int:
        """Objects decoded, over all connections ever."""
        return self.totals()["receivedFrames"]

    @property
    def framesSentTotal(self) -> int:
        """Objects written, over all connections ever."""
        return self.totals()["sentFrames"]


def _missingDecoder() -> Any:
    raise errors.NoDecoderRegistered("no decoder registered: call registerCodec or registerDecoder")


# -- the context and its codec agree (twistd iocpsvc, at start) -------------
# Here, not in iocpsvc.codecs: codecs know nothing of contexts; the context
# factory, which holds both registrations, matches them.


def _carries(objectType: type) -> str:
    """What a codec's objects are, in words."""
    return {bytes: "bytes", str: "text (str)", object: "any JSON value"}.get(objectType, objectType.__name__)


def agreeWithContext(codec: Codec, contextClass: type, contextName: str) -> Codec:
    """
    The codec to serve C{contextClass} with, given the one asked for.

    A context that declares the objects it writes and reads (its
    C{objectType}, e.g. C{str} for the chat context) gets a codec that
    carries them: a framer alone, which carries bytes, is completed with
    C{+text} for a C{str} context (the returned codec's C{note} says so);
    a codec that already fits is returned as it is.

    @param contextName: how the context is named in messages (C{chat}).

    @raise CodecSpecError: the codec cannot carry the context's objects,
        saying what would.
    """
    wanted = getattr(contextClass, "objectType", None)
    carried = codec.objectType
    if wanted is None or carried is None or issubclass(carried, wanted):
        return codec
    if carried is object and wanted not in (str, bytes):
        # Any JSON value: a context of dicts (say) checks what it is sent.
        # A text or bytes context is not one to hand objects and lists.
        return codec
    if wanted is str and carried is bytes and len(codec.names) == 1:
        # The framer's own limit, whether it came from the spec, from
        # --max-frame-length or from a context's own Codec object.
        completed = parseCodecSpec(f"{codec.spec}+text", codec.maxFrameLength)
        completed.note = f"+text added: the {contextName} context works in text"
        return completed
    framer = codec.names[0]
    suggestion = f"; use e.g. {framer}+text" if wanted is str else ""
    raise CodecSpecError(
        f"the {contextName} context writes and reads {_carries(wanted)}, and {codec.spec} "
        f"carries {_carries(carried)}{suggestion}"
    )
