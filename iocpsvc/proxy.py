"""
The PROXY protocol (v1 and v2) behind C{haproxy:} endpoints: the glue
between Twisted's C{haproxy:} endpoint and the context factory.

Twisted's C{haproxy:} endpoint (C{twisted.protocols.haproxy.proxyEndpoint},
its one public name) wraps each connection in its own protocol wrapper,
which reads the header with lax parsers and, left alone, connects the
wrapped protocol as soon as the TCP connection arrives (before the header),
closes a connection whose header is invalid without a word, drops a
connection whose first read is shorter than it needs to tell v1 from v2,
and refuses the bare v1 C{PROXY UNKNOWN\\r\\n} that the specification
allows.  Its wrapper, parsers and their results all live in private
modules, which any Twisted release may change.

So this module takes each such connection over before its first byte is
read (L{ProxyHeaderWrapper.hold}): from then on it is a
L{ProxyHeaderWrapper}, a public C{ProtocolWrapper} of iocpsvc's own that
reads the header with L{iocpsvc.proxyheader} (by the letter of the
specification), replaces a client that is not an IP address with the
connection's own addresses (L{ProxyHeaderWrapper.nonIPClient}), and holds
the context back until the header is in, so that everything the server
does with a connection -- C{connectionMade}, C{peer}, the accept filter,
the idle timeout, the monitor -- sees the client from the header.
L{ProxyHeaderGate} keeps the connections whose header is not in yet,
judges the client a header names, connects or refuses, counts and times
them out; a context factory has one and asks it (its host: L{GateHost}).
Nothing here imports a private Twisted module; Twisted's wrapper class is
recognised through the public C{proxyEndpoint}
(L{iocpsvc.transports.proxyWrapperClass}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure

from iocpsvc import errors
from iocpsvc.addresses import describePeer
from iocpsvc.errors import ProxyHeaderError
from iocpsvc.proxyheader import SHOWN_BYTES, ProxyHeader, ProxyHeaderReader, addressProblem
from iocpsvc.transports import abortOrClose, isProxyWrapper, proxyWrapperClass

_log = Logger(namespace="iocpsvc.proxy")


class ProxyHeaderWrapper(ProtocolWrapper):
    """
    A PROXY protocol wrapper of iocpsvc's own, holding its context back
    until the header has been read and judged; what each connection of a
    C{haproxy:} endpoint becomes (see L{hold}).

    Until then the context is not connected (no C{makeConnection}, no
    C{connectionMade}, not online); the factory counts the connection
    against C{maxConnections} and times it out.  Once the header is in,
    the factory applies the accept filter to the client it names and
    connects the context, whose C{peer} is that client from the start.
    C{getPeer} and C{getHost} are the header's client and destination
    (the connection's own addresses when it names none).

    @ivar awaiting: the context held back, or C{None} once it has been
        released to connect (L{release}).  A context that is never released
        (its header invalid or late, its client refused) hears nothing of
        the connection: no C{connectionMade}, no data, no C{connectionLost}.
    @ivar failed: the header was found invalid, late, or its client
        refused; the connection is being closed and reads are dropped.
    @ivar proxyHeader: the header once read (a L{ProxyHeader}, its client
        dropped if it was not an IP address), else C{None}.
    @ivar nonIPClient: what the header named as its client when that was
        not an IP address (C{"a UNIX-socket client"}, from a v2 C{AF_UNIX}
        header), else C{None}.  Such a client is dropped from the header,
        as the specification lets a receiver do with a family it does not
        support: C{getPeer} and C{getHost} are the connection's own
        addresses (the balancer's), as for C{LOCAL}; the factory decides
        whether that will do (L{ProxyHeaderGate.headerReceived}).
    @ivar gate: the L{ProxyHeaderGate} it reports to while it holds a
        context.
    """

    # Class defaults, no __init__ of its own: a wrapper Twisted built is
    # turned into one of these after its __init__ ran (see hold()).
    awaiting: Protocol | None = None
    gate: ProxyHeaderGate | None = None
    failed = False
    proxyHeader: ProxyHeader | None = None
    nonIPClient: str | None = None
    _reader: ProxyHeaderReader | None = None
    _head = b""
    # Whether a wrapper could not be taken over (warned about once).
    _cannotTakeOver = False

    @classmethod
    def hold(cls, transport: Any, context: Protocol, gate: ProxyHeaderGate) -> ProxyHeaderWrapper | None:
        """
        If C{transport} is Twisted's C{haproxy:} wrapper (or one of these)
        that has read nothing yet, take it over to hold C{context} until the
        header is in, and tell C{gate} what the header turns out to be.

        The C{haproxy:} endpoint builds Twisted's own wrapper; the context
        sees it once it is asked to connect, from the wrapper's
        C{makeConnection}, before any byte was read.  Twisted's wrapper is
        a C{ProtocolWrapper} like this class; changing the instance's class
        to this one (which has no state of its own but class defaults, and
        needs nothing of Twisted's class but what C{ProtocolWrapper}
        documents: C{factory}, C{wrappedProtocol}, C{transport}) is what
        lets C{--port haproxy:...} work unchanged, with no second endpoint
        parser that would compete with Twisted's for the C{haproxy} prefix.

        @return: the wrapper now holding C{context}, or C{None} when
            C{transport} is not a wrapper waiting for a header (then the
            context connects at once, as usual), or when Twisted's wrapper
            cannot change class (a warning is logged, once).
        """
        if type(transport) is not cls:
            if type(transport) is not proxyWrapperClass():
                return None  # somebody else's subclass, or no wrapper: leave it to its own ways
            try:
                transport.__class__ = cls
            except TypeError as e:
                # A Twisted whose wrapper cannot become one: left to itself.
                if not cls._cannotTakeOver:
                    cls._cannotTakeOver = True
                    _log.warn(
                        "cannot take over Twisted's haproxy: wrapper ({error}); PROXY headers are "
                        "left to Twisted's own wrapper, without iocpsvc's checks, counters and "
                        "held contexts",
                        error=str(e),
                    )
                return None
        wrapper: ProxyHeaderWrapper = transport
        if wrapper._reader is not None or wrapper.proxyHeader is not None or wrapper.failed:
            return None
        wrapper._reader = ProxyHeaderReader()
        wrapper.awaiting = context
        wrapper.gate = gate
        return wrapper

    @property
    def firstBytes(self) -> bytes:
        """The first bytes received (up to a few dozen), for log lines."""
        return self._head

    def dataReceived(self, data: bytes) -> None:
        context = self.awaiting
        if context is None:
            if self.proxyHeader is not None:
                self.wrappedProtocol.dataReceived(data)  # the header is through: straight to the context
            return
        reader = self._reader
        if self.failed or reader is None:
            return
        if len(self._head) < SHOWN_BYTES:
            self._head = (self._head + data)[:SHOWN_BYTES]
        problem: str | None = None
        rest = b""
        try:
            read = reader.feed(data)
        except ProxyHeaderError as e:
            problem = e.reason
        else:
            if read is None:
                return  # more to come
            header, rest = read
            self._reader = None
            source = header.source
            if source is not None and not isinstance(source, (IPv4Address, IPv6Address)):
                # Never let a header invent a non-IP peer (the accept filter
                # would wave it through): fall back to the connection's own.
                kind = "a UNIX-socket" if isinstance(source, UNIXAddress) else "a non-IP"
                self.nonIPClient = f"{kind} client"
                header = ProxyHeader(header.header, None, None)
            self.proxyHeader = header
            problem = addressProblem(self.getPeer()) or addressProblem(self.getHost(), "destination")
        gate = self.gate
        if gate is None:
            return
        if problem is not None:
            gate.headerFailed(self, problem)
        else:
            # Still held: the gate releases the context only if it lets the
            # client in (a refused one must not hear connectionLost).
            gate.headerReceived(self, context, rest)

    def getPeer(self) -> IAddress:
        header = self.proxyHeader
        if header is not None and header.source is not None:
            return header.source
        return self.transport.getPeer()  # type: ignore[union-attr]

    def getHost(self) -> IAddress:
        header = self.proxyHeader
        if header is not None and header.destination is not None:
            return header.destination
        return self.transport.getHost()  # type: ignore[union-attr]

    def release(self) -> None:
        """
        Stop holding the context back, just before it connects: from now on
        reads and the connection's end go to it.
        """
        self.awaiting = None

    def close(self) -> None:
        """
        Close a connection whose context never connected (nothing was
        written to it): at once, reading nothing more.
        """
        self.failed = True
        transport = self.transport
        if transport is None:
            return
        abortOrClose(transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        context = self.awaiting
        if context is None:
            super().connectionLost(reason)
            return
        # The context never connected: it hears nothing, and owes nothing.
        self.factory.unregisterProtocol(self)
        self.wrappedProtocol = None  # type: ignore[assignment]  # as Twisted does: no cycle left
        if self.gate is not None:
            self.gate.headerLost(self)


class GateHost(TypingProtocol):
    """What a L{ProxyHeaderGate} needs from its owner (the context factory)."""

    limits: Any
    counters: Any
    rateLimitedLog: Any
    seconds: Callable[[], float]

    def acceptPeer(self, address: Any) -> bool:
        """Whether the accept filter lets C{address} in."""

    def countRefusal(self, address: Any, why: str) -> None:
        """Count and log a connection refused for C{why}."""

    def failedAtAccept(self, address: Any, failure: Failure) -> None:
        """Count and log C{acceptPeer} raising for C{address} (a handler error)."""


class ProxyHeaderGate:
    """
    The connections behind C{haproxy:} whose PROXY header is not in yet,
    each with its context held back (see L{ProxyHeaderWrapper}): counted
    against the connection limit, timed out, and, once the header is in,
    judged by the client it names, then connected or refused.

    Every outcome is counted on the host's counters: an invalid header as
    C{protocol-error} (and C{proxyHeaderErrors}), a late one as C{idle}
    (and C{proxyHeaderTimeouts}), a refused client as C{refused}, a
    connection lost before its header as C{peer}.
    """

    def __init__(self, host: GateHost, newContext: Callable[[], Protocol]) -> None:
        """
        @param newContext: makes the context for a connection whose
            balancer's address the accept filter refused (see L{filtered}).
        """
        self._host = host
        self._newContext = newContext
        # The held connections' wrappers, with when they arrived.
        self._waiting: dict[ProxyHeaderWrapper, float] = {}

    def __len__(self) -> int:
        """Connections whose PROXY header is not in yet."""
        return len(self._waiting)

    def hold(self, context: Protocol, transport: Any) -> bool:
        """
        Whether to hold C{context} back from connecting because
        C{transport} is a C{haproxy:} wrapper that has not read the PROXY
        header yet (L{headerReceived} connects it later).
        """
        if not isinstance(transport, ProtocolWrapper):
            return False  # plain TCP, ...: one isinstance per connection
        wrapper = ProxyHeaderWrapper.hold(transport, context, self)
        if wrapper is None:
            return False
        self._waiting[wrapper] = self._host.seconds()
        return True

    def filtered(self, address: Any) -> Protocol:
        """
        The protocol for a connection whose address the accept filter
        refused: closed as refused -- unless it comes through C{haproxy:},
        where that address is the balancer's and the client its header
        names is judged instead.
        """
        return _Filtered(self, address)

    def headerReceived(self, wrapper: ProxyHeaderWrapper, context: Protocol, rest: bytes) -> None:
        """
        The PROXY header of C{wrapper}'s connection is in: apply the accept
        filter to the client it names, then connect C{context} and hand it
        C{rest}, the bytes that followed the header.

        A header naming a client that is not an IP address (a v2 C{AF_UNIX}
        one: C{wrapper.nonIPClient}) leaves the balancer's address as the
        peer.  That is judged like a C{LOCAL} header's when no accept filter
        is configured; with C{limits.allow} or C{limits.deny}, the
        connection is refused: the filter names IP networks, and judging the
        balancer instead would let whatever it relays in under its name.

        An C{acceptPeer} that raises closes the connection as a handler
        error (counted and logged by the host), its context still held.
        """
        self._waiting.pop(wrapper, None)
        host = self._host
        peer = wrapper.getPeer()
        limits = host.limits
        why: str | None = None
        if wrapper.nonIPClient is not None and (limits.allow or limits.deny):
            why = f"PROXY header names {wrapper.nonIPClient}, which the accept filter cannot judge"
        else:
            try:
                allowed = host.acceptPeer(peer)
            except Exception:
                # Application code, called from the wrapper's dataReceived:
                # left to escape, Twisted would log a traceback per connection
                # and close it uncounted.
                host.failedAtAccept(peer, Failure())
                wrapper.close()
                return
            if not allowed:
                why = "address filtered (client named in the PROXY header)"
        if why is not None:
            host.countRefusal(peer, why)
            # The wrapper goes on holding the context, which never connected:
            # it is told nothing of the close (no connectionLost without a
            # connectionMade), and the close is not counted again.
            wrapper.close()
            return
        wrapper.release()
        context.makeConnection(wrapper)
        if rest:
            context.dataReceived(rest)

    def headerFailed(self, wrapper: ProxyHeaderWrapper, why: str) -> None:
        """
        C{wrapper}'s connection did not send a valid PROXY header: count it
        (C{protocol-error}), log it (rate-limited), close it.
        """
        if self._waiting.pop(wrapper, None) is None:
            return
        host = self._host
        host.counters.proxyHeaderErrors += 1
        host.counters.closedTotal[errors.PROTOCOL_ERROR] += 1
        transport = wrapper.transport
        host.rateLimitedLog.warn(
            "closing {peer}: protocol-error: {why}, starting {start!r}",
            peer=describePeer(transport.getPeer() if transport is not None else None),
            why=why,
            start=wrapper.firstBytes,
            closeReason=errors.PROTOCOL_ERROR,
        )
        wrapper.close()

    def headerLost(self, wrapper: ProxyHeaderWrapper) -> None:
        """C{wrapper}'s connection ended before its PROXY header was in."""
        if self._waiting.pop(wrapper, None) is not None:
            self._host.counters.closedTotal[errors.PEER] += 1

    def closeAll(self, reason: str) -> None:
        """Close every connection still waiting for its header (they have nothing to send)."""
        self._close(list(self._waiting), reason)

    def expire(self) -> None:
        """Close the connections whose PROXY header did not come in time."""
        host = self._host
        seconds = host.limits.proxyHeaderTimeout or host.limits.idleTimeout
        if not seconds or not self._waiting:
            return
        deadline = host.seconds() - seconds
        late = [w for w, arrived in self._waiting.items() if arrived <= deadline]
        if not late:
            return
        host.counters.proxyHeaderTimeouts += len(late)
        host.rateLimitedLog.info(
            "closing {count} connections that sent no complete PROXY header within {seconds}s",
            count=len(late),
            seconds=seconds,
            closeReason=errors.IDLE,
        )
        self._close(late, errors.IDLE)

    def _close(self, wrappers: list[ProxyHeaderWrapper], reason: str) -> None:
        for wrapper in wrappers:
            if self._waiting.pop(wrapper, None) is not None:
                self._host.counters.closedTotal[reason] += 1
                wrapper.close()


class _Filtered(Protocol):
    """See L{ProxyHeaderGate.filtered}."""

    def __init__(self, gate: ProxyHeaderGate, address: Any) -> None:
        self.gate = gate
        self.address = address

    def makeConnection(self, transport: Any) -> None:
        gate = self.gate
        if isProxyWrapper(transport) and transport.wrappedProtocol is self:
            context = gate._newContext()
            transport.wrappedProtocol = context
            if gate.hold(context, transport):
                return
            transport.wrappedProtocol = self  # a wrapper that cannot be held: judge the address we have
        gate._host.countRefusal(self.address, "address filtered")
        abortOrClose(transport)
