"""
The PROXY protocol (v1 and v2) behind C{haproxy:} endpoints: the glue
between Twisted's own wrapper and parsers (L{twisted.protocols.haproxy})
and the context factory.

A load balancer that speaks the PROXY protocol opens each connection with
one header naming the client it relays::

    v1 (text, at most 107 bytes):
    +------------------------------------------------------+-----------
    | PROXY TCP4 203.0.113.7 192.0.2.1 51234 9983\\r\\n       | payload...
    +------------------------------------------------------+-----------

    v2 (binary):
    +---------------------+-------+--------+--------+-----------+--------
    | \\r\\n\\r\\n\\0\\r\\nQUIT\\n   | ver/  | family | length | addresses | payload
    | (12-byte signature) | cmd   | /proto | 2 bytes| (+ TLVs)  |
    +---------------------+-------+--------+--------+-----------+--------

Twisted's wrapper parses the header and makes C{getPeer()} return the client
it names.  Left alone, it connects the wrapped protocol as soon as the TCP
connection arrives (before the header), closes a connection whose header is
invalid without a word, lets a few malformed headers escape its parser as
C{ValueError}s, drops a connection whose first read is shorter than it
needs to tell v1 from v2, and refuses the bare v1 C{PROXY UNKNOWN\\r\\n}
that the specification allows.  Its v2 parser also turns an C{AF_UNIX}
header into a C{UNIXAddress} client that no IP accept filter can judge;
this module replaces a client that is not an IP address with the
connection's own addresses (L{ProxyHeaderWrapper.nonIPClient}).
L{ProxyHeaderWrapper} takes over Twisted's
wrapper of each such connection (see L{ProxyHeaderWrapper.hold}) and holds
the context back until the header is in, so that everything the server does
with a connection -- C{connectionMade}, C{peer}, the accept filter, the idle
timeout, the monitor -- sees the client from the header.  The factory
decides what happens at each step (L{iocpsvc.factory.ConnectionContextFactory}:
C{holdForProxyHeader}, C{proxyHeaderReceived}, C{proxyHeaderFailed},
C{proxyHeaderLost}); this module only watches the header go by.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.haproxy._info import ProxyInfo
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper
from twisted.python.failure import Failure

from iocpsvc.limits import peerIP

if TYPE_CHECKING:
    from iocpsvc.context import ConnectionContext

_V2_SIGNATURE: bytes = V2Parser.PREFIX
_V1_SIGNATURE: bytes = V1Parser.PROXYSTR
# Twisted picks the parser from the first read alone: v2 needs 16 bytes
# (signature, version, family, length), v1 needs 8 starting with "PROXY".
_V2_DECIDES = 16
_V1_DECIDES = 8
# How much of an invalid header the log line shows.
_SHOWN = 24


def undecided(head: bytes) -> bool:
    """
    Whether C{head}, the first bytes of a connection, could still begin a
    PROXY header but is too short for Twisted's wrapper to tell which
    version (it would close the connection): wait for more.
    """
    if len(head) < _V2_DECIDES and _V2_SIGNATURE.startswith(head[: len(_V2_SIGNATURE)]):
        return True
    # A v1 line shorter than 8 bytes that has already ended is invalid anyway.
    return len(head) < _V1_DECIDES and _V1_SIGNATURE.startswith(head[:5]) and b"\n" not in head


def addressProblem(address: Any, role: str = "client") -> str | None:
    """
    What is wrong with an address a header gave (the client's, or with
    C{role="destination"} the one it connected to), or C{None}.

    Twisted's parser takes a v1 header's addresses and ports as they come
    (C{"999.1.1.1"}, port 70000, C{TCP4 ::1 ...}); such a client must
    neither pass the accept filter as an address without an IP, nor be
    judged by the rules of the other family, nor reach the application.
    """
    if not isinstance(address, (IPv4Address, IPv6Address)):
        # No client in the header (LOCAL, UNKNOWN, UNSPEC, or AF_UNIX, see
        # ProxyHeaderWrapper.nonIPClient): the connection's own address.
        return None
    if peerIP(address) is None:
        return f"invalid {role} address {address.host!r} in PROXY header"
    # The family as written: peerIP reads ::ffff:1.2.3.4 as IPv4, yet in a
    # TCP6 header that is a valid IPv6 address (an IPv4 client relayed by a
    # balancer that mixes families).
    version = ipaddress.ip_address(address.host.split("%", 1)[0]).version
    family = 4 if isinstance(address, IPv4Address) else 6
    if version != family:
        return f"IPv{version} {role} address {address.host!r} in a TCP{family} PROXY header"
    if not 0 <= address.port <= 65535:
        return f"invalid {role} port {address.port} in PROXY header"
    return None


class _V1Parser(V1Parser):
    """
    Twisted's v1 parser, also taking the bare C{PROXY UNKNOWN\\r\\n} (no
    address, as the specification allows), which Twisted's refuses because
    it looks for a space after C{UNKNOWN}.
    """

    @classmethod
    def parse(cls, line: bytes) -> ProxyInfo:
        if line == b"PROXY UNKNOWN":
            return ProxyInfo(line, None, None)  # as for "PROXY UNKNOWN <anything>"
        return super().parse(line)


class _Trailer(Protocol):
    """
    Stands in for the context while Twisted's wrapper parses the header:
    Twisted hands it the bytes that followed the header in the same read.
    """

    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class ProxyHeaderWrapper(HAProxyProtocolWrapper):
    """
    Twisted's PROXY protocol wrapper, holding its context back until the
    header has been read and judged.

    Until then the context is not connected (no C{makeConnection}, no
    C{connectionMade}, not online); the factory counts the connection
    against C{maxConnections} and times it out.  Once the header is in,
    the factory applies the accept filter to the client it names and
    connects the context, whose C{peer} is that client from the start.

    @ivar awaiting: the context held back, or C{None} once it has been
        released to connect (L{release}).  A context that is never released
        (its header invalid or late, its client refused) hears nothing of
        the connection: no C{connectionMade}, no data, no C{connectionLost}.
    @ivar failed: the header was found invalid, late, or its client
        refused; the connection is being closed and reads are dropped.
    @ivar nonIPClient: what the header named as its client when that was
        not an IP address (C{"a UNIX-socket client"}, from a v2 C{AF_UNIX}
        header), else C{None}.  Such a client is dropped from the header,
        as the specification lets a receiver do with a family it does not
        support: C{getPeer} and C{getHost} are the connection's own
        addresses (the balancer's), as for C{LOCAL}; the factory decides
        whether that will do (L{ConnectionContextFactory.proxyHeaderReceived
        <iocpsvc.factory.ConnectionContextFactory.proxyHeaderReceived>}).
    """

    # Class defaults: a wrapper Twisted built is turned into one of these
    # after its __init__ ran (see hold()).
    awaiting: ConnectionContext | None = None
    failed = False
    nonIPClient: str | None = None
    _head = b""
    _parsing = False
    _parserClosed = False
    _started = False

    @classmethod
    def hold(cls, transport: Any, context: ConnectionContext) -> ProxyHeaderWrapper | None:
        """
        If C{transport} is Twisted's PROXY wrapper and has not read a header
        yet, take it over to hold C{context} until the header is in.

        The C{haproxy:} endpoint builds Twisted's own wrapper; the context
        only sees it once it is asked to connect, before any byte was read.
        Changing the instance's class to this subclass of it (which adds no
        state of its own but class defaults) is what lets C{--port
        haproxy:...} work unchanged, with no second endpoint parser that
        would compete with Twisted's for the C{haproxy} prefix.

        @return: the wrapper now holding C{context}, or C{None} when
            C{transport} is not a wrapper waiting for a header (then the
            context connects at once, as usual).
        """
        if not isinstance(transport, HAProxyProtocolWrapper) or transport._proxyInfo is not None:
            return None
        if type(transport) is HAProxyProtocolWrapper:
            transport.__class__ = cls
        elif not isinstance(transport, cls):
            return None  # somebody else's subclass: leave it to its own ways
        wrapper: ProxyHeaderWrapper = transport
        if wrapper._started or wrapper.failed:
            return None
        wrapper.awaiting = context
        return wrapper

    @property
    def firstBytes(self) -> bytes:
        """The first bytes received (up to a few dozen), for log lines."""
        return self._head[:_SHOWN]

    def dataReceived(self, data: bytes) -> None:
        context = self.awaiting
        if context is None:
            super().dataReceived(data)  # the header is through: straight to the context
            return
        if self.failed:
            return
        if not self._started:
            # Twisted decides on the first read it sees; give it enough.
            head = self._head + data
            self._head = head[:_SHOWN]  # all of it while undecided (fewer than 16 bytes)
            if undecided(head):
                return
            self._started = True
            data = head
            if head[: len(_V1_SIGNATURE)] == _V1_SIGNATURE:
                # Twisted's wrapper keeps a parser it already has: give it
                # one that also reads the bare "PROXY UNKNOWN".
                self._parser = _V1Parser()
        trailer = _Trailer()
        self.wrappedProtocol = trailer
        self._parsing = True
        problem: str | None = None
        try:
            super().dataReceived(data)
        except Exception as e:
            # Twisted's v1 parser lets int("x") and bad UTF-8 through.
            problem = f"invalid PROXY header ({type(e).__name__}: {e})"
        finally:
            self._parsing = False
            self.wrappedProtocol = context
        factory = context.factory
        if factory is None:
            return
        if problem is None and self._parserClosed:
            problem = "invalid PROXY header"
        info = self._proxyInfo
        if problem is None and info is not None and info.source is not None:
            if not isinstance(info.source, (IPv4Address, IPv6Address)):
                # Never let a header invent a non-IP peer (the accept filter
                # would wave it through): fall back to the connection's own.
                kind = "a UNIX-socket" if isinstance(info.source, UNIXAddress) else "a non-IP"
                self.nonIPClient = f"{kind} client"
                self._proxyInfo = ProxyInfo(info.header, None, None)
        if problem is None and self._proxyInfo is not None:
            problem = addressProblem(self.getPeer()) or addressProblem(self.getHost(), "destination")
        if problem is not None:
            factory.proxyHeaderFailed(self, problem)
        elif self._proxyInfo is not None:
            # Still held: the factory releases the context only if it lets
            # the client in (a refused one must not hear connectionLost).
            factory.proxyHeaderReceived(self, context, trailer.data)

    def release(self) -> None:
        """
        Stop holding the context back, just before it connects: from now on
        reads and the connection's end go to it.
        """
        self.awaiting = None

    def loseConnection(self) -> None:
        if self._parsing:
            # Twisted's verdict on the header: it closes what it cannot parse.
            self._parserClosed = True
        super().loseConnection()

    def close(self) -> None:
        """
        Close a connection whose context never connected (nothing was
        written to it): at once, reading nothing more.
        """
        self.failed = True
        transport = self.transport
        if transport is None:
            return
        abortConnection = getattr(transport, "abortConnection", None)
        if abortConnection is not None:
            abortConnection()
        else:
            transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        context = self.awaiting
        if context is None:
            super().connectionLost(reason)
            return
        # The context never connected: it hears nothing, and owes nothing.
        self.factory.unregisterProtocol(self)
        self.wrappedProtocol = None  # type: ignore[assignment]  # as Twisted does: no cycle left
        if context.factory is not None:
            context.factory.proxyHeaderLost(self)
