"""
Tests for L{iocpsvc.codecs.length}: Netty's seven documented configurations,
fail-fast limits, the prepender, and interop with Twisted's Int32StringReceiver.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import Int16StringReceiver, Int32StringReceiver
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.codecs import parseCodecSpec
from iocpsvc.codecs.length import LengthFieldDecoder, LengthFieldPrepender
from iocpsvc.errors import CodecSpecError, CorruptFrame, EncodeError, FrameTooLong
from tests.helpers import bothImplementations, cutAt, decodeOnce, encodedBytes, feedChunks

HELLO = b"HELLO, WORLD"


class NettyExamplesTests(SynchronousTestCase):
    """
    The seven configurations drawn in the javadoc of Netty's
    LengthFieldBasedFrameDecoder, byte for byte.
    """

    def check(self, spec: str, wire: bytes, expected: bytes) -> None:
        codec = parseCodecSpec(spec)
        for chunk in (1, 2, 3, len(wire)):
            chunks = [wire[i : i + chunk] for i in range(0, len(wire), chunk)]
            self.assertEqual(feedChunks(codec.newDecoder(), chunks), [expected])
        out, consumed = decodeOnce(codec.newDecoder(), wire + wire[:5])
        self.assertEqual((out, consumed), ([expected], len(wire)))

    def test_example1KeepHeader(self) -> None:
        """2-byte length, offset 0, strip 0: the frame keeps its header."""
        wire = b"\x00\x0c" + HELLO
        self.check("length:size=2:strip=0", wire, wire)

    def test_example2StripHeader(self) -> None:
        """2-byte length, strip 2: only the content is delivered."""
        self.check("length:size=2:strip=2", b"\x00\x0c" + HELLO, HELLO)

    def test_example3LengthCountsHeader(self) -> None:
        """2-byte length that counts itself: adjust=-2."""
        wire = b"\x00\x0e" + HELLO
        self.check("length:size=2:adjust=-2:strip=0", wire, wire)

    def test_example4HeaderBeforeLength(self) -> None:
        """A 2-byte header, then a 3-byte length: offset=2, size=3."""
        wire = b"\xca\xfe" + b"\x00\x00\x0c" + HELLO
        self.check("length:offset=2:size=3:strip=0", wire, wire)

    def test_example5HeaderAfterLength(self) -> None:
        """A 3-byte length, then a 2-byte header it does not count: adjust=2."""
        wire = b"\x00\x00\x0c" + b"\xca\xfe" + HELLO
        decoder = LengthFieldDecoder(lengthFieldLength=3, lengthAdjustment=2, initialBytesToStrip=0)
        self.assertEqual(decodeOnce(decoder, wire), ([wire], len(wire)))

    def test_example6TwoHeadersStripFirst(self) -> None:
        """HDR1, 2-byte length, HDR2: offset 1, adjust 1, strip 3 keeps HDR2."""
        wire = b"\xca" + b"\x00\x0c" + b"\xfe" + HELLO
        decoder = LengthFieldDecoder(
            lengthFieldOffset=1,
            lengthFieldLength=2,
            lengthAdjustment=1,
            initialBytesToStrip=3,
        )
        self.assertEqual(decodeOnce(decoder, wire), ([b"\xfe" + HELLO], len(wire)))

    def test_example7LengthCountsWholeMessage(self) -> None:
        """As example 6, but the length counts the whole message: adjust -3."""
        wire = b"\xca" + b"\x00\x10" + b"\xfe" + HELLO
        decoder = LengthFieldDecoder(
            lengthFieldOffset=1,
            lengthFieldLength=2,
            lengthAdjustment=-3,
            initialBytesToStrip=3,
        )
        self.assertEqual(decodeOnce(decoder, wire), ([b"\xfe" + HELLO], len(wire)))


class DecoderTests(SynchronousTestCase):
    """Splitting, limits and malformed headers."""

    def test_defaultIsInt32BigEndianExcludingHeader(self) -> None:
        """C{length} alone is a 4-byte big-endian length excluding itself."""
        wire = struct.pack(">I", 5) + b"hello" + struct.pack(">I", 0)
        self.assertEqual(decodeOnce(parseCodecSpec("length").newDecoder(), wire), ([b"hello", b""], 13))

    def test_stickyPackets(self) -> None:
        """Thousands of frames in one chunk decode in one call."""
        frames = [bytes([i % 256]) * (i % 17) for i in range(5000)]
        wire = b"".join(struct.pack(">I", len(f)) + f for f in frames)
        out, consumed = decodeOnce(LengthFieldDecoder(), wire)
        self.assertEqual((out, consumed), (frames, len(wire)))

    def test_halfPacketsAtEverySplit(self) -> None:
        """Any split of two frames into two reads yields both frames."""
        wire = struct.pack(">I", 3) + b"abc" + struct.pack(">I", 2) + b"de"
        for cut in range(len(wire) + 1):
            self.assertEqual(feedChunks(LengthFieldDecoder(), [wire[:cut], wire[cut:]]), [b"abc", b"de"])

    def test_littleEndianAndSizes(self) -> None:
        """Sizes 1, 2, 3, 4 and 8 in both byte orders."""
        for size in (1, 2, 3, 4, 8):
            for order in ("big", "little"):
                codec = parseCodecSpec(f"length:size={size}:order={order}")
                wire = (7).to_bytes(size, order) + b"payload"
                self.assertEqual(decodeOnce(codec.newDecoder(), wire), ([b"payload"], len(wire)))
                self.assertEqual(encodedBytes(codec.encoder.encode(b"payload")), wire)

    def test_tooLongFailsAtHeader(self) -> None:
        """A 2 GiB header raises FrameTooLong with only the header received."""
        decoder = LengthFieldDecoder(maxFrameLength=1024)
        with self.assertRaises(FrameTooLong) as caught:
            decoder.decode(struct.pack(">I", 2**31), [])
        self.assertEqual(caught.exception.length, 2**31 + 4)
        self.assertEqual(caught.exception.closeReason, "frame-too-long")

    def test_maxCountsWholeFrame(self) -> None:
        """As in Netty, max bounds the whole frame, header included."""
        decoder = LengthFieldDecoder(maxFrameLength=8)
        self.assertEqual(decodeOnce(decoder, struct.pack(">I", 4) + b"abcd"), ([b"abcd"], 8))
        self.assertRaises(FrameTooLong, decoder.decode, struct.pack(">I", 5), [])

    def test_framesBeforeErrorAreDelivered(self) -> None:
        """Frames before a bad header are appended before the error."""
        out: list[object] = []
        wire = struct.pack(">I", 1) + b"a" + struct.pack(">I", 2**30)
        self.assertRaises(FrameTooLong, LengthFieldDecoder().decode, wire, out)
        self.assertEqual(out, [b"a"])

    def test_negativeSignedLength(self) -> None:
        """With signed=true a negative length is a protocol error."""
        decoder = parseCodecSpec("length:signed=true").newDecoder()
        with self.assertRaises(CorruptFrame) as caught:
            decoder.decode(struct.pack(">i", -1), [])
        self.assertEqual(caught.exception.closeReason, "protocol-error")

    def test_adjustedLengthShorterThanHeader(self) -> None:
        """A length that, adjusted, ends inside the header is corrupt."""
        decoder = LengthFieldDecoder(lengthFieldLength=2, lengthAdjustment=-2, initialBytesToStrip=0)
        self.assertRaises(CorruptFrame, decoder.decode, b"\x00\x01", [])

    def test_stripBeyondFrame(self) -> None:
        """A frame shorter than the bytes to strip is corrupt."""
        decoder = LengthFieldDecoder(lengthFieldLength=1, initialBytesToStrip=5)
        self.assertRaises(CorruptFrame, decoder.decode, b"\x01x", [])

    def test_decodeLastDiscards(self) -> None:
        """A partial frame at the end of the stream yields nothing."""
        self.assertEqual(LengthFieldDecoder().decodeLast(b"\x00\x00\x00\x05ab"), [])

    def test_bigFrameInSmallChunks(self) -> None:
        """A 1 MiB frame fed 100 bytes at a time arrives whole, once."""
        payload = bytes(range(256)) * 4096
        wire = struct.pack(">I", len(payload)) + payload
        chunks = [wire[i : i + 100] for i in range(0, len(wire), 100)]
        self.assertEqual(feedChunks(LengthFieldDecoder(maxFrameLength=2 * 2**20), chunks), [payload])


class EncoderTests(SynchronousTestCase):
    """The prepender and the whole-frame encoder."""

    def test_prependsLength(self) -> None:
        """The default encoder writes a 4-byte big-endian length."""
        self.assertEqual(LengthFieldPrepender().encode(b"abc"), b"\x00\x00\x00\x03abc")

    def test_largePayloadIsNotCopied(self) -> None:
        """A large payload goes out as its own chunk, the same object."""
        payload = b"x" * 100_000
        header, body = LengthFieldPrepender().encode(payload)
        self.assertIs(body, payload)
        self.assertEqual(header, struct.pack(">I", 100_000))

    def test_adjustIncludesHeader(self) -> None:
        """adjust=-2 with size 2 writes a length that counts the header."""
        codec = parseCodecSpec("length:size=2:adjust=-2")
        self.assertEqual(codec.encoder.encode(HELLO), b"\x00\x0e" + HELLO)
        self.assertEqual(decodeOnce(codec.newDecoder(), b"\x00\x0e" + HELLO), ([HELLO], 14))

    def test_fieldOverflow(self) -> None:
        """A payload too long for the field cannot be encoded."""
        self.assertRaises(EncodeError, LengthFieldPrepender(1).encode, b"x" * 256)

    def test_wholeFrameEncoder(self) -> None:
        """With strip=0 frames go out as written, once their field checks out."""
        codec = parseCodecSpec("length:size=2:strip=0")
        wire = b"\x00\x0c" + HELLO
        self.assertEqual(codec.encoder.encode(wire), wire)
        self.assertRaises(EncodeError, codec.encoder.encode, b"\x00\x0d" + HELLO)

    def test_unencodableConfigurationRefused(self) -> None:
        """A header that strip loses cannot be re-created: refused at build."""
        self.assertRaises(CodecSpecError, parseCodecSpec, "length:offset=1:size=2:strip=3")

    def test_signedFieldHalfRange(self) -> None:
        """With signed=true the encoder never writes a length read back as negative."""
        codec = parseCodecSpec("length:size=1:signed=true")
        self.assertEqual(codec.encoder.encode(b"x" * 127)[:1], b"\x7f")
        self.assertRaises(EncodeError, codec.encoder.encode, b"x" * 128)

    def test_rejectsNonBytes(self) -> None:
        """Objects that are not bytes and have no adapter are refused."""
        self.assertRaises(EncodeError, LengthFieldPrepender().encode, 42)


class Int32InteropTests(SynchronousTestCase):
    """Twisted's own Int32StringReceiver and Int16StringReceiver as peers."""

    def test_twistedToUs(self) -> None:
        """What Int32StringReceiver.sendString writes, the default decodes."""
        sender = Int32StringReceiver()
        transport = StringTransport()
        sender.makeConnection(transport)
        for message in (b"a", b"", b"z" * 70000):
            sender.sendString(message)
        out, _ = decodeOnce(parseCodecSpec("length:max=1MiB").newDecoder(), transport.value())
        self.assertEqual(out, [b"a", b"", b"z" * 70000])

    def test_usToTwisted(self) -> None:
        """What the default encodes, Int32StringReceiver and Int16 read."""
        for spec, receiverClass in (("length", Int32StringReceiver), ("length:size=2", Int16StringReceiver)):
            received: list[bytes] = []
            receiver = receiverClass()
            receiver.stringReceived = received.append  # type: ignore[method-assign]
            receiver.makeConnection(StringTransport())
            encoder = parseCodecSpec(spec).encoder
            for message in (b"one", b"", b"x" * 5000):
                receiver.dataReceived(encodedBytes(encoder.encode(message)))
            self.assertEqual(received, [b"one", b"", b"x" * 5000])


class PropertyTests(SynchronousTestCase):
    """Chunking never changes what decodes."""

    @settings(max_examples=200, deadline=None)
    @given(
        frames=st.lists(st.binary(max_size=300), max_size=20),
        cuts=st.lists(st.integers(min_value=0, max_value=8000), max_size=20),
        spec=st.sampled_from(
            [
                "length",
                "length:size=2:order=little",
                "length:size=3",
                "length:size=1:adjust=-1",
                "length:size=8",
            ]
        ),
    )
    def test_anyChunking(self, frames: list[bytes], cuts: list[int], spec: str) -> None:
        """Any frames, encoded and cut anywhere, decode to the same frames."""
        codec = parseCodecSpec(spec)
        if spec.startswith("length:size=1"):
            frames = [f[:200] for f in frames]
        wire = b"".join(encodedBytes(codec.encoder.encode(f)) for f in frames)
        self.assertEqual(feedChunks(codec.newDecoder(), cutAt(wire, cuts)), frames)


# Every test above, again on the pure-Python implementation (iocpsvc.accel).
bothImplementations(globals())
