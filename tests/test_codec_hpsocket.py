"""
Tests for L{iocpsvc.codecs.hpsocket}: HP-Socket's Pack model, byte for byte.

The vectors are written out by hand from HP-Socket's C{Windows/Src}:

  - C{AddPackHeader} (C{MiscHelper.cpp}): C{header = HToLE32((flag <<
    TCP_PACK_LENGTH_BITS) | length)}, sent before the body;
  - C{ParsePack} (C{MiscHelper.h}): reads the DWORD little-endian, checks
    C{header >> 22} against a non-zero flag, then C{header & 0x3FFFFF}
    against C{0} and the max pack size;
  - C{InternalDef.h}: C{TCP_PACK_LENGTH_BITS 22}, C{TCP_PACK_MAX_SIZE_LIMIT
    0x3FFFFF}, C{TCP_PACK_DEFAULT_MAX_SIZE 0x040000},
    C{TCP_PACK_HEADER_FLAG_LIMIT 0x0003FF}.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.codecs import parseCodecSpec
from iocpsvc.codecs.hpsocket import HPSocketPackDecoder, HPSocketPackEncoder
from iocpsvc.errors import CodecSpecError, CorruptFrame, EncodeError, FrameTooLong
from tests.helpers import bothImplementations, cutAt, decodeOnce, encodedBytes, feedChunks

# flag 0, "hello" (68 65 6C 6C 6F): header 0x00000005, little-endian.
HELLO_PACK = bytes.fromhex("05000000 68656c6c6f")

# flag 0x155, "hello": (0x155 << 22) | 5 = 0x55400005 -> 05 00 40 55.
HELLO_PACK_155 = bytes.fromhex("05004055 68656c6c6f")

# flag 0, "AB": header 2 -> 02 00 00 00.
AB_PACK = bytes.fromhex("02000000 4142")

# flag 0x3FF (all ten bits), one byte "Z": (0x3FF << 22) | 1 = 0xFFC00001.
Z_PACK_3FF = bytes.fromhex("0100c0ff 5a")


class WireVectorTests(SynchronousTestCase):
    """Hand-built packs from the HP-Socket source decode and encode exactly."""

    def test_decodeHello(self) -> None:
        """The first worked example of the module docstring."""
        self.assertEqual(decodeOnce(HPSocketPackDecoder(), HELLO_PACK), ([b"hello"], 9))

    def test_encodeHello(self) -> None:
        """Encoding b"hello" with flag 0 gives 05 00 00 00 68 65 6C 6C 6F."""
        self.assertEqual(HPSocketPackEncoder().encode(b"hello"), HELLO_PACK)

    def test_flag155(self) -> None:
        """The second worked example: flag 0x155 in the top ten bits."""
        self.assertEqual(HPSocketPackEncoder(headerFlag=0x155).encode(b"hello"), HELLO_PACK_155)
        decoder = HPSocketPackDecoder(headerFlag=0x155)
        self.assertEqual(decodeOnce(decoder, HELLO_PACK_155), ([b"hello"], 9))

    def test_flag3FF(self) -> None:
        """The largest flag, 0x3FF, fills the top ten bits: FF C0 in bytes 3-2."""
        self.assertEqual(HPSocketPackEncoder(headerFlag=0x3FF).encode(b"Z"), Z_PACK_3FF)
        decoder = HPSocketPackDecoder(headerFlag=0x3FF)
        self.assertEqual(decodeOnce(decoder, Z_PACK_3FF), ([b"Z"], 5))

    def test_lengthBitsLittleEndian(self) -> None:
        """A 0x010203-byte body: the header's low bytes are 03 02 01."""
        encoded = HPSocketPackEncoder(maxFrameLength=0x3FFFFF).encode(b"\0" * 0x010203)
        self.assertEqual(encoded[0], bytes.fromhex("03020100"))

    def test_maxSizeLimit(self) -> None:
        """A body of 0x3FFFFF bytes, the hard limit, fills all 22 length bits."""
        encoded = HPSocketPackEncoder(maxFrameLength=0x3FFFFF).encode(b"\0" * 0x3FFFFF)
        self.assertEqual(encoded[0], bytes.fromhex("ffff3f00"))

    def test_decodeBytesAndBytearray(self) -> None:
        """The decoder reads bytes and bytearray buffers alike, giving bytes."""
        for data in (HELLO_PACK, bytearray(HELLO_PACK)):
            out, consumed = decodeOnce(HPSocketPackDecoder(), data)
            self.assertEqual((out, consumed), ([b"hello"], 9))
            self.assertIs(type(out[0]), bytes)

    def test_longPackFromBytearray(self) -> None:
        """A pack above the view-copy threshold is copied out correctly."""
        body = bytes(range(256)) * 160  # 40 KiB, above VIEW_COPY_LIMIT
        wire = bytearray(encodedBytes(HPSocketPackEncoder().encode(body)))
        out, consumed = decodeOnce(HPSocketPackDecoder(), wire + b"\x01")
        self.assertEqual((out, consumed), ([body], len(wire)))
        del wire[:consumed]  # the buffer is not left exported


class FlagTests(SynchronousTestCase):
    """The header flag: checked when set, ignored when 0."""

    def test_mismatch(self) -> None:
        """A non-zero flag rejects a header carrying another flag."""
        decoder = HPSocketPackDecoder(headerFlag=0x156)
        self.assertRaises(CorruptFrame, decoder.decode, HELLO_PACK_155, [])

    def test_missingFlag(self) -> None:
        """A non-zero flag rejects a header with no flag."""
        decoder = HPSocketPackDecoder(headerFlag=0x155)
        self.assertRaises(CorruptFrame, decoder.decode, HELLO_PACK, [])

    def test_flagCheckedAtHeader(self) -> None:
        """The mismatch is raised with only the 4 header bytes received."""
        decoder = HPSocketPackDecoder(headerFlag=0x1)
        self.assertRaises(CorruptFrame, decoder.decode, HELLO_PACK_155[:4], [])

    def test_zeroFlagIgnoresHeaderFlag(self) -> None:
        """
        With flag 0, ParsePack skips the flag check, so a header carrying
        any flag is accepted and only its length bits count.
        """
        decoder = HPSocketPackDecoder()
        wire = HELLO_PACK_155 + Z_PACK_3FF
        self.assertEqual(decodeOnce(decoder, wire), ([b"hello", b"Z"], len(wire)))


class LengthTests(SynchronousTestCase):
    """Zero and too-long lengths are protocol errors, raised at the header."""

    def test_zeroLength(self) -> None:
        """A header with body length 0 is a CorruptFrame (ERROR_BAD_LENGTH)."""
        self.assertRaises(CorruptFrame, HPSocketPackDecoder().decode, b"\0\0\0\0", [])

    def test_zeroLengthWithFlag(self) -> None:
        """A zero length is refused even when the flag matches."""
        decoder = HPSocketPackDecoder(headerFlag=0x155)
        self.assertRaises(CorruptFrame, decoder.decode, bytes.fromhex("00004055"), [])

    def test_zeroLengthNotFrameTooLong(self) -> None:
        """A zero length is not reported as a frame too long."""
        error = self.assertRaises(CorruptFrame, HPSocketPackDecoder().decode, bytes(4), [])
        self.assertNotIsInstance(error, FrameTooLong)

    def test_tooLongAtHeader(self) -> None:
        """
        Default max 0x40000: a header claiming 0x40001 (01 00 04 00) raises
        FrameTooLong with only the header received.
        """
        error = self.assertRaises(FrameTooLong, HPSocketPackDecoder().decode, bytes.fromhex("01000400"), [])
        self.assertEqual((error.length, error.maximum), (0x40001, 0x40000))

    def test_maxWaits(self) -> None:
        """A header claiming exactly max (00 00 04 00) waits for its body."""
        self.assertEqual(decodeOnce(HPSocketPackDecoder(), bytes.fromhex("00000400")), ([], 0))

    def test_lengthMaskedFromFlag(self) -> None:
        """The flag bits never count as length: FF FF FF FF is 0x3FFFFF long."""
        decoder = HPSocketPackDecoder(maxFrameLength=0x3FFFFF)
        self.assertEqual(decodeOnce(decoder, b"\xff" * 4), ([], 0))
        error = self.assertRaises(FrameTooLong, HPSocketPackDecoder().decode, b"\xff" * 4, [])
        self.assertEqual(error.length, 0x3FFFFF)

    def test_framesBeforeErrorKept(self) -> None:
        """Packs decoded before a bad header are left in the output list."""
        out: list[object] = []
        wire = HELLO_PACK + bytes(4)
        self.assertRaises(CorruptFrame, HPSocketPackDecoder().decode, wire, out)
        self.assertEqual(out, [b"hello"])

    def test_decodeLast(self) -> None:
        """A partial pack at the end of the stream produces nothing."""
        self.assertEqual(HPSocketPackDecoder().decodeLast(HELLO_PACK[:6]), [])


class StickyAndHalfPacketTests(SynchronousTestCase):
    """Several packs per read, and packs split across reads."""

    def test_stickyPackets(self) -> None:
        """Three packs in one buffer decode in one call, in order."""
        wire = HELLO_PACK + AB_PACK + HELLO_PACK
        self.assertEqual(
            decodeOnce(HPSocketPackDecoder(), wire),
            ([b"hello", b"AB", b"hello"], len(wire)),
        )

    def test_incompleteLeftUnconsumed(self) -> None:
        """A complete pack followed by part of another: only the first is consumed."""
        for extra in range(1, len(AB_PACK)):
            wire = HELLO_PACK + AB_PACK[:extra]
            self.assertEqual(decodeOnce(HPSocketPackDecoder(), wire), ([b"hello"], 9))

    def test_everySplitPoint(self) -> None:
        """Two packs, split at every position, decode the same."""
        wire = HELLO_PACK + AB_PACK
        for cut in range(len(wire) + 1):
            chunks = [wire[:cut], wire[cut:]]
            self.assertEqual(feedChunks(HPSocketPackDecoder(), chunks), [b"hello", b"AB"])

    def test_byteByByte(self) -> None:
        """One byte per read, with a flag."""
        wire = HELLO_PACK_155 * 3
        chunks = [wire[i : i + 1] for i in range(len(wire))]
        self.assertEqual(feedChunks(HPSocketPackDecoder(headerFlag=0x155), chunks), [b"hello"] * 3)


class EncoderTests(SynchronousTestCase):
    """The encoder's output shapes, types and limits."""

    def test_empty(self) -> None:
        """An empty body is refused, as AddPackHeader refuses it."""
        self.assertRaises(EncodeError, HPSocketPackEncoder().encode, b"")

    def test_tooLong(self) -> None:
        """A body over max is refused."""
        encoder = HPSocketPackEncoder(maxFrameLength=4)
        self.assertRaises(EncodeError, encoder.encode, b"hello")
        self.assertEqual(encoder.encode(b"hell"), bytes.fromhex("04000000") + b"hell")

    def test_smallIsOneBytes(self) -> None:
        """A body of up to 4096 bytes comes back as one bytes."""
        self.assertIsInstance(HPSocketPackEncoder().encode(b"x" * 4096), bytes)

    def test_largeIsHeaderAndPayload(self) -> None:
        """A larger body comes back as (header, body), the body uncopied."""
        body = b"x" * 4097
        header, sent = HPSocketPackEncoder().encode(body)
        self.assertIs(sent, body)
        self.assertEqual(header, bytes.fromhex("01100000"))  # 4097 = 0x1001

    def test_bytesLike(self) -> None:
        """bytearray and memoryview bodies encode like bytes."""
        encoder = HPSocketPackEncoder()
        self.assertEqual(encoder.encode(bytearray(b"hello")), HELLO_PACK)
        self.assertEqual(encoder.encode(memoryview(b"hello")), HELLO_PACK)

    def test_notBytes(self) -> None:
        """A str (no adapter) is an EncodeError."""
        self.assertRaises(EncodeError, HPSocketPackEncoder().encode, "hello")


class SpecTests(SynchronousTestCase):
    """The codec spec parameters and HP-Socket's CheckParams limits."""

    def test_defaults(self) -> None:
        """Plain hpsocket: max 256 KiB (0x40000), flag 0."""
        codec = parseCodecSpec("hpsocket")
        decoder = codec.newDecoder()
        self.assertEqual((decoder.maxFrameLength, decoder.headerFlag), (0x40000, 0))
        self.assertEqual(codec.encoder.encode(b"hello"), HELLO_PACK)

    def test_flagParameter(self) -> None:
        """flag accepts hex; the encoder writes it, the decoder requires it."""
        codec = parseCodecSpec("hpsocket:flag=0x155")
        self.assertEqual(codec.encoder.encode(b"hello"), HELLO_PACK_155)
        self.assertEqual(codec.newDecoder().headerFlag, 0x155)

    def test_badFlag(self) -> None:
        """A flag above 0x3FF or below 0 is refused."""
        self.assertRaises(CodecSpecError, parseCodecSpec, "hpsocket:flag=0x400")
        self.assertRaises(CodecSpecError, parseCodecSpec, "hpsocket:flag=-1")
        self.assertRaises(ValueError, HPSocketPackDecoder, headerFlag=0x400)
        self.assertRaises(ValueError, HPSocketPackEncoder, headerFlag=0x400)

    def test_maxParameter(self) -> None:
        """max is a size, up to 0x3FFFFF."""
        self.assertEqual(parseCodecSpec("hpsocket:max=1MiB").maxFrameLength, 1024 * 1024)
        self.assertEqual(parseCodecSpec("hpsocket:max=0x3FFFFF").maxFrameLength, 0x3FFFFF)

    def test_badMax(self) -> None:
        """max of 0 or above 0x3FFFFF is refused (ValueError, via the spec)."""
        self.assertRaises(CodecSpecError, parseCodecSpec, "hpsocket:max=0")
        self.assertRaises(CodecSpecError, parseCodecSpec, "hpsocket:max=4MiB")
        self.assertRaises(ValueError, HPSocketPackDecoder, maxFrameLength=0x400000)

    def test_processDefault(self) -> None:
        """--max-frame-length applies when the spec has no max."""
        codec = parseCodecSpec("hpsocket", defaultMaxFrameLength=64 * 1024)
        self.assertEqual(codec.maxFrameLength, 64 * 1024)

    def test_processDefaultCapped(self) -> None:
        """A process default beyond the 22-bit field is capped at 0x3FFFFF."""
        codec = parseCodecSpec("hpsocket", defaultMaxFrameLength=16 * 1024 * 1024)
        self.assertEqual(codec.maxFrameLength, 0x3FFFFF)

    def test_sharedStatelessDecoder(self) -> None:
        """The decoder keeps no state between calls, so every connection shares one."""
        codec = parseCodecSpec("hpsocket")
        self.assertIs(codec.newDecoder(), codec.newDecoder())


class PropertyTests(SynchronousTestCase):
    """Chunking never changes what decodes."""

    @settings(max_examples=200, deadline=None)
    @given(
        frames=st.lists(st.binary(min_size=1, max_size=600), max_size=20),
        cuts=st.lists(st.integers(min_value=0, max_value=20000), max_size=30),
        flag=st.integers(min_value=0, max_value=0x3FF),
    )
    def test_anyChunking(self, frames: list[bytes], cuts: list[int], flag: int) -> None:
        """Any packs, encoded, joined and cut anywhere, decode to the same bodies."""
        encoder = HPSocketPackEncoder(headerFlag=flag)
        wire = b"".join(encodedBytes(encoder.encode(frame)) for frame in frames)
        decoder = HPSocketPackDecoder(headerFlag=flag)
        self.assertEqual(feedChunks(decoder, cutAt(wire, cuts)), frames)

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
        encoder = HPSocketPackEncoder()
        wire = b"".join(encodedBytes(encoder.encode(frame)) for frame in frames)
        self.assertEqual(feedChunks(HPSocketPackDecoder(), cutAt(wire, cuts)), frames)


# Every test above, again on the pure-Python implementation (iocpsvc.accel).
bothImplementations(globals())
