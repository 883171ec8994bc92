"""
Tests for L{iocpsvc.codecs.diocp}: DIOCP's stream coder, byte for byte.

The vectors are written out by hand from DIOCP-v5's
C{samples/DiocpCoders/uDIOCPStreamCoder.pas}:

  - C{PACK_FLAG = $D10}, written with C{ouBuf.AddBuffer(@lvPACK_FLAG, 2)}:
    a Word straight from memory, so little-endian: C{10 0D};
  - C{verifyData}: the bytes summed into a Cardinal, written from memory:
    4 bytes little-endian;
  - the length, C{TByteTools.swap32(lvDataLen)}: most significant byte
    first;
  - C{MAX_OBJECT_SIZE = 1024 * 1024 * 10}.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.codecs import parseCodecSpec
from iocpsvc.codecs.diocp import (
    DEFAULT_MAX_FRAME_LENGTH,
    DiocpStreamDecoder,
    DiocpStreamEncoder,
    byteSum,
)
from iocpsvc.errors import (
    ChecksumMismatch,
    CodecSpecError,
    CorruptFrame,
    EncodeError,
    FrameTooLong,
)
from iocpsvc.units import MiB
from tests.helpers import bothImplementations, cutAt, decodeOnce, encodedBytes, feedChunks

# "hello" = 68 65 6C 6C 6F; 0x68 + 0x65 + 0x6C + 0x6C + 0x6F = 0x214.
# flag $D10 as a little-endian Word: 10 0D; checksum 0x214 as a
# little-endian Cardinal: 14 02 00 00; length 5 after swap32: 00 00 00 05.
HELLO_FRAME = bytes.fromhex("100d 14020000 00000005 68656c6c6f")

# An empty stream: verifyData over 0 bytes is 0, swap32(0) is 0.
KEEP_ALIVE = bytes.fromhex("100d 00000000 00000000")

# "AB" = 41 42, sum 0x83: flag, 83 00 00 00, 00 00 00 02, 41 42.
AB_FRAME = bytes.fromhex("100d 83000000 00000002 4142")


class WireVectorTests(SynchronousTestCase):
    """Hand-built frames from the DIOCP source decode and encode exactly."""

    def test_decodeHello(self) -> None:
        """The worked example of the module docstring decodes to b"hello"."""
        self.assertEqual(decodeOnce(DiocpStreamDecoder(), HELLO_FRAME), ([b"hello"], 15))

    def test_encodeHello(self) -> None:
        """Encoding b"hello" gives exactly the frame DIOCP's encoder writes."""
        self.assertEqual(encodedBytes(DiocpStreamEncoder().encode(b"hello")), HELLO_FRAME)

    def test_encodeAB(self) -> None:
        """A second vector: b"AB" sums to 0x83."""
        self.assertEqual(encodedBytes(DiocpStreamEncoder().encode(b"AB")), AB_FRAME)
        self.assertEqual(decodeOnce(DiocpStreamDecoder(), AB_FRAME), ([b"AB"], 12))

    def test_lengthIsBigEndianChecksumLittle(self) -> None:
        """
        A 0x0102-byte payload of 0x01 bytes: the length field reads
        00 00 01 02 (big-endian), the checksum 02 01 00 00 (little-endian).
        """
        frame = encodedBytes(DiocpStreamEncoder().encode(b"\x01" * 0x0102))
        self.assertEqual(frame[:10], bytes.fromhex("100d 02010000 00000102"))

    def test_decodeBytesAndBytearray(self) -> None:
        """The decoder reads bytes and bytearray buffers alike, giving bytes."""
        for data in (HELLO_FRAME, bytearray(HELLO_FRAME)):
            out, consumed = decodeOnce(DiocpStreamDecoder(), data)
            self.assertEqual((out, consumed), ([b"hello"], 15))
            self.assertIs(type(out[0]), bytes)

    def test_longFrameFromBytearray(self) -> None:
        """A frame above the view-copy threshold is copied out correctly."""
        payload = bytes(range(256)) * 160  # 40 KiB, above VIEW_COPY_LIMIT
        wire = bytearray(encodedBytes(DiocpStreamEncoder().encode(payload)))
        out, consumed = decodeOnce(DiocpStreamDecoder(), wire + b"\x10")
        self.assertEqual((out, consumed), ([payload], len(wire)))
        del wire[:consumed]  # the buffer is not left exported


class KeepAliveTests(SynchronousTestCase):
    """A zero-length frame is consumed and produces nothing."""

    def test_keepAliveConsumed(self) -> None:
        """The 10-byte keep-alive is consumed; no object is appended."""
        self.assertEqual(decodeOnce(DiocpStreamDecoder(), KEEP_ALIVE), ([], 10))

    def test_keepAliveChecksumIgnored(self) -> None:
        """
        DIOCP's decoder only verifies when lvDataLen > 0, so a keep-alive's
        checksum field is not looked at.
        """
        frame = bytes.fromhex("100d deadbeef 00000000")
        self.assertEqual(decodeOnce(DiocpStreamDecoder(), frame), ([], 10))

    def test_framesAroundKeepAlive(self) -> None:
        """Frames before and after a keep-alive all decode in one call."""
        wire = HELLO_FRAME + KEEP_ALIVE + AB_FRAME + KEEP_ALIVE
        self.assertEqual(decodeOnce(DiocpStreamDecoder(), wire), ([b"hello", b"AB"], len(wire)))

    def test_encodeEmpty(self) -> None:
        """Encoding b"" gives the keep-alive frame (checksum 0, length 0)."""
        self.assertEqual(DiocpStreamEncoder().encode(b""), KEEP_ALIVE)


class StickyAndHalfPacketTests(SynchronousTestCase):
    """Several frames per read, and frames split across reads."""

    def test_stickyPackets(self) -> None:
        """Three frames in one buffer decode in one call, in order."""
        wire = HELLO_FRAME + AB_FRAME + HELLO_FRAME
        self.assertEqual(
            decodeOnce(DiocpStreamDecoder(), wire),
            ([b"hello", b"AB", b"hello"], len(wire)),
        )

    def test_incompleteLeftUnconsumed(self) -> None:
        """A complete frame followed by part of another: only the first is consumed."""
        for extra in range(1, len(AB_FRAME)):
            wire = HELLO_FRAME + AB_FRAME[:extra]
            self.assertEqual(decodeOnce(DiocpStreamDecoder(), wire), ([b"hello"], 15))

    def test_everySplitPoint(self) -> None:
        """Two frames and a keep-alive, split at every position, decode the same."""
        wire = HELLO_FRAME + KEEP_ALIVE + AB_FRAME
        for cut in range(len(wire) + 1):
            self.assertEqual(
                feedChunks(DiocpStreamDecoder(), [wire[:cut], wire[cut:]]),
                [b"hello", b"AB"],
            )

    def test_byteByByte(self) -> None:
        """One byte per read."""
        wire = HELLO_FRAME + KEEP_ALIVE + AB_FRAME
        chunks = [wire[i : i + 1] for i in range(len(wire))]
        self.assertEqual(feedChunks(DiocpStreamDecoder(), chunks), [b"hello", b"AB"])


class FailureTests(SynchronousTestCase):
    """Bad flags, lengths and checksums are protocol errors."""

    def test_badFlag(self) -> None:
        """A wrong flag is a CorruptFrame."""
        frame = bytes.fromhex("1234") + HELLO_FRAME[2:]
        self.assertRaises(CorruptFrame, DiocpStreamDecoder().decode, frame, [])

    def test_flagBigEndian(self) -> None:
        """The flag written big-endian (0D 10) is wrong: DIOCP writes 10 0D."""
        frame = bytes.fromhex("0d10") + HELLO_FRAME[2:]
        self.assertRaises(CorruptFrame, DiocpStreamDecoder().decode, frame, [])

    def test_badFlagWaitsForHeader(self) -> None:
        """As in DIOCP, the flag is examined once all 10 header bytes are there."""
        self.assertEqual(decodeOnce(DiocpStreamDecoder(), b"\xff" * 9), ([], 0))
        self.assertRaises(CorruptFrame, DiocpStreamDecoder().decode, b"\xff" * 10, [])

    def test_badChecksum(self) -> None:
        """A checksum one off is a ChecksumMismatch carrying both values."""
        frame = bytes.fromhex("100d 15020000 00000005 68656c6c6f")
        error = self.assertRaises(ChecksumMismatch, DiocpStreamDecoder().decode, frame, [])
        self.assertEqual((error.expected, error.actual), (0x215, 0x214))
        self.assertIsInstance(error, CorruptFrame)

    def test_checksumFalseSkipsVerification(self) -> None:
        """With checksum=false a wrong checksum is accepted."""
        frame = bytes.fromhex("100d 00000000 00000005 68656c6c6f")
        codec = parseCodecSpec("diocp:checksum=false")
        self.assertEqual(decodeOnce(codec.newDecoder(), frame), ([b"hello"], 15))

    def test_checksumFalseStillWritten(self) -> None:
        """With checksum=false the encoder still writes the right checksum."""
        codec = parseCodecSpec("diocp:checksum=false")
        self.assertEqual(encodedBytes(codec.encoder.encode(b"hello")), HELLO_FRAME)

    def test_tooLongAtHeader(self) -> None:
        """
        A header claiming max + 1 bytes raises FrameTooLong with only the
        10 header bytes received.
        """
        header = bytes.fromhex("100d 00000000") + (10 * MiB + 1).to_bytes(4, "big")
        error = self.assertRaises(FrameTooLong, DiocpStreamDecoder().decode, header, [])
        self.assertEqual((error.length, error.maximum), (10 * MiB + 1, 10 * MiB))

    def test_maxAccepted(self) -> None:
        """A header claiming exactly max bytes waits for its data."""
        header = bytes.fromhex("100d 00000000") + (10 * MiB).to_bytes(4, "big")
        self.assertEqual(decodeOnce(DiocpStreamDecoder(), header), ([], 0))

    def test_topBitLength(self) -> None:
        """
        A length with the top bit set (negative to DIOCP's signed Integer,
        which would silently skip it) is FrameTooLong here.
        """
        header = bytes.fromhex("100d 00000000 80000000")
        self.assertRaises(FrameTooLong, DiocpStreamDecoder().decode, header, [])

    def test_framesBeforeErrorKept(self) -> None:
        """Frames decoded before a bad one are left in the output list."""
        out: list[object] = []
        wire = HELLO_FRAME + b"\x00" * 10
        self.assertRaises(CorruptFrame, DiocpStreamDecoder().decode, wire, out)
        self.assertEqual(out, [b"hello"])

    def test_decodeLast(self) -> None:
        """A partial frame at the end of the stream produces nothing."""
        self.assertEqual(DiocpStreamDecoder().decodeLast(HELLO_FRAME[:12]), [])


class EncoderTests(SynchronousTestCase):
    """The encoder's output shapes, types and limits."""

    def test_smallIsOneBytes(self) -> None:
        """A payload of up to 4096 bytes comes back as one bytes."""
        self.assertIsInstance(DiocpStreamEncoder().encode(b"x" * 4096), bytes)

    def test_largeIsHeaderAndPayload(self) -> None:
        """A larger payload comes back as (header, payload), the payload uncopied."""
        payload = b"x" * 4097
        header, body = DiocpStreamEncoder().encode(payload)
        self.assertIs(body, payload)
        # 4097 * 0x78 ("x") = 0x78078 -> 78 80 07 00; 4097 = 0x1001.
        self.assertEqual(header, bytes.fromhex("100d 78800700 00001001"))

    def test_bytesLike(self) -> None:
        """bytearray and memoryview payloads encode like bytes."""
        encoder = DiocpStreamEncoder()
        self.assertEqual(encoder.encode(bytearray(b"hello")), HELLO_FRAME)
        self.assertEqual(encoder.encode(memoryview(b"hello")), HELLO_FRAME)

    def test_notBytes(self) -> None:
        """A str (no adapter) is an EncodeError."""
        self.assertRaises(EncodeError, DiocpStreamEncoder().encode, "hello")

    def test_tooLong(self) -> None:
        """A payload over max is refused, as DIOCP's encoder raises."""
        encoder = DiocpStreamEncoder(maxFrameLength=4)
        self.assertRaises(EncodeError, encoder.encode, b"hello")
        self.assertEqual(encodedBytes(encoder.encode(b"hell"))[6:10], b"\x00\x00\x00\x04")

    def test_checksumWraps(self) -> None:
        """
        A Cardinal wraps: 16843010 bytes of 0xFF sum to 0x1000000FE, so the
        checksum field is FE 00 00 00.  (Only possible above DIOCP's 10 MiB.)
        """
        payload = b"\xff" * 16843010
        encoded = DiocpStreamEncoder(maxFrameLength=32 * MiB).encode(payload)
        self.assertEqual(encoded[0], bytes.fromhex("100d fe000000 01010102"))
        decoder = DiocpStreamDecoder(maxFrameLength=32 * MiB)
        out, consumed = decodeOnce(decoder, encodedBytes(encoded))
        self.assertEqual(consumed, 10 + len(payload))
        self.assertTrue(out[0] == payload)


class ByteSumTests(SynchronousTestCase):
    """byteSum is DIOCP's verifyData: the byte sum modulo 2**32."""

    def test_edges(self) -> None:
        """Sizes around the 256-byte chunk, with the largest bytes, are exact."""
        for size in (0, 1, 255, 256, 257, 511, 512, 513, 65536 + 3):
            for fill in (b"\x00", b"\x01", b"\xff"):
                data = fill * size
                self.assertEqual(byteSum(data), sum(data), (size, fill))

    def test_accepts(self) -> None:
        """bytes, bytearray and memoryview give the same sum."""
        data = bytes(range(256)) * 3
        self.assertEqual(
            {byteSum(data), byteSum(bytearray(data)), byteSum(memoryview(data))},
            {sum(data)},
        )

    @settings(max_examples=200, deadline=None)
    @given(data=st.binary(max_size=3000))
    def test_matchesSum(self, data: bytes) -> None:
        """For any bytes, byteSum equals sum() modulo 2**32."""
        self.assertEqual(byteSum(data), sum(data) & 0xFFFFFFFF)


class SpecTests(SynchronousTestCase):
    """The codec spec parameters."""

    def test_defaults(self) -> None:
        """Plain diocp: 10 MiB, DIOCP's MAX_OBJECT_SIZE, and checksums verified."""
        codec = parseCodecSpec("diocp")
        decoder = codec.newDecoder()
        self.assertEqual(decoder.maxFrameLength, DEFAULT_MAX_FRAME_LENGTH)
        self.assertEqual(DEFAULT_MAX_FRAME_LENGTH, 10 * 1024 * 1024)
        self.assertTrue(decoder.verifyChecksum)
        self.assertEqual(codec.encoder.maxFrameLength, 10 * MiB)

    def test_processDefault(self) -> None:
        """--max-frame-length applies when the spec has no max."""
        codec = parseCodecSpec("diocp", defaultMaxFrameLength=64 * 1024)
        self.assertEqual(codec.maxFrameLength, 64 * 1024)
        self.assertEqual(codec.encoder.maxFrameLength, 64 * 1024)

    def test_processDefaultCapped(self) -> None:
        """A process default beyond the signed 32-bit length is capped."""
        codec = parseCodecSpec("diocp", defaultMaxFrameLength=1 << 40)
        self.assertEqual(codec.maxFrameLength, 0x7FFFFFFF)

    def test_explicitMax(self) -> None:
        """max in the spec wins over the process default."""
        codec = parseCodecSpec("diocp:max=1KiB", defaultMaxFrameLength=64 * 1024)
        self.assertEqual(codec.maxFrameLength, 1024)

    def test_badMax(self) -> None:
        """max of 0 or beyond 2**31 - 1 is refused."""
        self.assertRaises(CodecSpecError, parseCodecSpec, "diocp:max=0")
        self.assertRaises(CodecSpecError, parseCodecSpec, "diocp:max=2GiB")

    def test_badChecksum(self) -> None:
        """checksum must be a boolean."""
        self.assertRaises(CodecSpecError, parseCodecSpec, "diocp:checksum=maybe")

    def test_sharedStatelessDecoder(self) -> None:
        """The decoder keeps no state between calls, so every connection shares one."""
        codec = parseCodecSpec("diocp")
        self.assertIs(codec.newDecoder(), codec.newDecoder())


class PropertyTests(SynchronousTestCase):
    """Chunking never changes what decodes."""

    @settings(max_examples=200, deadline=None)
    @given(
        frames=st.lists(st.binary(max_size=600), max_size=20),
        cuts=st.lists(st.integers(min_value=0, max_value=20000), max_size=30),
    )
    def test_anyChunking(self, frames: list[bytes], cuts: list[int]) -> None:
        """
        Any frames, encoded, joined and cut anywhere, decode to the same
        frames; empty ones are keep-alives and produce nothing.
        """
        encoder = DiocpStreamEncoder()
        wire = b"".join(encodedBytes(encoder.encode(frame)) for frame in frames)
        chunks = cutAt(wire, cuts)
        self.assertEqual(
            feedChunks(DiocpStreamDecoder(), chunks),
            [frame for frame in frames if frame],
        )

    @settings(max_examples=50, deadline=None)
    @given(
        seeds=st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=4),
        sizes=st.lists(st.integers(min_value=4000, max_value=9000), min_size=4),
        cuts=st.lists(st.integers(min_value=0, max_value=40000), max_size=10),
    )
    def test_anyChunkingLong(self, seeds: list[bytes], sizes: list[int], cuts: list[int]) -> None:
        """Long frames (the tuple encoding, the view copy) survive any chunking."""
        # Long frames are built by repeating a short random seed: hypothesis
        # refuses to draw thousands of random bytes per example.
        frames = [(seed * (size // len(seed) + 1))[:size] for seed, size in zip(seeds, sizes, strict=False)]
        encoder = DiocpStreamEncoder()
        wire = b"".join(encodedBytes(encoder.encode(frame)) for frame in frames)
        self.assertEqual(feedChunks(DiocpStreamDecoder(), cutAt(wire, cuts)), frames)


# Every test above, again on the pure-Python implementation (iocpsvc.accel).
bothImplementations(globals())
