"""
Tests for L{iocpsvc.codecs.fixed}: the module docstring's examples, sticky
and half packets, the encoder's size check, and the spec.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.codecs import fixed as fixedmodule
from iocpsvc.codecs import parseCodecSpec
from iocpsvc.codecs.fixed import FixedLengthDecoder, FixedLengthEncoder
from iocpsvc.errors import CodecSpecError, EncodeError
from iocpsvc.interfaces import IDecoder, IEncoder
from tests.helpers import bothImplementations, cutAt, decodeOnce, feedChunks


class DocExampleTests(SynchronousTestCase):
    """The examples drawn in the module docstring."""

    def test_threeFrames(self) -> None:
        """size=3: nine bytes in any number of reads are three frames."""
        wire = b"ABCDEFGHI"
        expected = [b"ABC", b"DEF", b"GHI"]
        self.assertEqual(decodeOnce(FixedLengthDecoder(3), wire), (expected, 9))
        for cut in range(len(wire) + 1):
            chunks = [wire[:cut], wire[cut:]]
            self.assertEqual(feedChunks(FixedLengthDecoder(3), chunks), expected)

    def test_partialFrameStays(self) -> None:
        """size=3: of four bytes, one frame; the fourth byte stays buffered."""
        self.assertEqual(decodeOnce(FixedLengthDecoder(3), b"ABCD"), ([b"ABC"], 3))


class DecoderTests(SynchronousTestCase):
    """Splitting into fixed-length frames."""

    def test_providesIDecoder(self) -> None:
        """The decoder provides IDecoder; its maximum is the frame size."""
        decoder = FixedLengthDecoder(64)
        self.assertTrue(IDecoder.providedBy(decoder))
        self.assertEqual(decoder.maxFrameLength, 64)
        self.assertTrue(IEncoder.providedBy(FixedLengthEncoder(64)))

    def test_needMoreBytes(self) -> None:
        """Fewer bytes than a frame consume nothing."""
        self.assertEqual(decodeOnce(FixedLengthDecoder(4), b"abc"), ([], 0))
        self.assertEqual(decodeOnce(FixedLengthDecoder(4), b""), ([], 0))

    def test_stickyPackets(self) -> None:
        """Ten thousand 4-byte frames in one read decode in one call."""
        frames = [i.to_bytes(4, "big") for i in range(10000)]
        wire = b"".join(frames)
        for data in (wire, bytearray(wire), wire + b"xy", bytearray(wire + b"xyz")):
            out, consumed = decodeOnce(FixedLengthDecoder(4), data)
            self.assertEqual((out, consumed), (frames, len(wire)))

    def test_framesAreBytes(self) -> None:
        """Frames are bytes whether the buffer is bytes or bytearray."""
        for data in (b"abcd", bytearray(b"abcd"), b"abcdefgh", bytearray(b"abcdefgh")):
            out, _ = decodeOnce(FixedLengthDecoder(2), data)
            self.assertEqual(out[0], b"ab")
            for frame in out:
                self.assertIs(type(frame), bytes)

    def test_bufferResizableAfterDecode(self) -> None:
        """The decoder releases its view: the caller can resize the buffer."""
        buffer = bytearray(b"x" * 100)
        consumed = FixedLengthDecoder(7).decode(buffer, [])
        self.assertEqual(consumed, 98)
        del buffer[:consumed]
        self.assertEqual(buffer, b"xx")

    def test_oneByteAtATime(self) -> None:
        """Fed one byte per read, each frame arrives once."""
        wire = bytes(range(30))
        chunks = [wire[i : i + 1] for i in range(len(wire))]
        frames = [wire[i : i + 6] for i in range(0, 30, 6)]
        self.assertEqual(feedChunks(FixedLengthDecoder(6), chunks), frames)

    def test_sizeOne(self) -> None:
        """size=1 delivers every byte as a frame."""
        self.assertEqual(decodeOnce(FixedLengthDecoder(1), b"abc"), ([b"a", b"b", b"c"], 3))

    def test_bigFrameInSmallChunks(self) -> None:
        """A 1 MiB frame fed 1000 bytes at a time arrives whole, once."""
        payload = bytes(range(256)) * 4096
        chunks = [payload[i : i + 1000] for i in range(0, len(payload), 1000)]
        frames = feedChunks(FixedLengthDecoder(len(payload)), chunks + chunks)
        self.assertEqual(frames, [payload, payload])

    def test_badSize(self) -> None:
        """A size of 0 or less is refused."""
        self.assertRaises(ValueError, FixedLengthDecoder, 0)
        self.assertRaises(ValueError, FixedLengthEncoder, -1)

    def test_decodeLastDiscards(self) -> None:
        """A partial last frame is discarded at the end of the stream."""
        self.assertEqual(FixedLengthDecoder(4).decodeLast(b"abc"), [])


class EncoderTests(SynchronousTestCase):
    """FixedLengthEncoder."""

    def test_passesThrough(self) -> None:
        """A payload of the right size is sent as it is."""
        payload = b"abcd"
        self.assertIs(FixedLengthEncoder(4).encode(payload), payload)
        self.assertEqual(FixedLengthEncoder(4).encode(bytearray(b"wxyz")), b"wxyz")

    def test_wrongSize(self) -> None:
        """A payload shorter or longer than size is an EncodeError."""
        self.assertRaises(EncodeError, FixedLengthEncoder(4).encode, b"abc")
        self.assertRaises(EncodeError, FixedLengthEncoder(4).encode, b"abcde")

    def test_nonBytes(self) -> None:
        """Objects that are not bytes and have no adapter are refused."""
        self.assertRaises(EncodeError, FixedLengthEncoder(4).encode, 1234)


class SpecTests(SynchronousTestCase):
    """fixed named in spec strings."""

    def test_plugin(self) -> None:
        """The module's plugin is the framer "fixed" with one parameter."""
        self.assertEqual(fixedmodule.plugin.name, "fixed")
        self.assertEqual(fixedmodule.plugin.kind, "framer")
        self.assertEqual(set(fixedmodule.plugin.parameters), {"size"})

    def test_size(self) -> None:
        """size takes a size with units; it is the codec's maximum."""
        codec = parseCodecSpec("fixed:size=4KiB")
        self.assertEqual(codec.maxFrameLength, 4096)
        self.assertEqual(codec.newDecoder().frameLength, 4096)
        self.assertEqual(codec.encoder.encode(b"x" * 4096), b"x" * 4096)

    def test_defaultMaximumDoesNotApply(self) -> None:
        """--max-frame-length does not override the spec's size."""
        self.assertEqual(parseCodecSpec("fixed:size=64", 16).maxFrameLength, 64)

    def test_badSpecs(self) -> None:
        """A missing, zero or malformed size, or a max, is refused."""
        for spec in ("fixed", "fixed:size=0", "fixed:size=big", "fixed:size=4:max=8"):
            self.assertRaises(CodecSpecError, parseCodecSpec, spec)


class PropertyTests(SynchronousTestCase):
    """Chunking never changes what decodes."""

    @settings(max_examples=200, deadline=None)
    @given(
        size=st.integers(min_value=1, max_value=40),
        count=st.integers(min_value=0, max_value=40),
        seed=st.binary(min_size=1, max_size=64),
        cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30),
    )
    def test_anyChunking(self, size: int, count: int, seed: bytes, cuts: list[int]) -> None:
        """Frames of one size, concatenated and cut anywhere, come back."""
        wire = (seed * (size * count // len(seed) + 1))[: size * count]
        frames = [wire[i : i + size] for i in range(0, len(wire), size)]
        encoder = FixedLengthEncoder(size)
        self.assertEqual(b"".join(encoder.encode(frame) for frame in frames), wire)
        self.assertEqual(feedChunks(FixedLengthDecoder(size), cutAt(wire, cuts)), frames)


# Every test above, again on the pure-Python implementation (iocpsvc.accel).
bothImplementations(globals())
