"""
Tests for L{iocpsvc.codecs.netstring}: the module docstring's examples and
error table, fail-fast limits, sticky and half packets, the encoder, and
interop with Twisted's NetstringReceiver -- including refusing what it
refuses.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import NetstringReceiver
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from iocpsvc.codecs import netstring as netstringmodule
from iocpsvc.codecs import parseCodecSpec
from iocpsvc.codecs.netstring import NetstringDecoder, NetstringEncoder
from iocpsvc.errors import (
    CodecSpecError,
    CorruptFrame,
    DecodeError,
    EncodeError,
    FrameTooLong,
)
from iocpsvc.interfaces import IDecoder, IEncoder
from tests.helpers import bothImplementations, cutAt, decodeOnce, encodedBytes, feedChunks


def twistedVerdict(wire: bytes, maximum: int) -> tuple[list[bytes], bool]:
    """
    What NetstringReceiver makes of C{wire}, fed one byte at a time: the
    strings it received and whether it dropped the connection.
    """
    received: list[bytes] = []
    receiver = NetstringReceiver()
    receiver.MAX_LENGTH = maximum
    receiver.stringReceived = received.append  # type: ignore[method-assign]
    transport = StringTransport()
    receiver.makeConnection(transport)
    for i in range(len(wire)):
        receiver.dataReceived(wire[i : i + 1])
        if receiver.brokenPeer:
            break
    return received, bool(receiver.brokenPeer)


def ourVerdict(wire: bytes, maximum: int) -> tuple[list[bytes], bool]:
    """The same, for our decoder."""
    decoder = NetstringDecoder(maximum)
    buffer = bytearray()
    out: list[object] = []
    try:
        for i in range(len(wire)):
            buffer += wire[i : i + 1]
            del buffer[: decoder.decode(buffer, out)]
    except DecodeError:
        return out, True  # type: ignore[return-value]
    return out, False  # type: ignore[return-value]


class DocExampleTests(SynchronousTestCase):
    """The examples in the module docstring."""

    def test_twoFrames(self) -> None:
        """Two netstrings in 11 bytes: "HELLO" and the empty string."""
        wire = b"5:HELLO,0:,"
        self.assertEqual(len(wire), 11)
        self.assertEqual(decodeOnce(NetstringDecoder(), wire), ([b"HELLO", b""], 11))

    def test_headerConsumed(self) -> None:
        """Of "12:HE", the header is consumed; the rest waits."""
        decoder = NetstringDecoder()
        self.assertEqual(decodeOnce(decoder, b"12:HE"), ([], 3))
        self.assertEqual(decodeOnce(decoder, b"HELLO, WORL"), ([], 0))
        self.assertEqual(decodeOnce(decoder, b"HELLO, WORLD"), ([], 0))
        self.assertEqual(decodeOnce(decoder, b"HELLO, WORLD,"), ([b"HELLO, WORLD"], 13))

    def test_errorTable(self) -> None:
        """Each row of the docstring's failure table, raised at once."""
        for wire, error in (
            (b"05:HELLO,", CorruptFrame),
            (b":HELLO,", CorruptFrame),
            (b"5x", CorruptFrame),
            (b"5:HELLO;", CorruptFrame),
            (b"2000000", FrameTooLong),
        ):
            with self.assertRaises(error, msg=wire):
                NetstringDecoder().decode(wire, [])

    def test_errorsAreProtocolErrors(self) -> None:
        """A corrupt netstring closes as protocol-error; a long one not."""
        with self.assertRaises(CorruptFrame) as caught:
            NetstringDecoder().decode(b"1:ab", [])
        self.assertEqual(caught.exception.closeReason, "protocol-error")
        with self.assertRaises(FrameTooLong) as tooLong:
            NetstringDecoder(10).decode(b"11:", [])
        self.assertEqual(tooLong.exception.closeReason, "frame-too-long")
        self.assertEqual(tooLong.exception.length, 11)


class DecoderTests(SynchronousTestCase):
    """Splitting netstrings."""

    def test_providesIDecoder(self) -> None:
        """The decoder provides IDecoder, with a 1 MiB default maximum."""
        self.assertTrue(IDecoder.providedBy(NetstringDecoder()))
        self.assertTrue(IEncoder.providedBy(NetstringEncoder()))
        self.assertEqual(NetstringDecoder().maxFrameLength, 1024 * 1024)

    def test_framesAreBytes(self) -> None:
        """Frames are bytes whether the buffer is bytes or bytearray."""
        for data in (b"1:a,", bytearray(b"1:a,2:bc,")):
            out, _ = decodeOnce(NetstringDecoder(), data)
            for frame in out:
                self.assertIs(type(frame), bytes)

    def test_stickyPackets(self) -> None:
        """Thousands of netstrings in one read decode in one call."""
        frames = [bytes([i % 256]) * (i % 23) for i in range(5000)]
        wire = b"".join(b"%d:%s," % (len(f), f) for f in frames)
        self.assertEqual(decodeOnce(NetstringDecoder(), wire), (frames, len(wire)))
        self.assertEqual(decodeOnce(NetstringDecoder(), bytearray(wire)), (frames, len(wire)))

    def test_halfPacketsAtEverySplit(self) -> None:
        """Any split of three netstrings into two reads yields all three."""
        wire = b"3:abc,0:,10:0123456789,"
        for cut in range(len(wire) + 1):
            chunks = [wire[:cut], wire[cut:]]
            self.assertEqual(feedChunks(NetstringDecoder(), chunks), [b"abc", b"", b"0123456789"])

    def test_oneByteAtATime(self) -> None:
        """Fed one byte per read, every netstring arrives once."""
        wire = b"5:a:b,c,0:,1:,,"
        chunks = [wire[i : i + 1] for i in range(len(wire))]
        self.assertEqual(feedChunks(NetstringDecoder(), chunks), [b"a:b,c", b"", b","])

    def test_bigFrameInSmallChunks(self) -> None:
        """A 1 MiB netstring fed 1000 bytes at a time arrives whole, once."""
        payload = bytes(range(256)) * 4096
        wire = b"%d:%s," % (len(payload), payload)
        chunks = [wire[i : i + 1000] for i in range(0, len(wire), 1000)]
        self.assertEqual(feedChunks(NetstringDecoder(), chunks), [payload])

    def test_framesBeforeErrorAreDelivered(self) -> None:
        """Netstrings before a bad one are appended before the error."""
        out: list[object] = []
        decoder = NetstringDecoder()
        self.assertRaises(CorruptFrame, decoder.decode, b"1:a,2:bc,x", out)
        self.assertEqual(out, [b"a", b"bc"])

    def test_decodeLastDiscards(self) -> None:
        """An unfinished netstring is discarded at the end of the stream."""
        self.assertEqual(NetstringDecoder().decodeLast(b"5:abc"), [])

    def test_badMaximum(self) -> None:
        """A maximum of 0 is refused."""
        self.assertRaises(ValueError, NetstringDecoder, 0)


class LimitTests(SynchronousTestCase):
    """Failing fast on long netstrings."""

    def test_exactlyMax(self) -> None:
        """A payload of exactly max bytes passes."""
        self.assertEqual(decodeOnce(NetstringDecoder(5), b"5:abcde,"), ([b"abcde"], 8))

    def test_tooLongBeforeColon(self) -> None:
        """Digits worth more than max raise before the colon arrives."""
        decoder = NetstringDecoder()
        self.assertEqual(decodeOnce(decoder, b"104857"), ([], 0))
        self.assertEqual(decodeOnce(decoder, b"1048576"), ([], 0))
        with self.assertRaises(FrameTooLong) as caught:
            decoder.decode(b"1048577", [])
        self.assertEqual(caught.exception.length, 1048577)
        self.assertEqual(caught.exception.maximum, 1048576)

    def test_tooManyDigits(self) -> None:
        """More digits than max has raise without reading them all."""
        with self.assertRaises(FrameTooLong) as caught:
            NetstringDecoder(99999).decode(b"1" + b"0" * 100000, [])
        self.assertEqual(caught.exception.length, 100000)

    def test_leadingZeroPartial(self) -> None:
        """ "0" may start "0:", but "00" is refused at once."""
        self.assertEqual(decodeOnce(NetstringDecoder(), b"0"), ([], 0))
        self.assertRaises(CorruptFrame, NetstringDecoder().decode, b"00", [])
        self.assertRaises(CorruptFrame, NetstringDecoder().decode, b"01", [])


class EncoderTests(SynchronousTestCase):
    """NetstringEncoder."""

    def test_small(self) -> None:
        """A small payload is one bytes: length, colon, payload, comma."""
        self.assertEqual(NetstringEncoder().encode(b"HELLO"), b"5:HELLO,")
        self.assertEqual(NetstringEncoder().encode(b""), b"0:,")

    def test_largePayloadIsNotCopied(self) -> None:
        """A payload over 4 KiB goes out as its own chunk, the same object."""
        payload = b"x" * 5000
        header, body, comma = NetstringEncoder().encode(payload)
        self.assertEqual((header, comma), (b"5000:", b","))
        self.assertIs(body, payload)
        self.assertIsInstance(NetstringEncoder().encode(b"x" * 4096), bytes)

    def test_nonBytes(self) -> None:
        """bytearray is copied, IEncoder providers used, others refused."""

        @implementer(IEncoder)
        class Ping:
            def encode(self, obj: object) -> list[bytes]:
                return [b"pi", b"ng"]

        self.assertEqual(NetstringEncoder().encode(bytearray(b"ab")), b"2:ab,")
        self.assertEqual(NetstringEncoder().encode(Ping()), b"4:ping,")
        self.assertRaises(EncodeError, NetstringEncoder().encode, 1.5)


class SpecTests(SynchronousTestCase):
    """netstring named in spec strings."""

    def test_plugin(self) -> None:
        """The module's plugin is the framer "netstring"."""
        self.assertEqual(netstringmodule.plugin.name, "netstring")
        self.assertEqual(netstringmodule.plugin.kind, "framer")

    def test_maxPrecedence(self) -> None:
        """The spec's max beats --max-frame-length, which beats 1 MiB."""
        self.assertEqual(parseCodecSpec("netstring").maxFrameLength, 1024 * 1024)
        self.assertEqual(parseCodecSpec("netstring", 500).maxFrameLength, 500)
        self.assertEqual(parseCodecSpec("netstring:max=99999", 500).maxFrameLength, 99999)

    def test_badSpecs(self) -> None:
        """A zero or malformed max, or an unknown parameter, is refused."""
        for spec in ("netstring:max=0", "netstring:max=x", "netstring:size=2"):
            self.assertRaises(CodecSpecError, parseCodecSpec, spec)


class NetstringReceiverInteropTests(SynchronousTestCase):
    """Twisted's NetstringReceiver as a peer."""

    def test_twistedToUs(self) -> None:
        """What NetstringReceiver.sendString writes, we decode."""
        sender = NetstringReceiver()
        transport = StringTransport()
        sender.makeConnection(transport)
        messages = [b"a", b"", b"5:x,", b"z" * 70000]
        for message in messages:
            sender.sendString(message)
        wire = transport.value()
        for chunks in ([wire], cutAt(wire, range(0, len(wire), 9))):
            self.assertEqual(feedChunks(NetstringDecoder(), chunks), messages)

    def test_usToTwisted(self) -> None:
        """What we encode, NetstringReceiver.stringReceived gets intact."""
        received: list[bytes] = []
        receiver = NetstringReceiver()
        receiver.stringReceived = received.append  # type: ignore[method-assign]
        receiver.makeConnection(StringTransport())
        messages = [b"one", b"", b"x" * 5000, b"3:abc,"]
        for message in messages:
            receiver.dataReceived(encodedBytes(NetstringEncoder().encode(message)))
        self.assertEqual(received, messages)
        self.assertFalse(receiver.brokenPeer)

    def test_sameVerdicts(self) -> None:
        """
        For valid and invalid streams alike, NetstringReceiver and our
        decoder receive the same strings and agree on refusing the stream.
        """
        for wire in (
            b"0:,",
            b"00:,",
            b"01:a,",
            b":,",
            b"1x",
            b"1:ab",
            b"-1:a,",
            b" 1:a,",
            b"+1:a,",
            b"1_0:0123456789,",
            b"99999:",
            b"100000:",
            b"999999",
            b"1:a,2:bc,3:d",
            b"\xd9\xa1:a,",
            b"3:abc,x",
        ):
            self.assertEqual(ourVerdict(wire, 99999), twistedVerdict(wire, 99999), wire)


class PropertyTests(SynchronousTestCase):
    """Chunking never changes what decodes."""

    @settings(max_examples=200, deadline=None)
    @given(
        frames=st.lists(st.binary(max_size=300), max_size=20),
        cuts=st.lists(st.integers(min_value=0, max_value=8000), max_size=30),
    )
    def test_anyChunking(self, frames: list[bytes], cuts: list[int]) -> None:
        """Any frames, encoded and cut anywhere, decode to the same frames."""
        wire = b"".join(encodedBytes(NetstringEncoder().encode(f)) for f in frames)
        self.assertEqual(feedChunks(NetstringDecoder(), cutAt(wire, cuts)), frames)

    @settings(max_examples=200, deadline=None)
    @given(wire=st.binary(max_size=40).map(lambda b: bytes(b"0123:,ab"[x % 8] for x in b)))
    def test_agreesWithTwisted(self, wire: bytes) -> None:
        """On any stream of digits, colons and commas, we agree with Twisted."""
        self.assertEqual(ourVerdict(wire, 500), twistedVerdict(wire, 500))


# Every test above, again on the pure-Python implementation (iocpsvc.accel).
bothImplementations(globals())
