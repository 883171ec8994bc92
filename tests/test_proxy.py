"""
Tests for the PROXY protocol behind C{haproxy:} (L{iocpsvc.proxy} and the
factory's header handling): with a C{Clock} and in-memory transports, over
real loopback TCP with hand-built v1 and v2 headers, and behind a real
HAProxy in front of several C{twistd iocpsvc} nodes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
from typing import Any

import twisted.protocols.haproxy as haproxyModule
from twisted.internet import defer, protocol
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError, ConnectionDone, ProcessExitedAlready
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from iocpsvc import errors
from iocpsvc.addresses import describePeer
from iocpsvc.apps import ChatContext, EchoContext
from iocpsvc.context import ConnectionContext
from iocpsvc.errors import ProxyHeaderError
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.limits import ServerLimits
from iocpsvc.logs import RateLimitedLog
from iocpsvc.monitor.prometheus import metricsText
from iocpsvc.monitor.stats import collect, connections
from iocpsvc.proxy import ProxyHeaderWrapper
from iocpsvc.proxyheader import ProxyHeader, ProxyHeaderReader, addressProblem, parseV1, parseV2, undecided
from iocpsvc.service import SocketServerService
from iocpsvc.transports import proxyWrapperClass
from tests.helpers import frame, haproxyWrappingFactory
from tests.netutil import RawClient, connectRaw, echoMany, spawnTwistd, temporaryDirectory, waitUntil

PROXY = IPv4Address("TCP", "10.0.0.2", 5555)  # the load balancer, as TCP sees it
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1Header(
    source: str, sourcePort: int, destination: str = "192.0.2.1", destinationPort: int = 9983
) -> bytes:
    """A PROXY v1 header line, as HAProxy's C{send-proxy} writes it."""
    family = "TCP6" if ":" in source else "TCP4"
    return f"PROXY {family} {source} {destination} {sourcePort} {destinationPort}\r\n".encode()


def v2Header(
    source: str, sourcePort: int, destination: str = "192.0.2.1", destinationPort: int = 9983
) -> bytes:
    """A PROXY v2 header (command PROXY, TCP over IPv4 or IPv6), as C{send-proxy-v2} writes it."""
    if ":" in source:
        family, familyProtocol = socket.AF_INET6, 0x21
        if ":" not in destination:
            destination = "::ffff:" + destination
    else:
        family, familyProtocol = socket.AF_INET, 0x11
    addresses = (
        socket.inet_pton(family, source)
        + socket.inet_pton(family, destination)
        + struct.pack("!HH", sourcePort, destinationPort)
    )
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, familyProtocol, len(addresses)) + addresses


def v2Local() -> bytes:
    """The v2 header HAProxy's health checks send (C{check-send-proxy}): command LOCAL, no address."""
    return V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, 0)


def v2Raw(familyProtocol: int, block: bytes, versionCommand: int = 0x21) -> bytes:
    """A v2 header with the given family-and-protocol byte and address block (and TLVs), as given."""
    return V2_SIGNATURE + struct.pack("!BBH", versionCommand, familyProtocol, len(block)) + block


def v2Unix(
    source: bytes = b"/run/client.sock", destination: bytes = b"/run/iocpsvc.sock", transport: int = 0x1
) -> bytes:
    """A v2 header (command PROXY, family AF_UNIX) naming a UNIX-socket client: two 108-byte paths."""
    return v2Raw(0x30 | transport, source.ljust(108, b"\0") + destination.ljust(108, b"\0"))


# v1 lines that Twisted's parser takes (int(), ipaddress) but the
# specification does not, with the reason logged for each.
LAX_V1_LINES: list[tuple[bytes, str]] = [
    (b"PROXY TCP4 203.0.113.7 192.0.2.1 +80 9983\r\n", "invalid client port '+80' in PROXY header"),
    (b"PROXY TCP4 203.0.113.7 192.0.2.1 1_000 9983\r\n", "invalid client port '1_000' in PROXY header"),
    (b"PROXY TCP4 203.0.113.7 192.0.2.1 080 9983\r\n", "invalid client port '080' in PROXY header"),
    (b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 9983\r\n", "invalid client port '65536' in PROXY header"),
    (b"PROXY TCP4 203.0.113.7 192.0.2.1 -1 9983\r\n", "invalid client port '-1' in PROXY header"),
    (b"PROXY TCP4 203.0.113.7 192.0.2.1 100000 9983\r\n", "invalid client port '100000' in PROXY header"),
    (b"PROXY TCP4 203.0.113.7 192.0.2.1 80 +9983\r\n", "invalid destination port '+9983' in PROXY header"),
    (
        # Arabic-Indic digits, which int() takes
        "PROXY TCP4 203.0.113.7 192.0.2.1 80 \u0669\u0669\r\n".encode(),
        "invalid destination port '\\xd9\\xa9\\xd9\\xa9' in PROXY header",
    ),
    (
        b"PROXY TCP4 203.0.113.7 192.0.2.1  80 9983\r\n",
        "PROXY v1 header fields not separated by single spaces",
    ),
    (
        b"PROXY  TCP4 203.0.113.7 192.0.2.1 80 9983\r\n",
        "PROXY v1 header fields not separated by single spaces",
    ),
    (
        b"PROXY TCP4 203.0.113.7 192.0.2.1 80 9983 \r\n",
        "PROXY v1 header fields not separated by single spaces",
    ),
    (
        b"PROXY TCP6 fe80::1%eth0 fe80::2 80 9983\r\n",
        "client address 'fe80::1%eth0' with a scope id in PROXY header",
    ),
    (
        b"PROXY TCP6 2001:db8::7 fe80::2%1 80 9983\r\n",
        "destination address 'fe80::2%1' with a scope id in PROXY header",
    ),
    (
        b"PROXY TCP4 1.2.3.4%x 192.0.2.1 80 9983\r\n",
        "client address '1.2.3.4%x' with a scope id in PROXY header",
    ),
    (b"PROXY TCP4 01.2.3.4 192.0.2.1 80 9983\r\n", "invalid client address '01.2.3.4' in PROXY header"),
    (b"PROXY TCP4 1.2.3 192.0.2.1 80 9983\r\n", "invalid client address '1.2.3' in PROXY header"),
    (
        b"PROXY TCP4 203.0.113.7 192.0.2.1 80\r\n",
        "3 address and port fields in a PROXY v1 header instead of 4",
    ),
    (b"PROXY TCP4\r\n", "0 address and port fields in a PROXY v1 header instead of 4"),
    (
        b"PROXY TCP4 203.0.113.7\t192.0.2.1 80 9983\r\n",
        "3 address and port fields in a PROXY v1 header instead of 4",
    ),
    (
        b"PROXY TCP4 203.0.113.7 192.0.2.1 80 9983 1\r\n",
        "5 address and port fields in a PROXY v1 header instead of 4",
    ),
    (b"PROXY TCP4 203.0.113.7 192.0.2.1 80 9983\n\r\n", "CR or LF inside a PROXY v1 header"),
    (b"PROXY UNKNOWN " + b"f" * 92 + b"\r\n", "PROXY v1 header longer than 107 bytes"),  # 108 bytes
]


class PeerRecorder(EchoContext):
    """An echo context that notes what it saw in connectionMade and whether it was told of the end."""

    def connectionMade(self) -> None:
        self.peerAtStart = self.peer
        self.lostCalled = False

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lostCalled = True


def callRecorder() -> tuple[type[EchoContext], list[tuple[str, int]]]:
    """
    An echo context class, and the list where its instances record what
    they were told, in order: C{("made" | "data" | "lost", contextId)}.
    """
    calls: list[tuple[str, int]] = []

    class CallRecorder(EchoContext):
        def connectionMade(self) -> None:
            calls.append(("made", self.contextId))

        def dataReceived(self, data: bytes) -> None:
            calls.append(("data", self.contextId))
            super().dataReceived(data)

        def connectionLost(self, reason: Failure = connectionDone) -> None:
            calls.append(("lost", self.contextId))

    return CallRecorder, calls


UNSPEC_MIX = "UNSPEC with a known one"


class ProxiedConnection:
    """
    One connection through Twisted's C{haproxy:} wrapping factory (what
    C{--port haproxy:...} builds), over a C{StringTransport} whose peer is
    the load balancer.
    """

    def __init__(self, factory: ConnectionContextFactory, proxy: IPv4Address = PROXY) -> None:
        self.wrapper: Any = haproxyWrappingFactory(factory).buildProtocol(proxy)
        self.transport = StringTransport(peerAddress=proxy, hostAddress=IPv4Address("TCP", "10.0.0.9", 9983))
        self.closed: list[str] = []
        self.transport.abortConnection = lambda: self.closed.append("abort")  # type: ignore[method-assign]
        self.wrapper.makeConnection(self.transport)

    def feed(self, data: bytes, chunkSize: int | None = None) -> None:
        """Receive C{data}, in chunks of C{chunkSize} bytes (at once by default)."""
        step = chunkSize or max(1, len(data))
        for start in range(0, len(data), step):
            self.wrapper.dataReceived(data[start : start + step])

    @property
    def context(self) -> Any:
        """The wrapped protocol: the context once connected."""
        return self.wrapper.wrappedProtocol

    @property
    def closing(self) -> bool:
        """Whether the server aborted or started closing this connection."""
        return bool(self.closed) or bool(self.transport.disconnecting)

    def lose(self) -> None:
        """The connection ends (after a close, or the client went away)."""
        self.wrapper.connectionLost(Failure(ConnectionDone()))


def makeFactory(contextClass: Any = PeerRecorder, **limits: Any) -> ConnectionContextFactory:
    clock = Clock()
    factory = ConnectionContextFactory(contextClass, "length", reactor=clock, limits=ServerLimits(**limits))
    return factory


def captureLog(factory: ConnectionContextFactory) -> list[dict[str, Any]]:
    """Send the factory's rate-limited log lines to a list (same burst and interval)."""
    events: list[dict[str, Any]] = []
    factory.rateLimitedLog = RateLimitedLog(Logger(observer=events.append), factory.reactor.seconds)
    return events


class ReaderTests(SynchronousTestCase):
    """
    L{iocpsvc.proxyheader}'s own reading of headers (no transport): what
    each header says, however its bytes are split.
    """

    def readAll(self, data: bytes, chunkSize: int) -> tuple[ProxyHeader, bytes]:
        """Feed C{data} to a new reader in chunks of C{chunkSize} bytes until it has a header."""
        reader = ProxyHeaderReader()
        for start in range(0, len(data), chunkSize):
            read = reader.feed(data[start : start + chunkSize])
            if read is not None:
                header, rest = read
                return header, rest + data[start + chunkSize :]
        self.fail(f"no header in {data!r}")

    def test_anySplit(self) -> None:
        """A v1 or v2 header (with TLVs) split anywhere reads as it does whole, the payload after it kept."""
        tlvs = b"\x04\x00\x03abc" + b"\x05\x00\x00"
        v2WithTLVs = v2Raw(0x11, v2Header("203.0.113.7", 51234)[16:] + tlvs)
        for data in (
            v1Header("203.0.113.7", 51234),
            v2Header("2001:db8::7", 6000, "2001:db8::1"),
            v2WithTLVs,
        ):
            whole = self.readAll(data + b"payload", len(data) + 7)
            self.assertEqual(whole[1], b"payload")
            self.assertEqual(whole[0].header, data.rstrip(b"\r\n"))
            for chunkSize in range(1, len(data) + 1):
                self.assertEqual(self.readAll(data + b"payload", chunkSize), whole)

    def test_addresses(self) -> None:
        """
        The addresses each header names: v1's as written, v2's IPv4 dotted
        and IPv6 in eight groups, C{UDP} for a v2 C{DGRAM} header, none for
        C{LOCAL}, C{UNSPEC} and v1 C{UNKNOWN}, a UNIX address for C{AF_UNIX}.
        """
        v1 = parseV1(b"PROXY TCP6 2001:DB8::7 ::1 1 2")
        self.assertEqual(
            (v1.source, v1.destination),
            (IPv6Address("TCP", "2001:DB8::7", 1), IPv6Address("TCP", "::1", 2)),
        )
        v2 = parseV2(v2Header("2001:db8::7", 6000, "::1"))
        self.assertEqual(
            (v2.source, v2.destination),
            (IPv6Address("TCP", "2001:db8:0:0:0:0:0:7", 6000), IPv6Address("TCP", "0:0:0:0:0:0:0:1", 9983)),
        )
        datagram = parseV2(v2Raw(0x12, v2Header("203.0.113.7", 53)[16:]))
        self.assertEqual(
            (datagram.source, datagram.destination),
            (IPv4Address("UDP", "203.0.113.7", 53), IPv4Address("UDP", "192.0.2.1", 9983)),
        )
        for header in (v2Local(), v2Raw(0x00, b"")):
            self.assertEqual((parseV2(header).source, parseV2(header).destination), (None, None))
        self.assertEqual(parseV1(b"PROXY UNKNOWN").source, None)
        unix = parseV2(v2Unix())
        self.assertEqual(
            (unix.source, unix.destination),
            (UNIXAddress(b"/run/client.sock"), UNIXAddress(b"/run/iocpsvc.sock")),
        )

    def test_refusals(self) -> None:
        """What is not a header is refused with a reason, at once or once its end shows."""
        for data, why in (
            (b"GET / HTTP/1.1\r\n", "invalid PROXY header"),
            (b"PROXY TCP4 203.0.113.7 192.0.2.1 080 9983\r\n", "invalid client port '080' in PROXY header"),
            (b"PROXY " + b"x" * 102, "invalid PROXY header"),  # 108 bytes, no end of line
            (v2Raw(0x11, b"\0" * 11), "PROXY v2 address block of 11 bytes, IPv4 addresses need 12"),
        ):
            reader = ProxyHeaderReader()
            with self.assertRaises(ProxyHeaderError) as caught:
                reader.feed(data)
            self.assertEqual(caught.exception.reason, why)
        self.assertIsNone(ProxyHeaderReader().feed(b"PROXY " + b"x" * 101))  # 107 bytes: may still end

    def test_longestV2ByteByByte(self) -> None:
        """The longest v2 header (65,535 bytes after the fixed 16) is read fed one byte at a time."""
        block = v2Header("203.0.113.7", 1)[16:]
        data = v2Raw(
            0x11, block + struct.pack("!BH", 0xE0, 65535 - len(block) - 3) + b"t" * (65535 - len(block) - 3)
        )
        self.assertEqual(len(data), 16 + 65535)
        reader = ProxyHeaderReader()
        for index in range(len(data) - 1):
            self.assertIsNone(reader.feed(data[index : index + 1]))
        read = reader.feed(data[-1:] + b"!")
        assert read is not None
        self.assertEqual((read[0].source, read[1]), (IPv4Address("TCP", "203.0.113.7", 1), b"!"))


class TakeoverTests(SynchronousTestCase):
    """
    How a connection of Twisted's C{haproxy:} endpoint becomes a
    L{ProxyHeaderWrapper}: Twisted's wrapper class is found through the
    public C{proxyEndpoint}, never imported from its private module.
    """

    def test_wrapperFoundThroughPublicAPI(self) -> None:
        """proxyWrapperClass is the class of what the haproxy: endpoint's wrapping factory builds."""
        wrapperClass = proxyWrapperClass()
        self.assertIsNotNone(wrapperClass)
        built = haproxyWrappingFactory(makeFactory()).protocol
        self.assertIs(built, wrapperClass)
        self.assertFalse(issubclass(ProxyHeaderWrapper, built))  # a ProtocolWrapper of our own

    def test_takenOverBeforeTheFirstByte(self) -> None:
        """Twisted's wrapper becomes a ProxyHeaderWrapper as its context is asked to connect."""
        factory = makeFactory()
        connection = ProxiedConnection(factory)
        self.assertIs(type(connection.wrapper), ProxyHeaderWrapper)
        connection.feed(v1Header("203.0.113.7", 51234) + frame(b"x"))
        self.assertEqual(connection.wrapper.getPeer(), IPv4Address("TCP", "203.0.113.7", 51234))
        self.assertEqual(connection.wrapper.getHost(), IPv4Address("TCP", "192.0.2.1", 9983))
        self.assertEqual(factory.onlineCount, 1)

    def test_unexpectedEndpointWarned(self) -> None:
        """
        A Twisted whose haproxy: endpoint does not hand a WrappingFactory of
        ProtocolWrappers to the endpoint it wraps: no class is found, and a
        warning says that PROXY headers are left to Twisted.
        """
        import sys
        import types

        from iocpsvc import transports

        events: list[dict[str, Any]] = []
        self.patch(transports, "_log", Logger(observer=events.append))
        fake = types.ModuleType("twisted.protocols.haproxy")
        fake.proxyEndpoint = lambda endpoint: endpoint  # type: ignore[attr-defined]  # listen gets a bare factory
        sys.modules["twisted.protocols.haproxy"] = fake
        self.addCleanup(sys.modules.__setitem__, "twisted.protocols.haproxy", haproxyModule)
        self.assertIsNone(proxyWrapperClass())
        self.assertIsNone(proxyWrapperClass())
        [event] = events
        self.assertIn("PROXY headers are left to Twisted's own wrapper", event["log_format"])
        sys.modules["twisted.protocols.haproxy"] = haproxyModule
        self.assertIsNotNone(proxyWrapperClass())  # the real one again: found again

    def test_cannotTakeOverWarned(self) -> None:
        """
        A wrapper whose class cannot be changed (its layout differs) is
        left to itself, its context connected at once, with one warning.
        """
        from iocpsvc import proxy

        twistedWrapper: Any = proxyWrapperClass()

        class Slotted(twistedWrapper):  # type: ignore[misc]
            __slots__ = ("extra",)

        events: list[dict[str, Any]] = []
        self.patch(proxy, "_log", Logger(observer=events.append))
        self.patch(proxy, "proxyWrapperClass", lambda: Slotted)
        self.patch(ProxyHeaderWrapper, "_cannotTakeOver", False)
        for _ in range(2):
            factory = makeFactory()
            wrapping = haproxyWrappingFactory(factory)
            wrapping.protocol = Slotted
            wrapper = wrapping.buildProtocol(PROXY)
            wrapper.makeConnection(StringTransport(peerAddress=PROXY))
            self.assertIs(type(wrapper), Slotted)
            self.assertEqual((factory.onlineCount, factory.awaitingProxyHeader), (1, 0))
        [event] = events
        self.assertIn("cannot take over Twisted's haproxy: wrapper", event["log_format"])

    def test_otherWrapperLeftAlone(self) -> None:
        """
        A subclass of Twisted's wrapper (somebody else's) is not taken over:
        its context connects at once, as without iocpsvc.proxy.
        """
        factory = makeFactory()
        wrapping = haproxyWrappingFactory(factory)
        wrapping.protocol = type("TheirWrapper", (wrapping.protocol,), {})
        wrapper = wrapping.buildProtocol(PROXY)
        wrapper.makeConnection(StringTransport(peerAddress=PROXY))
        self.assertEqual(type(wrapper).__name__, "TheirWrapper")
        self.assertEqual((factory.onlineCount, factory.awaitingProxyHeader), (1, 0))


class HeaderTests(SynchronousTestCase):
    """The context waits for the PROXY header, then sees the client it names."""

    def test_contextWaitsForHeader(self) -> None:
        """Until the header is in, the context is not connected; then its peer is the header's client."""
        factory = makeFactory()
        connection = ProxiedConnection(factory)
        self.assertIsInstance(connection.wrapper, ProxyHeaderWrapper)
        self.assertEqual((factory.onlineCount, factory.awaitingProxyHeader), (0, 1))
        self.assertFalse(connection.context.connected)
        connection.feed(v1Header("203.0.113.7", 51234)[:20])
        self.assertEqual((factory.onlineCount, factory.awaitingProxyHeader), (0, 1))
        connection.feed(v1Header("203.0.113.7", 51234)[20:] + frame(b"hi"))
        self.assertEqual(
            (factory.onlineCount, factory.awaitingProxyHeader, factory.counters.acceptedTotal), (1, 0, 1)
        )
        context = connection.context
        self.assertEqual(context.peerAtStart, IPv4Address("TCP", "203.0.113.7", 51234))
        self.assertEqual(describePeer(context.peer), "203.0.113.7:51234")
        self.assertEqual(connection.transport.value(), frame(b"hi"))
        self.assertEqual(context.bytesReceived, len(frame(b"hi")))  # the header is not the context's

    def test_v2AndIPv6(self) -> None:
        """v2 headers over IPv4 and IPv6 name the client too."""
        factory = makeFactory()
        four, six = ProxiedConnection(factory), ProxiedConnection(factory)
        four.feed(v2Header("198.51.100.20", 4000) + frame(b"4"))
        six.feed(v2Header("2001:db8::7", 6000, "2001:db8::1") + frame(b"6"))
        self.assertEqual(four.context.peerAtStart, IPv4Address("TCP", "198.51.100.20", 4000))
        self.assertEqual(six.context.peerAtStart, IPv6Address("TCP", "2001:db8:0:0:0:0:0:7", 6000))
        self.assertEqual(describePeer(six.context.peer), "[2001:db8:0:0:0:0:0:7]:6000")
        self.assertEqual((four.transport.value(), six.transport.value()), (frame(b"4"), frame(b"6")))

    def test_headerInPieces(self) -> None:
        """
        Headers arriving a byte at a time work (Twisted's wrapper alone
        closes a connection whose first read is too short to tell v1 from v2).
        """
        factory = makeFactory()
        for header in (v1Header("203.0.113.7", 1), v2Header("203.0.113.8", 2), v2Local()):
            connection = ProxiedConnection(factory)
            connection.feed(header + frame(b"x"), chunkSize=1)
            self.assertFalse(connection.closing, header)
            self.assertEqual(connection.transport.value(), frame(b"x"))
        self.assertEqual(factory.onlineCount, 3)

    def test_undecided(self) -> None:
        """Only a prefix of a possible header, too short to tell, is waited for."""
        self.assertTrue(undecided(b"PRO"))
        self.assertTrue(undecided(b"PROXY T"))
        self.assertTrue(undecided(V2_SIGNATURE[:5]))
        self.assertTrue(undecided(V2_SIGNATURE + b"\x21"))
        self.assertFalse(undecided(b"PROXY TCP4"))
        self.assertFalse(undecided(b"PROXY\r\n"))
        self.assertFalse(undecided(b"GET"))
        self.assertFalse(undecided(v2Local()))

    def test_localHeaderKeepsProxyAddress(self) -> None:
        """A LOCAL header (HAProxy's health check) names no client: the peer is the proxy."""
        factory = makeFactory()
        connection = ProxiedConnection(factory)
        connection.feed(v2Local())
        self.assertEqual(connection.context.peerAtStart, PROXY)
        self.assertEqual(factory.onlineCount, 1)

    def test_bareUnknown(self) -> None:
        """
        v1 C{PROXY UNKNOWN\\r\\n} with nothing after UNKNOWN (valid, though
        Twisted's parser wants a space there) names no client: the peer is
        the proxy, and the payload after it reaches the context, whether it
        came in the same read or later, and however the header was split.
        """
        header = b"PROXY UNKNOWN\r\n"
        for reads in (
            [header],
            [header + frame(b"x")],
            [header, frame(b"x")],
            [b"PROXY UNKNOWN", b"\r\n" + frame(b"x")],
            [b"PROXY UNKNOWN\r", b"\n", frame(b"x")],
            [b"PROXY U", b"NKNOWN\r\n" + frame(b"x")[:3], frame(b"x")[3:]],
            [bytes([byte]) for byte in header + frame(b"x")],
        ):
            factory = makeFactory()
            connection = ProxiedConnection(factory)
            for data in reads:
                connection.feed(data)
            self.assertFalse(connection.closing, reads)
            self.assertEqual((factory.onlineCount, factory.counters.proxyHeaderErrors), (1, 0), reads)
            self.assertEqual(connection.context.peerAtStart, PROXY)
            echoed = frame(b"x") if len(b"".join(reads)) > len(header) else b""
            self.assertEqual(connection.transport.value(), echoed, reads)
            self.assertEqual(connection.context.bytesReceived, len(echoed))

    def test_unknownWithAddresses(self) -> None:
        """C{PROXY UNKNOWN} and anything after it (ignored, as the specification says) names no client."""
        factory = makeFactory()
        connection = ProxiedConnection(factory)
        connection.feed(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n" + frame(b"x"))
        self.assertEqual(connection.context.peerAtStart, PROXY)
        self.assertEqual(connection.transport.value(), frame(b"x"))

    def test_ipv4MappedInTCP6(self) -> None:
        """A TCP6 header with IPv4-mapped IPv6 addresses (a balancer mixing families) is accepted."""
        factory = makeFactory()
        connection = ProxiedConnection(factory)
        connection.feed(v1Header("::ffff:203.0.113.7", 51234, "::ffff:192.0.2.1") + frame(b"x"))
        self.assertEqual(connection.context.peerAtStart, IPv6Address("TCP", "::ffff:203.0.113.7", 51234))
        self.assertEqual(connection.transport.value(), frame(b"x"))

    def test_unixClientIsTheProxy(self) -> None:
        """
        A v2 AF_UNIX header (stream or datagram) names a client that is not
        an IP address: without an accept filter the connection is served as
        after a LOCAL header, its peer and host the TCP connection's own
        (the balancer's), never a UNIX address from the header -- not in
        connectionMade, not in /connections.json.
        """
        for header, chunkSize in ((v2Unix(), None), (v2Unix(transport=0x2), None), (v2Unix(), 1)):
            factory = makeFactory()
            connection = ProxiedConnection(factory)
            connection.feed(header + frame(b"x"), chunkSize)
            context = connection.context
            self.assertEqual(context.peerAtStart, PROXY)
            self.assertEqual(context.host, IPv4Address("TCP", "10.0.0.9", 9983))
            self.assertEqual(connection.wrapper.nonIPClient, "a UNIX-socket client")
            self.assertEqual(connection.transport.value(), frame(b"x"))
            self.assertEqual(
                (factory.onlineCount, factory.counters.proxyHeaderErrors, factory.counters.refusedTotal),
                (1, 0, 0),
            )
            self.assertEqual([row["peer"] for row in connections(factory)["connections"]], ["10.0.0.2:5555"])

    def test_strictV1Accepts(self) -> None:
        """
        Valid v1 lines at the edges of the specification are accepted: port
        0 and 65535, upper-case IPv6, the longest TCP6 line (104 bytes) and
        a 107-byte UNKNOWN line.
        """
        longest = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        for line, peer in (
            (b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", IPv4Address("TCP", "0.0.0.0", 0)),
            (b"PROXY TCP6 2001:DB8::7 2001:db8::1 65535 0\r\n", IPv6Address("TCP", "2001:DB8::7", 65535)),
            (v1Header(longest, 65535, longest, 65535), IPv6Address("TCP", longest, 65535)),
            (b"PROXY UNKNOWN " + b"f" * 91 + b"\r\n", PROXY),
        ):
            factory = makeFactory()
            connection = ProxiedConnection(factory)
            connection.feed(line + frame(b"x"))
            self.assertFalse(connection.closing, line)
            self.assertEqual(connection.context.peerAtStart, peer)
            self.assertEqual(connection.transport.value(), frame(b"x"))
        self.assertEqual(len(v1Header(longest, 65535, longest, 65535)), 104)
        self.assertEqual(len(b"PROXY UNKNOWN " + b"f" * 91 + b"\r\n"), 107)

    def test_v2ExtensionsAndIgnoredBlocks(self) -> None:
        """
        A v2 header's TLVs after the addresses are skipped (any number,
        including empty ones); a LOCAL header's block, and that of an
        UNSPEC family or transport, are skipped whatever they hold.
        """
        addresses = v2Header("203.0.113.7", 51234)[16:]
        tlvs = (
            struct.pack("!BH", 0x04, 0)
            + struct.pack("!BH", 0xEA, 5)
            + b"vpc-1"
            + struct.pack("!BH", 0x04, 2)
            + b"\0\0"
        )
        for header, peer in (
            (v2Raw(0x11, addresses + tlvs), IPv4Address("TCP", "203.0.113.7", 51234)),
            (v2Raw(0x00, b"junk", versionCommand=0x20), PROXY),  # LOCAL
            (v2Raw(0x11, b"j", versionCommand=0x20), PROXY),  # LOCAL, whatever family it says
            (v2Raw(0x00, b"junk"), PROXY),  # PROXY, family UNSPEC
        ):
            factory = makeFactory()
            connection = ProxiedConnection(factory)
            connection.feed(header + frame(b"x"))
            self.assertFalse(connection.closing, header)
            self.assertEqual(connection.context.peerAtStart, peer)
            self.assertEqual(connection.transport.value(), frame(b"x"))

    def test_monitorShowsHeaderClient(self) -> None:
        """/connections.json lists the client from the header."""
        factory = makeFactory()
        ProxiedConnection(factory).feed(v1Header("203.0.113.7", 51234))
        ProxiedConnection(factory)  # still waiting: not a connection yet
        rows = connections(factory)["connections"]
        self.assertEqual([row["peer"] for row in rows], ["203.0.113.7:51234"])

    def test_peerLeavesBeforeHeader(self) -> None:
        """A client gone before its header is counted as a peer close; its context hears nothing."""
        factory = makeFactory()
        connection = ProxiedConnection(factory)
        context = connection.context
        connection.feed(b"PROXY TCP4 203.0")
        connection.lose()
        self.assertEqual((factory.awaitingProxyHeader, factory.counters.closedTotal[errors.PEER]), (0, 1))
        self.assertFalse(hasattr(context, "lostCalled"))
        self.assertEqual(factory.counters.acceptedTotal, 0)

    def test_connectedContextIsTold(self) -> None:
        """Once connected through the wrapper, the context's end is the usual one."""
        factory = makeFactory()
        connection = ProxiedConnection(factory)
        connection.feed(v1Header("203.0.113.7", 1))
        context = connection.context
        connection.lose()
        self.assertTrue(context.lostCalled)
        self.assertEqual((factory.onlineCount, factory.counters.closedTotal[errors.PEER]), (0, 1))


class LimitTests(SynchronousTestCase):
    """Connections waiting for a header count, time out and close."""

    def test_countsAgainstMaxConnections(self) -> None:
        """Connections waiting for their header hold places under max-connections."""
        factory = makeFactory(maxConnections=2)
        ProxiedConnection(factory)
        ProxiedConnection(factory)
        third = ProxiedConnection(factory)
        self.assertTrue(third.closing)
        self.assertNotIsInstance(third.context, ConnectionContext)
        self.assertEqual((factory.counters.refusedTotal, factory.awaitingProxyHeader), (1, 2))
        stats = collect(factory)
        self.assertEqual(stats["awaiting_proxy_header"], 2)
        self.assertIn(b"iocpsvc_connections_awaiting_proxy_header 2.0", metricsText(lambda: collect(factory)))

    def test_headerTimeout(self) -> None:
        """No complete header within proxyHeaderTimeout: closed by the sweep, counted once."""
        factory = makeFactory(proxyHeaderTimeout=5, idleTimeout=300)
        events = captureLog(factory)
        factory.startFactory()
        self.addCleanup(factory.stopFactory)
        silent, slow, prompt = (
            ProxiedConnection(factory),
            ProxiedConnection(factory),
            ProxiedConnection(factory),
        )
        slow.feed(b"PROXY TCP4 ")
        prompt.feed(v1Header("203.0.113.7", 1))
        factory.reactor.advance(4.9)
        self.assertFalse(silent.closing or slow.closing)
        factory.reactor.advance(factory.limits.sweepInterval())
        self.assertEqual((silent.closed, slow.closed), (["abort"], ["abort"]))
        self.assertFalse(prompt.closing)
        silent.lose()
        slow.lose()
        self.assertEqual(factory.counters.proxyHeaderTimeouts, 2)
        self.assertEqual(factory.counters.closedTotal[errors.IDLE], 2)
        self.assertEqual(factory.awaitingProxyHeader, 0)
        self.assertEqual([e["count"] for e in events], [2])

    def test_idleTimeoutWhenHeaderTimeoutOff(self) -> None:
        """With proxyHeaderTimeout 0 the idle timeout bounds the wait instead."""
        factory = makeFactory(proxyHeaderTimeout=0, idleTimeout=20)
        factory.startFactory()
        self.addCleanup(factory.stopFactory)
        connection = ProxiedConnection(factory)
        factory.reactor.advance(19)
        self.assertFalse(connection.closing)
        factory.reactor.advance(factory.limits.sweepInterval() + 1)
        self.assertTrue(connection.closing)

    def test_shutdownClosesWaiting(self) -> None:
        """closeAll closes connections still waiting for a header (reason shutdown)."""
        factory = makeFactory()
        connection = ProxiedConnection(factory)
        done = factory.closeAll()
        self.assertTrue(connection.closing)
        self.assertEqual(self.successResultOf(done), None)
        self.assertEqual(factory.counters.closedTotal[errors.SHUTDOWN], 1)


class InvalidHeaderTests(SynchronousTestCase):
    """Garbage instead of a header: closed, counted, logged (rate-limited)."""

    def assertProtocolError(
        self, data: bytes, chunkSize: int | None = None, why: str | None = None
    ) -> ProxiedConnection:
        """
        C{data} is closed as an invalid header: counted, logged once (with
        C{why} as the reason, when given), its context never connected.
        """
        factory = makeFactory()
        events = captureLog(factory)
        connection = ProxiedConnection(factory)
        context = connection.context
        connection.feed(data, chunkSize)
        self.assertTrue(connection.closing, data)
        connection.lose()
        self.assertEqual(factory.counters.proxyHeaderErrors, 1, data)
        self.assertEqual(factory.counters.closedTotal[errors.PROTOCOL_ERROR], 1)
        self.assertEqual(sum(factory.counters.closedTotal.values()), 1)
        self.assertEqual(
            (factory.onlineCount, factory.awaitingProxyHeader, factory.counters.acceptedTotal), (0, 0, 0)
        )
        self.assertFalse(hasattr(context, "lostCalled"))  # never connected
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["peer"], "10.0.0.2:5555")
        self.assertEqual(events[0]["closeReason"], errors.PROTOCOL_ERROR)
        if why is not None:
            self.assertEqual(events[0]["why"], why)
        return connection

    def test_notAHeader(self) -> None:
        """A client speaking straight to the port (no proxy) is closed; the log shows what it sent."""
        self.assertProtocolError(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertProtocolError(frame(b"hello there, no header"))

    def test_badV1Lines(self) -> None:
        """Malformed v1 lines, including those Twisted's parser raises on, are protocol errors."""
        for line in (
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 x 80\r\n",  # was a ValueError inside Twisted's parser
            b"PROXY TCP4 999.1.1.1 5.6.7.8 1 80\r\n",  # not an address
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 80\r\n",  # not a port
            b"PROXY TCP4 \xff\xfe 5.6.7.8 1 80\r\n",
            b"PROXY TCP4 " + b"1" * 120,  # no end of line within 107 bytes
        ):
            self.assertProtocolError(line + frame(b"x"))

    def test_laxV1Lines(self) -> None:
        """
        v1 lines that Twisted's parser would take but the specification
        does not -- ports with a sign, an underscore, a space, a heading
        zero or out of range; scoped or non-canonical addresses; spaces that
        are not single; missing or extra fields; a stray LF; more than 107
        bytes -- are protocol errors, whether in one read or in pieces, and
        the log line says what is wrong.
        """
        for line, why in LAX_V1_LINES:
            self.assertProtocolError(line + frame(b"x"), why=why)
            self.assertProtocolError(line + frame(b"x"), chunkSize=5)

    def test_familyMismatch(self) -> None:
        """
        A v1 header whose addresses are not of its family (TCP4 with an IPv6
        address, TCP6 with an IPv4 one), for the client or the destination,
        is a protocol error, counted and logged like any invalid header.
        """
        for line, why in (
            (b"PROXY TCP4 ::1 ::1 5 6\r\n", "IPv6 client address '::1' in a TCP4 PROXY header"),
            (b"PROXY TCP4 203.0.113.7 ::1 5 6\r\n", "IPv6 destination address '::1' in a TCP4 PROXY header"),
            (
                b"PROXY TCP6 203.0.113.7 2001:db8::1 5 6\r\n",
                "IPv4 client address '203.0.113.7' in a TCP6 PROXY header",
            ),
            (
                b"PROXY TCP6 2001:db8::7 192.0.2.1 5 6\r\n",
                "IPv4 destination address '192.0.2.1' in a TCP6 PROXY header",
            ),
        ):
            factory = makeFactory()
            events = captureLog(factory)
            self.assertProtocolError(line + frame(b"x"))
            self.assertProtocolError(line + frame(b"x"), chunkSize=3)
            ProxiedConnection(factory).feed(line)
            self.assertEqual([e["why"] for e in events], [why])

    def test_addressProblem(self) -> None:
        """addressProblem names what is wrong with an address from a header, and passes good ones."""
        self.assertIsNone(addressProblem(IPv4Address("TCP", "203.0.113.7", 1)))
        self.assertIsNone(addressProblem(IPv6Address("TCP", "2001:db8::7", 65535)))
        self.assertIsNone(addressProblem(IPv6Address("TCP", "::ffff:203.0.113.7", 0)))
        self.assertIsNone(addressProblem(None))  # LOCAL, UNKNOWN
        self.assertEqual(
            addressProblem(IPv4Address("TCP", "::1", 5)), "IPv6 client address '::1' in a TCP4 PROXY header"
        )
        self.assertEqual(
            addressProblem(IPv6Address("TCP", "10.1.2.3", 5), "destination"),
            "IPv4 destination address '10.1.2.3' in a TCP6 PROXY header",
        )
        self.assertEqual(
            addressProblem(IPv4Address("TCP", "999.1.1.1", 5)),
            "invalid client address '999.1.1.1' in PROXY header",
        )
        self.assertEqual(
            addressProblem(IPv4Address("TCP", "1.1.1.1", 70000)), "invalid client port 70000 in PROXY header"
        )

    def test_badV2(self) -> None:
        """A v2 header with a bad version, command or family is a protocol error."""
        self.assertProtocolError(V2_SIGNATURE + struct.pack("!BBH", 0x31, 0x11, 12) + b"\0" * 12)
        self.assertProtocolError(V2_SIGNATURE + struct.pack("!BBH", 0x2F, 0x11, 12) + b"\0" * 12)
        self.assertProtocolError(V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x41, 12) + b"\0" * 12, 1)

    def test_badV2Blocks(self) -> None:
        """
        A v2 PROXY header whose length does not cover its family's
        addresses, whose TLVs are cut short or run past its end, or whose
        transport is unknown, is a protocol error saying so.
        """
        addresses = v2Header("203.0.113.7", 51234)[16:]
        six = v2Header("2001:db8::7", 1, "2001:db8::1")[16:]
        for header, why in (
            (v2Raw(0x11, addresses[:11]), "PROXY v2 address block of 11 bytes, IPv4 addresses need 12"),
            (v2Raw(0x21, six[:35]), "PROXY v2 address block of 35 bytes, IPv6 addresses need 36"),
            (v2Raw(0x31, b"\0" * 215), "PROXY v2 address block of 215 bytes, UNIX addresses need 216"),
            (v2Raw(0x11, addresses + b"\x04\x00"), "PROXY v2 header ends in 2 bytes that are not a TLV"),
            (
                v2Raw(0x11, addresses + struct.pack("!BH", 0xEA, 6) + b"vpc-1"),
                "TLV 0xea of 6 bytes runs past the end of its PROXY v2 header",
            ),
            (v2Raw(0x13, addresses), "unknown transport protocol 0x3 in PROXY v2 header"),
            (v2Raw(0x41, addresses), "unknown address family 0x4 in PROXY v2 header"),
            (v2Raw(0x11, addresses, versionCommand=0x22), "unknown command 0x2 in PROXY v2 header"),
            # UNSPEC beside a known family or protocol: not one of the spec's seven bytes.
            (
                v2Raw(0x10, b"junk"),
                "address family and protocol 0x10 in PROXY v2 header (UNSPEC with a known one)",
            ),
            (
                v2Raw(0x01, b""),
                "address family and protocol 0x01 in PROXY v2 header (UNSPEC with a known one)",
            ),
        ):
            self.assertProtocolError(header + frame(b"x"), why=why)
            self.assertProtocolError(header + frame(b"x"), chunkSize=7, why=why)

    def test_logLineNamesProxyAndBytes(self) -> None:
        """The log line gives the sender's address and the first bytes it sent."""
        factory = makeFactory()
        events = captureLog(factory)
        ProxiedConnection(factory).feed(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n")
        [event] = events
        self.assertEqual(event["start"], b"SSH-2.0-OpenSSH_9.2p1 De")
        self.assertEqual(event["why"], "invalid PROXY header")

    def test_manyGarbageBoundedLog(self) -> None:
        """A flood of bad headers gives a burst of log lines, then a count; each is closed and counted."""
        factory = makeFactory()
        events = captureLog(factory)
        flood = [ProxiedConnection(factory) for _ in range(200)]
        for connection in flood:
            connection.feed(b"garbage garbage garbage\r\n")
        self.assertTrue(all(c.closing for c in flood))
        self.assertEqual(factory.counters.proxyHeaderErrors, 200)
        self.assertEqual(factory.counters.closedTotal[errors.PROTOCOL_ERROR], 200)
        self.assertEqual(len(events), factory.rateLimitedLog.burst)
        factory.reactor.advance(1)
        ProxiedConnection(factory).feed(b"garbage\r\n\r\n\r\n\r\n\r\n")
        self.assertEqual(events[-1]["suppressed"], 190)


class FilterTests(SynchronousTestCase):
    """Behind haproxy:, the accept filter judges the client named in the header."""

    def test_denyHeaderClient(self) -> None:
        """A denied client from the header is refused, counted and logged by its own address."""
        factory = makeFactory(deny=["203.0.113.0/24"])
        events = captureLog(factory)
        denied, welcome = ProxiedConnection(factory), ProxiedConnection(factory)
        context = denied.context
        denied.feed(v2Header("203.0.113.7", 51234) + frame(b"no"))
        welcome.feed(v2Header("198.51.100.9", 4000) + frame(b"yes"))
        self.assertTrue(denied.closing)
        self.assertEqual(denied.transport.value(), b"")
        self.assertFalse(hasattr(context, "peerAtStart"))  # never connected
        self.assertEqual(welcome.transport.value(), frame(b"yes"))
        denied.lose()
        self.assertEqual(
            (factory.counters.refusedTotal, factory.counters.closedTotal[errors.REFUSED]), (1, 1)
        )
        self.assertEqual((factory.counters.acceptedTotal, factory.onlineCount), (1, 1))
        [event] = events
        self.assertEqual(event["peer"], "203.0.113.7:51234")

    def test_refusedContextHearsNothing(self) -> None:
        """
        A context whose header names a client the filter refuses is never
        told of its connection: no connectionMade, no data, no
        connectionLost -- whether the proxy itself passed the filter when
        the TCP connection arrived or not.  The close is counted once, as
        refused; the context is never online or accepted.
        """
        for deny, header in (
            (["10.0.0.0/8"], v1Header("10.1.2.3", 51234)),  # the proxy (10.0.0.2) is denied too
            (["203.0.113.0/24"], v1Header("203.0.113.7", 51234)),
            (["203.0.113.0/24"], v2Header("203.0.113.7", 51234)),
        ):
            contextClass, calls = callRecorder()
            factory = makeFactory(contextClass, deny=deny)
            connection = ProxiedConnection(factory)
            connection.feed(header + frame(b"no"), chunkSize=5)
            self.assertTrue(connection.closing)
            connection.feed(frame(b"in flight before the abort"))
            connection.lose()
            self.assertEqual(calls, [], deny)
            self.assertEqual(connection.transport.value(), b"")
            self.assertEqual(
                (factory.counters.refusedTotal, factory.counters.closedTotal[errors.REFUSED]), (1, 1)
            )
            self.assertEqual(sum(factory.counters.closedTotal.values()), 1)
            self.assertEqual(
                (factory.counters.acceptedTotal, factory.onlineCount, factory.awaitingProxyHeader), (0, 0, 0)
            )

    def test_admittedContextHearsAll(self) -> None:
        """Next to a refused one, an admitted context is told of its connection as usual, in order."""
        contextClass, calls = callRecorder()
        factory = makeFactory(contextClass, deny=["10.0.0.0/8"])
        admitted = ProxiedConnection(factory)
        admitted.feed(v1Header("198.51.100.9", 4000) + frame(b"yes"))
        contextId = admitted.context.contextId
        admitted.lose()
        self.assertEqual(calls, [("made", contextId), ("data", contextId), ("lost", contextId)])
        self.assertEqual((factory.counters.acceptedTotal, factory.counters.closedTotal[errors.PEER]), (1, 1))

    def test_refusedChatUserNotAnnounced(self) -> None:
        """
        A chat client refused after its header is announced neither joining
        nor leaving: the room hears only its own members.
        """
        factory = ConnectionContextFactory(
            ChatContext, reactor=Clock(), limits=ServerLimits(deny=["10.0.0.0/8"])
        )
        alice, refused = ProxiedConnection(factory), ProxiedConnection(factory)
        alice.feed(v1Header("198.51.100.9", 4000))
        refused.feed(v1Header("10.1.2.3", 51234) + b"hello\n")
        refused.lose()
        aliceId = alice.context.contextId
        self.assertEqual(
            alice.transport.value(), factory.encoder.encode(f"* user{aliceId} joined (id {aliceId})")
        )
        self.assertEqual(factory.counters.refusedTotal, 1)

    def test_allowJudgesClientNotProxy(self) -> None:
        """An allow list without the proxy's address still lets allowed clients in through it."""
        factory = makeFactory(allow=["203.0.113.0/24"])
        allowed, other = ProxiedConnection(factory), ProxiedConnection(factory)
        allowed.feed(v1Header("203.0.113.7", 1) + frame(b"a"))
        other.feed(v1Header("198.51.100.9", 2) + frame(b"b"))
        self.assertEqual(allowed.transport.value(), frame(b"a"))
        self.assertTrue(other.closing)
        self.assertEqual(factory.counters.refusedTotal, 1)

    def test_unixClientRefusedByFilter(self) -> None:
        """
        With --allow or --deny in force, a v2 AF_UNIX header is refused
        rather than judged by the balancer's address -- even where that is
        allowed, as a LOCAL header beside it shows: counted as refused, one
        log line naming the reason, its context told nothing.
        """
        for limits in ({"allow": ["10.0.0.0/8"]}, {"deny": ["192.0.2.0/24"]}):
            contextClass, calls = callRecorder()
            factory = makeFactory(contextClass, **limits)
            events = captureLog(factory)
            unix, local = ProxiedConnection(factory), ProxiedConnection(factory)
            unix.feed(v2Unix() + frame(b"no"), chunkSize=9)
            self.assertTrue(unix.closing)
            unix.feed(frame(b"in flight before the abort"))
            unix.lose()
            local.feed(v2Local() + frame(b"yes"))
            self.assertEqual(unix.transport.value(), b"")
            self.assertEqual(local.transport.value(), frame(b"yes"))
            self.assertEqual(calls, [("made", local.context.contextId), ("data", local.context.contextId)])
            self.assertEqual(
                (factory.counters.refusedTotal, factory.counters.closedTotal[errors.REFUSED]), (1, 1), limits
            )
            self.assertEqual((factory.counters.acceptedTotal, factory.counters.proxyHeaderErrors), (1, 0))
            [event] = events
            self.assertEqual(event["peer"], "10.0.0.2:5555")
            self.assertEqual(
                event["why"], "PROXY header names a UNIX-socket client, which the accept filter cannot judge"
            )

    def test_unixClientAcceptPeerAsksAboutProxy(self) -> None:
        """
        Without --allow / --deny, an overridden acceptPeer is asked about
        the balancer's address for a v2 AF_UNIX header, as for LOCAL, and
        its answer decides.
        """
        asked: list[Any] = []

        class Recording(ConnectionContextFactory):
            def acceptPeer(self, address: Any) -> bool:
                asked.append(address)
                return False

        factory = Recording(EchoContext, reactor=Clock())
        connection = ProxiedConnection(factory)
        connection.feed(v2Unix())
        self.assertEqual(asked[-1], PROXY)
        self.assertTrue(connection.closing)
        self.assertEqual(factory.counters.refusedTotal, 1)

    def test_plainTCPStillFiltered(self) -> None:
        """Without the wrapper, the proxy's address is judged at accept as before."""
        factory = makeFactory(allow=["203.0.113.0/24"])
        protocol = factory.buildProtocol(PROXY)
        transport = StringTransport(peerAddress=PROXY)
        closed: list[str] = []
        transport.abortConnection = lambda: closed.append("abort")  # type: ignore[method-assign]
        protocol.makeConnection(transport)
        self.assertEqual(closed, ["abort"])
        self.assertEqual(factory.counters.refusedTotal, 1)

    def test_acceptPeerSeesHeaderClient(self) -> None:
        """An overridden acceptPeer is asked about the client from the header."""
        asked: list[Any] = []

        class Recording(ConnectionContextFactory):
            def acceptPeer(self, address: Any) -> bool:
                asked.append(address)
                return True

        factory = Recording(EchoContext, reactor=Clock())
        ProxiedConnection(factory).feed(v1Header("203.0.113.7", 1))
        self.assertEqual(asked[-1], IPv4Address("TCP", "203.0.113.7", 1))


def frames(*payloads: bytes) -> bytes:
    return b"".join(frame(p) for p in payloads)


def serveBehindHAProxy(testCase: Any, factory: Any) -> tuple[int, Any]:
    """
    Serve C{factory} on C{haproxy:tcp:0} on loopback until C{testCase}
    ends: its port, and Twisted's C{haproxy:} wrapping factory, which holds
    each connection's wrapper until the wrapper's connectionLost has run.
    """
    from twisted.internet import reactor

    service = SocketServerService(
        factory, ["haproxy:tcp:0:interface=127.0.0.1"], reactor=reactor, shutdownTimeout=5
    )
    service.startService()
    testCase.addCleanup(service.stopService)
    listening = service.ports[0]
    return listening.getHost().port, listening.factory  # type: ignore[attr-defined]


class LoopbackTests(TestCase):
    """A haproxy: listener over real TCP on 127.0.0.1, with hand-built headers."""

    def startServer(
        self, contextClass: type[ConnectionContext] = EchoContext, **limits: Any
    ) -> tuple[ConnectionContextFactory, int]:
        from twisted.internet import reactor

        factory = ConnectionContextFactory(contextClass, reactor=reactor, limits=ServerLimits(**limits))
        port, self.wrapping = serveBehindHAProxy(self, factory)
        return factory, port

    @defer.inlineCallbacks
    def test_echoAndRealAddress(self) -> Any:
        """
        v1 and v2 clients get their echoes; peer, describePeer and
        /connections.json show the header's client.
        """
        from twisted.internet import reactor

        factory, port = self.startServer()
        one, two, six = yield connectRaw(reactor, port, 3)
        one.transport.write(v1Header("203.0.113.7", 51234) + frames(b"one", b"1"))
        two.transport.write(v2Header("198.51.100.20", 4000) + frames(b"two"))
        six.transport.write(v2Header("2001:db8::7", 6000, "2001:db8::1") + frames(b"six"))
        yield waitUntil(
            reactor,
            lambda: (
                (bytes(one.received), bytes(two.received), bytes(six.received))
                == (frames(b"one", b"1"), frames(b"two"), frames(b"six"))
            ),
        )
        peers = sorted(describePeer(c.peer) for c in factory.contexts())
        self.assertEqual(peers, ["198.51.100.20:4000", "203.0.113.7:51234", "[2001:db8:0:0:0:0:0:7]:6000"])
        self.assertEqual(sorted(row["peer"] for row in connections(factory)["connections"]), peers)
        for client in (one, two, six):
            client.transport.loseConnection()
        yield defer.gatherResults([c.lost for c in (one, two, six)])

    @defer.inlineCallbacks
    def test_filterOnHeaderAddress(self) -> Any:
        """
        --allow / --deny apply to the header's client: 127.0.0.1 itself is
        not allowed, yet the allowed client gets in through it.
        """
        from twisted.internet import reactor

        factory, port = self.startServer(allow=["198.51.100.0/24"], deny=["198.51.100.66"])
        events = captureLog(factory)
        allowed, denied, outside = yield connectRaw(reactor, port, 3)
        allowed.transport.write(v1Header("198.51.100.20", 1000) + frames(b"in"))
        denied.transport.write(v1Header("198.51.100.66", 2000) + frames(b"out"))
        outside.transport.write(v2Header("203.0.113.7", 3000) + frames(b"out"))
        received = yield defer.gatherResults([denied.lost, outside.lost])
        self.assertEqual(received, [b"", b""])
        yield waitUntil(reactor, lambda: bytes(allowed.received) == frames(b"in"))
        self.assertEqual(
            (factory.counters.refusedTotal, factory.counters.closedTotal[errors.REFUSED]), (2, 2)
        )
        self.assertEqual(sorted(e["peer"] for e in events), ["198.51.100.66:2000", "203.0.113.7:3000"])
        allowed.transport.loseConnection()
        yield allowed.lost

    @defer.inlineCallbacks
    def test_refusedContextHearsNothing(self) -> Any:
        """
        With --deny 10.0.0.0/8, a header naming 10.1.2.3 gets the client
        closed with nothing echoed; its context is told nothing, not even
        once the server has seen the connection end, and the close is
        counted once, as refused.  An allowed client next to it is echoed.
        """
        from twisted.internet import reactor

        contextClass, calls = callRecorder()
        factory, port = self.startServer(contextClass, deny=["10.0.0.0/8"])
        refused, allowed = yield connectRaw(reactor, port, 2)
        refused.transport.write(v1Header("10.1.2.3", 51234) + frames(b"hi"))
        received = yield refused.lost
        self.assertEqual(received, b"")
        allowed.transport.write(v1Header("198.51.100.9", 4000) + frames(b"in"))
        yield waitUntil(reactor, lambda: bytes(allowed.received) == frames(b"in"))
        # The refused wrapper leaves its factory in its own connectionLost.
        yield waitUntil(reactor, lambda: len(self.wrapping.protocols) == 1)
        [contextId] = factory.online
        self.assertIn(("made", contextId), calls)
        self.assertEqual([call for call in calls if call[1] != contextId], [])  # the refused one: nothing
        self.assertEqual(
            (factory.counters.refusedTotal, factory.counters.closedTotal[errors.REFUSED]), (1, 1)
        )
        self.assertEqual(sum(factory.counters.closedTotal.values()), 1)
        self.assertEqual((factory.counters.acceptedTotal, factory.onlineCount), (1, 1))
        allowed.transport.loseConnection()
        yield allowed.lost

    @defer.inlineCallbacks
    def test_bareUnknown(self) -> Any:
        """A client behind v1 C{PROXY UNKNOWN\\r\\n} is echoed; its peer is the proxy's address."""
        from twisted.internet import reactor

        factory, port = self.startServer()
        together, split = yield connectRaw(reactor, port, 2)
        together.transport.write(b"PROXY UNKNOWN\r\n" + frames(b"one"))
        split.transport.write(b"PROXY UNKNOWN")
        yield waitUntil(reactor, lambda: bytes(together.received) == frames(b"one"))
        split.transport.write(b"\r\n" + frames(b"two"))
        yield waitUntil(reactor, lambda: bytes(split.received) == frames(b"two"))
        mine = sorted(f"127.0.0.1:{c.transport.getHost().port}" for c in (together, split))
        self.assertEqual(sorted(describePeer(c.peer) for c in factory.contexts()), mine)
        self.assertEqual(factory.counters.proxyHeaderErrors, 0)
        for client in (together, split):
            client.transport.loseConnection()
        yield defer.gatherResults([c.lost for c in (together, split)])

    @defer.inlineCallbacks
    def test_unixClientWithoutFilter(self) -> Any:
        """
        Without --allow / --deny, a client behind a v2 AF_UNIX header is
        echoed; its peer, in the context and in /connections.json, is the
        TCP connection's own address (the balancer's), never a UNIX path
        from the header.
        """
        from twisted.internet import reactor

        factory, port = self.startServer()
        [client] = yield connectRaw(reactor, port, 1)
        client.transport.write(v2Unix() + frames(b"unix", b"2"))
        yield waitUntil(reactor, lambda: bytes(client.received) == frames(b"unix", b"2"))
        mine = f"127.0.0.1:{client.transport.getHost().port}"
        [context] = factory.contexts()
        self.assertIsInstance(context.peer, IPv4Address)
        self.assertEqual(describePeer(context.peer), mine)
        self.assertEqual([row["peer"] for row in connections(factory)["connections"]], [mine])
        self.assertEqual((factory.counters.proxyHeaderErrors, factory.counters.refusedTotal), (0, 0))
        client.transport.loseConnection()
        yield client.lost

    @defer.inlineCallbacks
    def test_unixClientRefusedByFilter(self) -> Any:
        """
        With --allow in force (127.0.0.1 itself allowed), a client behind a
        v2 AF_UNIX header is closed with nothing echoed, counted as refused
        and logged once with the reason; its context hears nothing.  A LOCAL
        header and an allowed relayed client beside it are echoed.
        """
        from twisted.internet import reactor

        contextClass, calls = callRecorder()
        factory, port = self.startServer(contextClass, allow=["127.0.0.0/8", "198.51.100.0/24"])
        events = captureLog(factory)
        unix, local, relayed = yield connectRaw(reactor, port, 3)
        unixPeer = f"127.0.0.1:{unix.transport.getHost().port}"
        unix.transport.write(v2Unix() + frames(b"no"))
        received = yield unix.lost
        self.assertEqual(received, b"")
        local.transport.write(v2Local() + frames(b"local"))
        relayed.transport.write(v1Header("198.51.100.20", 1000) + frames(b"relayed"))
        yield waitUntil(
            reactor,
            lambda: (
                (bytes(local.received), bytes(relayed.received)) == (frames(b"local"), frames(b"relayed"))
            ),
        )
        yield waitUntil(reactor, lambda: len(self.wrapping.protocols) == 2)
        self.assertEqual(
            {contextId for _, contextId in calls}, set(factory.online)
        )  # the refused one: nothing
        self.assertEqual(
            (factory.counters.refusedTotal, factory.counters.closedTotal[errors.REFUSED]), (1, 1)
        )
        self.assertEqual((factory.counters.acceptedTotal, factory.counters.proxyHeaderErrors), (2, 0))
        [event] = events
        self.assertEqual(event["peer"], unixPeer)
        self.assertEqual(
            event["why"], "PROXY header names a UNIX-socket client, which the accept filter cannot judge"
        )
        for client in (local, relayed):
            client.transport.loseConnection()
        yield defer.gatherResults([c.lost for c in (local, relayed)])

    @defer.inlineCallbacks
    def test_laxV1LinesRefused(self) -> Any:
        """
        Each v1 line the specification does not allow (ports like C{+80},
        C{1_000}, C{080}, C{65536}; scoped addresses; stray spaces; missing
        fields ...) gets its connection closed with nothing echoed, counted
        as a protocol error and logged (up to the log's burst), while a good
        client beside them keeps being echoed.
        """
        from twisted.internet import reactor

        factory, port = self.startServer()
        events = captureLog(factory)
        good, *bad = yield connectRaw(reactor, port, 1 + len(LAX_V1_LINES))
        good.transport.write(v1Header("203.0.113.7", 51234) + frames(b"first"))
        for client, (line, _) in zip(bad, LAX_V1_LINES, strict=True):
            client.transport.write(line + frames(b"never"))
        received = yield defer.gatherResults([c.lost for c in bad])
        self.assertEqual(received, [b""] * len(bad))
        good.transport.write(frames(b"after"))
        yield waitUntil(reactor, lambda: bytes(good.received) == frames(b"first", b"after"))
        count = len(LAX_V1_LINES)
        self.assertEqual(
            (factory.counters.proxyHeaderErrors, factory.counters.closedTotal[errors.PROTOCOL_ERROR]),
            (count, count),
        )
        self.assertEqual((factory.counters.acceptedTotal, factory.onlineCount), (1, 1))
        self.assertEqual(len(events), min(count, factory.rateLimitedLog.burst))
        self.assertLessEqual({e["why"] for e in events}, {why for _, why in LAX_V1_LINES})
        good.transport.loseConnection()
        yield good.lost

    @defer.inlineCallbacks
    def test_garbageClosedCountedLogged(self) -> Any:
        """A client without a PROXY header is closed, counted as protocol-error and logged once."""
        from twisted.internet import reactor

        factory, port = self.startServer()
        events = captureLog(factory)
        [client] = yield connectRaw(reactor, port, 1)
        client.transport.write(frames(b"I forgot the header"))
        received = yield client.lost
        self.assertEqual(received, b"")
        self.assertEqual(
            (factory.counters.proxyHeaderErrors, factory.counters.closedTotal[errors.PROTOCOL_ERROR]), (1, 1)
        )
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["peer"].split(":")[0], "127.0.0.1")
        self.assertEqual(
            (factory.onlineCount, factory.awaitingProxyHeader, factory.counters.acceptedTotal), (0, 0, 0)
        )

    @defer.inlineCallbacks
    def test_headerNeverSent(self) -> Any:
        """A client that never sends its header is closed by the header timeout, counted as idle."""
        from twisted.internet import reactor

        factory, port = self.startServer(proxyHeaderTimeout=0.3, idleTimeout=2)
        [silent] = yield connectRaw(reactor, port, 1)
        yield waitUntil(reactor, lambda: factory.awaitingProxyHeader == 1)
        self.assertEqual(factory.onlineCount, 0)
        started = reactor.seconds()
        yield silent.lost
        self.assertLess(reactor.seconds() - started, 2)  # the header timeout, not the idle one
        self.assertEqual(
            (factory.counters.proxyHeaderTimeouts, factory.counters.closedTotal[errors.IDLE]), (1, 1)
        )
        self.assertEqual(factory.awaitingProxyHeader, 0)


HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None
)


def freePort() -> int:
    """
    A TCP port free on 127.0.0.1 right now (HAProxy cannot listen on port 0
    and say which port it got).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ChildProcess(protocol.ProcessProtocol):
    """A child whose output is kept; C{ended} fires when it exits."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


def haproxyConfig(frontendPort: int, nodePorts: list[int], statsSocket: str) -> str:
    """An HAProxy config: one TCP frontend, the nodes behind it with PROXY v2 and fast health checks."""
    servers = "\n".join(
        f"  server node{n} 127.0.0.1:{port} send-proxy-v2 check check-send-proxy inter 100ms fall 1 rise 1"
        for n, port in enumerate(nodePorts, 1)
    )
    return f"""\
global
  stats socket {statsSocket} mode 600 level admin

defaults
  mode tcp
  timeout connect 1s
  timeout client 10s
  timeout server 10s
  retries 2
  option redispatch

frontend iocpsvc
  bind 127.0.0.1:{frontendPort}
  default_backend nodes

backend nodes
  balance roundrobin
{servers}
"""


class HAProxyTests(TestCase):
    """Several twistd iocpsvc nodes behind a real HAProxy, all on 127.0.0.1."""

    timeout = 60
    if HAPROXY is None:
        skip = "HAProxy is not installed (.ci/run installs Debian's haproxy package)"

    NODES = 3

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        from twisted.internet import reactor

        self.workdir = temporaryDirectory(self)
        self.nodes: list[tuple[Any, Any]] = []
        for _ in range(self.NODES):
            process, transport = spawnTwistd(
                reactor,
                self.workdir,
                "iocpsvc",
                "--port",
                "haproxy:tcp:0:interface=127.0.0.1",
                "--monitor",
                "tcp:0:interface=127.0.0.1",
            )
            self.addCleanup(self.stop, process.ended, transport)
            self.nodes.append((process, transport))
        self.nodePorts: list[int] = yield defer.gatherResults([p.listening for p, _ in self.nodes])
        self.monitors: list[str] = []
        for process, _ in self.nodes:
            yield waitUntil(reactor, lambda p=process: b"monitor on http://" in bytes(p.output))
            url = bytes(process.output).split(b"monitor on ", 1)[1].split(b" ", 1)[0]
            self.monitors.append(url.decode())
        self.port = freePort()
        self.statsSocket = os.path.join(self.workdir, "haproxy.sock")
        config = os.path.join(self.workdir, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(haproxyConfig(self.port, self.nodePorts, self.statsSocket))
        self.haproxy = ChildProcess()
        transport = reactor.spawnProcess(
            self.haproxy, HAPROXY, [HAPROXY, "-db", "-f", config], env={}, path=self.workdir
        )
        self.addCleanup(self.stop, self.haproxy.ended, transport)
        yield waitUntil(reactor, lambda: os.path.exists(self.statsSocket) or self.haproxy.ended.called, 10)
        self.assertFalse(self.haproxy.ended.called, bytes(self.haproxy.output).decode(errors="replace"))
        yield self.waitForStates({f"node{n}": "UP" for n in range(1, self.NODES + 1)})

    def stop(self, ended: defer.Deferred[Any], transport: Any) -> Any:
        """Kill a child (if still running) and wait until it is gone."""
        try:
            transport.signalProcess("KILL")
        except ProcessExitedAlready:
            pass
        return ended

    @defer.inlineCallbacks
    def serverStates(self) -> Any:
        """HAProxy's view of each node (C{show stat} on its stats socket): name -> status."""
        from twisted.internet import reactor

        client = yield connectProtocol(UNIXClientEndpoint(reactor, self.statsSocket), RawClient())
        client.transport.write(b"show stat\n")
        output = yield client.lost
        lines = output.decode().splitlines()
        columns = lines[0].lstrip("# ").split(",")
        states = {}
        for line in lines[1:]:
            row = dict(zip(columns, line.split(","), strict=False))
            if row.get("pxname") == "nodes" and row.get("svname", "").startswith("node"):
                states[row["svname"]] = row["status"]
        return states

    @defer.inlineCallbacks
    def waitForStates(self, wanted: dict[str, str], timeout: float = 10) -> Any:
        """Poll C{show stat} until every node named in C{wanted} has that status."""
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        started = reactor.seconds()
        states: dict[str, str] = {}
        while True:
            try:
                states = yield self.serverStates()
            except (OSError, ConnectError):
                pass  # HAProxy is still starting
            if all(states.get(name, "").startswith(status) for name, status in wanted.items()):
                return states
            if reactor.seconds() - started > timeout:
                raise AssertionError(f"HAProxy states {states}, wanted {wanted}")
            yield deferLater(reactor, 0.05, lambda: None)

    @defer.inlineCallbacks
    def connectionsOf(self, node: int) -> Any:
        """The rows of node C{node}'s /connections.json."""
        from twisted.internet import reactor

        # HTTP/1.0 by hand: the monitor answers and closes, leaving nothing open.
        port = int(self.monitors[node].rstrip("/").rsplit(":", 1)[1])
        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), RawClient())
        client.transport.write(b"GET /connections.json HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        response = yield client.lost
        head, _, body = response.partition(b"\r\n\r\n")
        self.assertIn(b" 200 ", head.split(b"\r\n", 1)[0])
        return json.loads(body)["connections"]

    def wires(self, count: int) -> list[bytes]:
        return [frames(b"client %d" % n, b"x" * (n * 100), b"end") for n in range(count)]

    @defer.inlineCallbacks
    def test_echoAndRealAddress(self) -> Any:
        """Clients are echoed through HAProxy; the node serving one lists its real address and port."""
        from twisted.internet import reactor

        wires = self.wires(9)
        echoed = yield echoMany(reactor, self.port, wires)
        self.assertEqual(echoed, wires)

        client = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), client)
        self.addCleanup(lambda: client.lost)
        self.addCleanup(client.transport.loseConnection)
        client.transport.write(frames(b"who am I"))
        yield waitUntil(reactor, lambda: bytes(client.received) == frames(b"who am I"))
        mine = f"127.0.0.1:{client.transport.getHost().port}"
        rows = []
        for node in range(self.NODES):
            rows += yield self.connectionsOf(node)
        serving = [row for row in rows if row["peer"] == mine]
        self.assertEqual(len(serving), 1, rows)
        self.assertEqual(serving[0]["bytes_in"], len(frames(b"who am I")))

    @defer.inlineCallbacks
    def test_killedNodeTakenOut(self) -> Any:
        """A killed node is marked DOWN by the health check; new clients are served by the others."""
        from twisted.internet import reactor

        process, transport = self.nodes[0]
        transport.signalProcess("KILL")
        yield process.ended
        states = yield self.waitForStates({"node1": "DOWN", "node2": "UP", "node3": "UP"})
        self.assertEqual(len(states), self.NODES)
        wires = self.wires(8)
        echoed = yield echoMany(reactor, self.port, wires)
        self.assertEqual(echoed, wires)


class HeaderFaultTests(TestCase):
    """
    Over real loopback TCP behind C{haproxy:}: application code that raises
    while a connection is released from the PROXY-header gate, and headers
    that are truncated or malformed, each close their own connection with a
    counted reason and a rate-limited log line; nothing escapes into
    Twisted, nothing is left in the gate, and a good client beside them is
    echoed.
    """

    timeout = 30

    def startServer(
        self, factoryClass: Any = ConnectionContextFactory, contextClass: Any = EchoContext
    ) -> Any:
        from twisted.internet import reactor

        factory = factoryClass(contextClass, reactor=reactor)
        port, self.wrapping = serveBehindHAProxy(self, factory)
        return factory, port

    @defer.inlineCallbacks
    def goodClientBeside(self, port: int) -> Any:
        """A well-behaved client is echoed; it then leaves."""
        from twisted.internet import reactor

        [good] = yield connectRaw(reactor, port, 1)
        good.transport.write(v1Header("198.51.100.9", 4000) + frames(b"fine"))
        yield waitUntil(reactor, lambda: bytes(good.received) == frames(b"fine"))
        good.transport.loseConnection()
        yield good.lost

    @defer.inlineCallbacks
    def test_acceptPeerRaisingOnHeader(self) -> Any:
        """
        An acceptPeer that raises for the header's client closes each such
        connection as a handler-error (handlerErrors, refusedTotal,
        closedTotal), logged rate-limited; its context hears nothing.
        """
        from twisted.internet import reactor

        class Raising(ConnectionContextFactory):
            def acceptPeer(self, address: Any) -> bool:
                if address.host == "203.0.113.66":
                    raise KeyError("bug")
                return True

        contextClass, calls = callRecorder()
        factory, port = self.startServer(Raising, contextClass)
        events = captureLog(factory)
        count = 15
        bad = yield connectRaw(reactor, port, count)
        for index, client in enumerate(bad):
            client.transport.write(v1Header("203.0.113.66", 1000 + index) + frames(b"never"))
        received = yield defer.gatherResults([c.lost for c in bad])
        self.assertEqual(received, [b""] * count)
        yield self.goodClientBeside(port)
        counters = factory.counters
        yield waitUntil(reactor, lambda: len(self.wrapping.protocols) == 0)
        self.assertEqual(
            (counters.handlerErrors, counters.refusedTotal, counters.closedTotal[errors.HANDLER_ERROR]),
            (count, count, count),
        )
        self.assertEqual(
            (counters.acceptedTotal, factory.awaitingProxyHeader, factory.onlineCount), (1, 0, 0)
        )
        self.assertEqual(len([c for c in calls if c[0] == "made"]), 1)  # the good client's only
        self.assertEqual(len(events), factory.rateLimitedLog.burst)
        self.assertEqual({e["closeReason"] for e in events}, {errors.HANDLER_ERROR})

    @defer.inlineCallbacks
    def test_hooksRaisingOnRelease(self) -> Any:
        """
        A context whose connectionMade raises once released, or whose
        objectReceived raises on the bytes that came with the header, is
        closed as a handler-error by the context, counted and logged.
        """
        from twisted.internet import reactor

        class Faulty(EchoContext):
            def connectionMade(self) -> None:
                if self.peer.port == 1:
                    raise KeyError("connectionMade")

            def objectReceived(self, obj: Any) -> None:
                if self.peer.port == 2:
                    raise KeyError("objectReceived")
                super().objectReceived(obj)

        factory, port = self.startServer(contextClass=Faulty)
        events = captureLog(factory)
        made, received = yield connectRaw(reactor, port, 2)
        made.transport.write(v2Header("203.0.113.7", 1) + frames(b"one"))
        received.transport.write(v1Header("203.0.113.7", 2) + frames(b"two"))
        lost = yield defer.gatherResults([made.lost, received.lost])
        self.assertEqual(lost, [b"", b""])
        yield self.goodClientBeside(port)
        counters = factory.counters
        yield waitUntil(reactor, lambda: len(self.wrapping.protocols) == 0)
        self.assertEqual((counters.handlerErrors, counters.closedTotal[errors.HANDLER_ERROR]), (2, 2))
        self.assertEqual((counters.acceptedTotal, counters.refusedTotal), (3, 0))
        self.assertEqual(sorted(e["hook"] for e in events), ["connectionMade", "objectReceived"])

    @defer.inlineCallbacks
    def test_malformedHeadersOverTCP(self) -> Any:
        """
        Truncated and malformed v1 and v2 headers, sent as real bytes: each
        connection closed at once as a protocol-error, counted and logged
        (rate-limited), or, when the client leaves mid-header, counted as
        closed by the peer; the gate is empty after.
        """
        from twisted.internet import reactor

        bad = [
            v2Raw(0x41, b"\0" * 12),  # unknown address family
            v2Raw(0x11, b"\0" * 4),  # IPv4 with a 4-byte block
            v2Raw(0x21, b"\0" * 12),  # IPv6 with an IPv4-sized block
            v2Raw(0x11, b"\0" * 12, versionCommand=0x2F),  # unknown command
            v2Raw(0x11, b"\0" * 12 + b"\x01\x00\x09ab"),  # a TLV past the end
            b"PROXY TCP4 203.0.113.7 192.0.2.1 99999 9983\r\n",  # bad port
            b"PROXY TCP4 203.0.113.7 192.0.2.1 8x 9983\r\n",  # bad port
            b"PROXY TCP4 203.0.113.\xff 192.0.2.1 80 9983\r\n",  # not ASCII
            b"PROXY TCP4 " + b"1" * 120,  # over 107 bytes, no CRLF
        ]
        factory, port = self.startServer()
        events = captureLog(factory)
        clients = yield connectRaw(reactor, port, len(bad))
        for client, header in zip(clients, bad, strict=True):
            client.transport.write(header + frames(b"never"))
        received = yield defer.gatherResults([c.lost for c in clients])
        self.assertEqual(received, [b""] * len(bad))
        # Truncated v2 headers, the client leaving before the rest.
        truncated = yield connectRaw(reactor, port, 2)
        truncated[0].transport.write(v2Header("203.0.113.7", 1)[:20])
        truncated[1].transport.write(V2_SIGNATURE[:7])
        yield waitUntil(reactor, lambda: factory.awaitingProxyHeader == 2)
        for client in truncated:
            client.transport.loseConnection()
        yield defer.gatherResults([c.lost for c in truncated])
        yield self.goodClientBeside(port)
        counters = factory.counters
        yield waitUntil(reactor, lambda: len(self.wrapping.protocols) == 0)
        self.assertEqual(
            (counters.proxyHeaderErrors, counters.closedTotal[errors.PROTOCOL_ERROR]), (len(bad), len(bad))
        )
        self.assertEqual(counters.closedTotal[errors.PEER], 2 + 1)  # the truncated ones, the good one
        self.assertEqual((counters.acceptedTotal, factory.awaitingProxyHeader), (1, 0))
        self.assertEqual(len(events), min(len(bad), factory.rateLimitedLog.burst))
        self.assertEqual({e["closeReason"] for e in events}, {errors.PROTOCOL_ERROR})
