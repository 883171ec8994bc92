"""
Real TCP on 127.0.0.1: hundreds of concurrent connections per framing codec,
Twisted's own receivers as independent peers, and a bad client beside good
ones.
"""

from __future__ import annotations

import random
import re
import struct
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import Int32StringReceiver, LineReceiver, NetstringReceiver
from twisted.trial.unittest import TestCase

from iocpsvc import errors
from iocpsvc.apps import EchoContext
from iocpsvc.factory import ConnectionContextFactory
from tests.helpers import bothImplementations, encodeFrames, startServer
from tests.netutil import echoMany

CONNECTIONS = 200

# spec -> how to make a valid payload for it
FRAMING_CODECS: dict[str, Any] = {
    "length": lambda r: r.randbytes(r.randrange(0, 3000)),
    "length:size=2:order=little": lambda r: r.randbytes(r.randrange(0, 3000)),
    "line": lambda r: r.randbytes(r.randrange(0, 300)).replace(b"\n", b"").replace(b"\r", b""),
    "delimiter:delim=\\r\\n": lambda r: r.randbytes(r.randrange(0, 300)).replace(b"\r", b""),
    "fixed:size=16": lambda r: r.randbytes(16),
    "netstring": lambda r: r.randbytes(r.randrange(0, 3000)),
    "diocp": lambda r: r.randbytes(r.randrange(1, 3000)),
    "hpsocket": lambda r: r.randbytes(r.randrange(1, 3000)),
}


def _testName(spec: str) -> str:
    """C{length:size=2:order=little} -> C{test_length_size_2_order_little}."""
    return "test_" + re.sub(r"[^0-9A-Za-z]+", "_", spec).strip("_")


class EveryFramingCodec:
    """
    One test per framing codec of L{FRAMING_CODECS}, each calling the
    class's C{checkCodec(spec)}: mix into a TestCase that defines it.
    """

    def checkCodec(self, spec: str) -> Any:
        raise NotImplementedError


for _spec in FRAMING_CODECS:

    def _test(self: Any, spec: str = _spec) -> Any:
        return self.checkCodec(spec)

    _test.__name__ = _testName(_spec)
    _test.__doc__ = f"{_spec}: a byte-exact echo."
    setattr(EveryFramingCodec, _test.__name__, _test)
del _spec, _test


class ServerMixin:
    """Start a SocketServerService on 127.0.0.1:0 and stop it after the test."""

    def startServer(
        self, codec: str, contextClass: Any = EchoContext
    ) -> tuple[ConnectionContextFactory, int]:
        factory, port, _ = startServer(self, codec, contextClass)
        return factory, port


class ConcurrentEchoTests(EveryFramingCodec, ServerMixin, TestCase):
    """Every framing codec echoes byte-exact over hundreds of connections."""

    timeout = 120

    @defer.inlineCallbacks
    def checkCodec(self, spec: str) -> Any:
        from twisted.internet import reactor

        factory, port = self.startServer(spec)
        rng = random.Random(spec)
        wires = [
            encodeFrames(spec, [FRAMING_CODECS[spec](rng) for _ in range(rng.randrange(1, 12))])
            for _ in range(CONNECTIONS)
        ]
        received = yield echoMany(reactor, port, wires)
        self.assertEqual(sum(r == w for r, w in zip(received, wires, strict=True)), CONNECTIONS)
        self.assertGreaterEqual(factory.counters.peakOnline, 2)
        self.assertEqual(factory.counters.acceptedTotal, CONNECTIONS)


class _Collecting:
    """Mixin for Twisted receivers: collect strings, fire when enough came."""

    def setUpCollecting(self, expected: int) -> None:
        self.got: list[bytes] = []
        self.expected = expected
        self.finished: defer.Deferred[list[bytes]] = defer.Deferred()

    def collect(self, item: bytes) -> None:
        self.got.append(item)
        if len(self.got) == self.expected:
            self.transport.loseConnection()  # type: ignore[attr-defined]
            self.finished.callback(self.got)


class Int32Peer(_Collecting, Int32StringReceiver):
    MAX_LENGTH = 10_000_000

    def stringReceived(self, string: bytes) -> None:
        self.collect(string)


class LinePeer(_Collecting, LineReceiver):
    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        self.collect(line)


class NetstringPeer(_Collecting, NetstringReceiver):
    def stringReceived(self, string: bytes) -> None:
        self.collect(string)


class TwistedPeerTests(ServerMixin, TestCase):
    """Twisted's own receivers talk to the length, line and netstring codecs."""

    timeout = 60

    @defer.inlineCallbacks
    def exchange(self, spec: str, peerClass: Any, send: str, messages: list[bytes]) -> Any:
        from twisted.internet import reactor

        factory, port = self.startServer(spec)
        peers = []
        for _ in range(50):
            peer = peerClass()
            peer.setUpCollecting(len(messages))
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), peer)
            peers.append(peer)
        for peer in peers:
            for message in messages:
                getattr(peer, send)(message)
        results = yield defer.gatherResults([p.finished for p in peers])
        for result in results:
            self.assertEqual(result, messages)

    def test_int32StringReceiver(self) -> Any:
        """Int32StringReceiver's strings come back through the length codec."""
        return self.exchange("length", Int32Peer, "sendString", [b"", b"a", b"x" * 100_000, b"end"])

    def test_lineReceiver(self) -> Any:
        """LineReceiver's lines come back through the line codec."""
        return self.exchange("line", LinePeer, "sendLine", [b"hello", b"", b"y" * 5000])

    def test_netstringReceiver(self) -> Any:
        """NetstringReceiver's strings come back through the netstring codec."""
        return self.exchange("netstring", NetstringPeer, "sendString", [b"", b"abc", b"z" * 50_000])


class BadClientTests(ServerMixin, TestCase):
    """A decoder error closes only the connection that caused it."""

    timeout = 60

    @defer.inlineCallbacks
    def test_badHeaderClosesOnlyThatConnection(self) -> Any:
        """A 2 GiB length header is cut off; good clients keep their echoes."""
        from twisted.internet import reactor

        factory, port = self.startServer("length")
        bad = protocol.Protocol()
        badLost: defer.Deferred[None] = defer.Deferred()
        bad.connectionLost = lambda reason: badLost.callback(None)  # type: ignore[method-assign]
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), bad)
        good = [struct.pack(">I", 5) + b"hello" * 1 + struct.pack(">I", 3) + b"abc"] * 20
        echoing = echoMany(reactor, port, good)
        bad.transport.write(struct.pack(">I", 2**31) + b"\x00" * 100)  # type: ignore[attr-defined]
        yield badLost
        received = yield echoing
        self.assertEqual(received, good)
        self.assertEqual(factory.counters.closedTotal[errors.FRAME_TOO_LONG], 1)
        self.assertEqual(factory.counters.decodeErrors, 1)


def largestPayload(spec: str) -> int:
    """
    The largest payload C{spec}'s encoder takes and its decoder gives back
    whole (found by bisection, since codecs count headers and delimiters
    against their maximum differently).
    """
    from iocpsvc.codecs import parseCodecSpec
    from iocpsvc.errors import DecodeError, EncodeError
    from tests.helpers import encodedBytes

    codec = parseCodecSpec(spec)

    def fits(size: int) -> bool:
        payload = b"p" * size
        try:
            wire = encodedBytes(codec.encoder.encode(payload))
            out: list[object] = []
            consumed = codec.newDecoder().decode(wire, out)
        except (EncodeError, DecodeError):
            return False
        return out == [payload] and consumed == len(wire)

    # An empty payload may not come back (diocp's keep-alive): start at 1.
    low = 0 if fits(0) else 1
    if not fits(low):  # one size only (fixed): a small maximum, searched in full
        return max(size for size in range(codec.maxFrameLength + 1) if fits(size))
    high = codec.maxFrameLength + 1  # fits(low); not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


class _WholeEcho(protocol.Protocol):
    """Sends C{wire} at once and fires C{done} with what came back, once all of it has."""

    def __init__(self, wire: bytes) -> None:
        self.wire = wire
        self.received = bytearray()
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.wire)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= len(self.wire):
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(bytes(self.received))


class LargestFrameTests(EveryFramingCodec, ServerMixin, TestCase):
    """
    The largest legal frame of every framing codec is echoed with the
    default limits: the default max pending write leaves room for it.
    """

    timeout = 120

    @defer.inlineCallbacks
    def checkCodec(self, spec: str) -> Any:
        from twisted.internet import reactor

        factory, port = self.startServer(spec)
        self.assertIsNone(factory.limits.maxPendingWrite)  # the default, derived
        size = largestPayload(spec)
        if spec.startswith("fixed"):
            self.assertEqual(size, 16)
        else:
            # Within a header of the maximum, or of what a 2-byte length field holds.
            self.assertGreater(size, min(factory.maxFrameLength, 65535) - 16)  # type: ignore[type-var]
        # Printable bytes: no line end or delimiter in the payload.
        pattern = bytes(range(32, 127))
        wire = encodeFrames(spec, [(pattern * (size // len(pattern) + 1))[:size]])
        client = _WholeEcho(wire)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        received = yield client.done
        self.assertEqual(len(received), len(wire))
        self.assertEqual(received, wire)
        self.assertEqual(factory.counters.closedTotal[errors.SLOW_CLIENT], 0)


# Every test above, again on the pure-Python implementation (iocpsvc.accel).
bothImplementations(globals())
