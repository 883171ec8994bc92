"""
Tests for L{iocpsvc.codecs.line}: the C{line} and C{delimiter} framers --
the module docstring's examples, sticky and half packets, the scan position,
fail-fast limits, discard mode, the encoders, and interop with Twisted's
LineReceiver.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from iocpsvc.codecs import line as linemodule
from iocpsvc.codecs import parseCodecSpec
from iocpsvc.codecs.line import (
    DelimiterDecoder,
    DelimiterEncoder,
    LineDecoder,
    LineEncoder,
)
from iocpsvc.errors import CodecSpecError, EncodeError, FrameTooLong
from iocpsvc.interfaces import IDecoder, IEncoder
from tests.helpers import bothImplementations, cutAt, decodeOnce, encodedBytes, feedChunks


def everySplit(wire: bytes) -> list[list[bytes]]:
    return [[wire[:cut], wire[cut:]] for cut in range(len(wire) + 1)]


class RecordingBuffer(bytearray):
    """A receive buffer that records where each delimiter search starts."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.starts: list[int] = []

    def find(self, sub: object, start: int = 0, *rest: int) -> int:  # type: ignore[override]
        self.starts.append(start)
        return super().find(sub, start, *rest)  # type: ignore[arg-type]

    def rfind(self, sub: object, start: int = 0, *rest: int) -> int:  # type: ignore[override]
        self.starts.append(start)
        return super().rfind(sub, start, *rest)  # type: ignore[arg-type]


class DocExampleTests(SynchronousTestCase):
    """The examples drawn in the module docstring, byte for byte."""

    def test_line(self) -> None:
        """LF and CRLF lines in one read: three frames, 15 bytes consumed."""
        wire = b"HELLO\nWORLD\r\n!\n"
        self.assertEqual(len(wire), 15)
        self.assertEqual(decodeOnce(LineDecoder(), wire), ([b"HELLO", b"WORLD", b"!"], 15))

    def test_delimiterNul(self) -> None:
        """delimiter:delim=0x00 splits on NUL bytes and removes them."""
        wire = b"ABC\x00DE\x00"
        self.assertEqual(len(wire), 7)
        self.assertEqual(decodeOnce(DelimiterDecoder(b"\x00"), wire), ([b"ABC", b"DE"], 7))

    def test_delimiterStraddlesReads(self) -> None:
        """A CRLF delimiter split over two reads is found once LF arrives."""
        decoder = DelimiterDecoder(b"\r\n")
        self.assertEqual(decodeOnce(decoder, b"GET\r"), ([], 0))
        self.assertEqual(decodeOnce(decoder, b"GET\r\n"), ([b"GET"], 5))

    def test_failFast(self) -> None:
        """max=4: five bytes without LF raise FrameTooLong, length unknown."""
        decoder = LineDecoder(maxFrameLength=4)
        self.assertEqual(decodeOnce(decoder, b"TOO "), ([], 0))
        with self.assertRaises(FrameTooLong) as caught:
            decoder.decode(b"TOO L", [])
        self.assertIsNone(caught.exception.length)
        self.assertEqual(caught.exception.maximum, 4)
        self.assertEqual(caught.exception.reason, "no frame end within the maximum of 4 bytes")

    def test_strayCarriageReturn(self) -> None:
        """
        "abc" 0D 0D 0A is the frame "abc" 0D, which encodes (eol=\\n) as the
        same 6 bytes.
        """
        wire = b"abc\r\r\n"
        self.assertEqual(len(wire), 6)
        self.assertEqual(decodeOnce(LineDecoder(), wire), ([b"abc\r"], 6))
        self.assertEqual(LineEncoder().encode(b"abc\r"), wire)

    def test_discard(self) -> None:
        """max=4:discard=true skips the long line and keeps the next."""
        decoder = LineDecoder(maxFrameLength=4, discard=True)
        wire = b"TOO LONG\nOK\n"
        self.assertEqual(len(wire), 12)
        self.assertEqual(decodeOnce(decoder, wire), ([b"OK"], 12))
        self.assertEqual(decoder.discardedFrames, 1)


class LineDecoderTests(SynchronousTestCase):
    """Splitting lines."""

    def test_providesIDecoder(self) -> None:
        """Both decoders provide IDecoder and default to a 1 MiB maximum."""
        for decoder in (LineDecoder(), DelimiterDecoder(b";")):
            self.assertTrue(IDecoder.providedBy(decoder))
            self.assertEqual(decoder.maxFrameLength, 1024 * 1024)

    def test_framesAreBytes(self) -> None:
        """Frames are bytes whether the buffer is bytes or bytearray."""
        for data in (b"a\nbb\n", bytearray(b"a\nbb\n"), b"a\n", bytearray(b"a\n")):
            out, _ = decodeOnce(LineDecoder(), data)
            self.assertTrue(out)
            for frame in out:
                self.assertIs(type(frame), bytes)

    def test_stickyPackets(self) -> None:
        """Thousands of lines in one read, LF and CRLF mixed, in one call."""
        frames = [b"line %d" % i for i in range(5000)] + [b""]
        wire = b"".join(f + (b"\r\n" if i % 3 else b"\n") for i, f in enumerate(frames))
        self.assertEqual(decodeOnce(LineDecoder(), wire), (frames, len(wire)))
        self.assertEqual(decodeOnce(LineDecoder(), bytearray(wire)), (frames, len(wire)))

    def test_halfPacketsAtEverySplit(self) -> None:
        """Any split of three lines into two reads yields all three."""
        wire = b"abc\r\nde\n\r\n"
        for chunks in everySplit(wire):
            self.assertEqual(feedChunks(LineDecoder(), chunks), [b"abc", b"de", b""])

    def test_oneByteAtATime(self) -> None:
        """Fed one byte per read, every line still arrives once."""
        wire = b"one\r\ntwo\n\nthree\r\n"
        chunks = [wire[i : i + 1] for i in range(len(wire))]
        self.assertEqual(feedChunks(LineDecoder(), chunks), [b"one", b"two", b"", b"three"])

    def test_carriageReturns(self) -> None:
        """Only the one CR just before LF is removed; others are data."""
        wire = b"a\rb\n\r\r\n\r\n"
        self.assertEqual(decodeOnce(LineDecoder(), wire), ([b"a\rb", b"\r", b""], len(wire)))
        self.assertEqual(decodeOnce(LineDecoder(), b"x\r\r\n"), ([b"x\r"], 4))

    def test_unfinishedLineStaysBuffered(self) -> None:
        """Bytes after the last LF are not consumed."""
        self.assertEqual(decodeOnce(LineDecoder(), b"a\nbc\r"), ([b"a"], 2))

    def test_scanResumes(self) -> None:
        """A long unfinished line is searched once, not again on each read."""
        decoder = LineDecoder()
        buffer = RecordingBuffer(b"x" * 1000)
        self.assertEqual(decoder.decode(buffer, []), 0)
        buffer += b"y" * 10
        buffer.starts.clear()
        self.assertEqual(decoder.decode(buffer, []), 0)
        self.assertTrue(buffer.starts)
        self.assertGreaterEqual(min(buffer.starts), 1000)
        buffer += b"\n"
        out: list[object] = []
        self.assertEqual(decoder.decode(buffer, out), 1011)
        self.assertEqual(out, [b"x" * 1000 + b"y" * 10])

    def test_scanResumesBeforeStraddlingDelimiter(self) -> None:
        """A multi-byte delimiter search resumes len(delim) - 1 bytes back."""
        decoder = DelimiterDecoder(b"END")
        buffer = RecordingBuffer(b"x" * 100 + b"EN")
        self.assertEqual(decoder.decode(buffer, []), 0)
        buffer += b"D"
        buffer.starts.clear()
        out: list[object] = []
        self.assertEqual(decoder.decode(buffer, out), 103)
        self.assertEqual(out, [b"x" * 100])
        self.assertEqual(buffer.starts[0], 100)

    def test_scanPositionIsRelativeToUnconsumed(self) -> None:
        """After frames are consumed the scan position follows the rest."""
        decoder = LineDecoder()
        self.assertEqual(decodeOnce(decoder, b"ab\ncdef"), ([b"ab"], 3))
        self.assertEqual(decodeOnce(decoder, b"cdef\ngh"), ([b"cdef"], 5))
        self.assertEqual(decodeOnce(decoder, b"gh\n"), ([b"gh"], 3))

    def test_largeLineFromBytearray(self) -> None:
        """A 100 KiB line (copied through a view) decodes; the buffer resizes."""
        payload = bytes(range(11, 256)) * 420
        chunks = [payload[:50000], payload[50000:] + b"\r\n", b"next\n"]
        self.assertEqual(feedChunks(LineDecoder(), chunks), [payload, b"next"])

    def test_decodeLastDiscards(self) -> None:
        """An unterminated last line is discarded at the end of the stream."""
        self.assertEqual(LineDecoder().decodeLast(b"no newline"), [])
        self.assertEqual(DelimiterDecoder(b";").decodeLast(b"partial"), [])


class LimitTests(SynchronousTestCase):
    """The maximum frame length, failing fast."""

    def test_exactlyMax(self) -> None:
        """A line of exactly max bytes passes, with LF or CRLF."""
        decoder = LineDecoder(maxFrameLength=4)
        self.assertEqual(decodeOnce(decoder, b"abcd\nefgh\r\n"), ([b"abcd", b"efgh"], 11))

    def test_crOfMaxLengthLineWaits(self) -> None:
        """max bytes then CR is not too long yet: the LF may follow."""
        decoder = LineDecoder(maxFrameLength=4)
        self.assertEqual(decodeOnce(decoder, b"abcd\r"), ([], 0))
        self.assertEqual(decodeOnce(decoder, b"abcd\r\n"), ([b"abcd"], 6))
        decoder = LineDecoder(maxFrameLength=4)
        self.assertEqual(decodeOnce(decoder, b"abcd\r"), ([], 0))
        self.assertRaises(FrameTooLong, decoder.decode, b"abcd\rx", [])

    def test_wholeLongFrameReportsLength(self) -> None:
        """A complete line over max raises FrameTooLong with its length."""
        for wire in (b"abcde\n", b"abcde\r\n", b"ok\nabcde\nok\n"):
            with self.assertRaises(FrameTooLong) as caught:
                LineDecoder(maxFrameLength=4).decode(wire, [])
            self.assertEqual(caught.exception.length, 5)
            self.assertEqual(caught.exception.closeReason, "frame-too-long")

    def test_failFastBeforeRestArrives(self) -> None:
        """max+1 bytes without a delimiter raise before the frame ends."""
        decoder = LineDecoder(maxFrameLength=100)
        self.assertEqual(decodeOnce(decoder, b"x" * 100), ([], 0))
        self.assertRaises(FrameTooLong, decoder.decode, b"x" * 101, [])
        decoder = DelimiterDecoder(b"\x00", maxFrameLength=100)
        self.assertRaises(FrameTooLong, decoder.decode, b"y" * 5000, [])

    def test_failFastAllowsDelimiterPrefix(self) -> None:
        """Bytes past max that may start the delimiter do not raise yet."""
        decoder = DelimiterDecoder(b"abc", maxFrameLength=4)
        self.assertEqual(decodeOnce(decoder, b"xxxxab"), ([], 0))
        self.assertEqual(decodeOnce(decoder, b"xxxxabc"), ([b"xxxx"], 7))
        decoder = DelimiterDecoder(b"abc", maxFrameLength=4)
        self.assertEqual(decodeOnce(decoder, b"xxxab"), ([], 0))
        self.assertEqual(decodeOnce(decoder, b"xxxabc"), ([b"xxx"], 6))
        self.assertRaises(FrameTooLong, DelimiterDecoder(b"abc", 4).decode, b"xxxxxa", [])
        self.assertRaises(FrameTooLong, DelimiterDecoder(b"abc", 4).decode, b"xxxxax", [])

    def test_framesBeforeErrorAreDelivered(self) -> None:
        """Lines before a too-long one are appended before the error."""
        for wire in (b"a\nb\n" + b"z" * 10 + b"\nc\n", b"a\nb\n" + b"z" * 10):
            out: list[object] = []
            self.assertRaises(FrameTooLong, LineDecoder(maxFrameLength=4).decode, wire, out)
            self.assertEqual(out, [b"a", b"b"])


class DiscardTests(SynchronousTestCase):
    """discard=true: long frames are skipped and decoding goes on."""

    def test_longLineAcrossReads(self) -> None:
        """A long line is consumed as it arrives; the next line decodes."""
        decoder = LineDecoder(maxFrameLength=8, discard=True)
        buffer = bytearray()
        out: list[object] = []
        for chunk in [b"short\nlong"] + [b"x" * 100] * 50 + [b"yy\r\nafter\n"]:
            buffer += chunk
            del buffer[: decoder.decode(buffer, out)]
            self.assertLessEqual(len(buffer), 9)
        self.assertEqual(out, [b"short", b"after"])
        self.assertEqual(decoder.discardedFrames, 1)
        self.assertEqual(buffer, b"")

    def test_longLinesInOneRead(self) -> None:
        """Long lines among short ones in one read are dropped and counted."""
        decoder = LineDecoder(maxFrameLength=3, discard=True)
        wire = b"a\n" + b"b" * 10 + b"\r\nccc\r\ndddd\ne\n"
        self.assertEqual(decodeOnce(decoder, wire), ([b"a", b"ccc", b"e"], len(wire)))
        self.assertEqual(decoder.discardedFrames, 2)
        decoder = LineDecoder(maxFrameLength=3, discard=True)
        self.assertEqual(decodeOnce(decoder, b"toolong\n"), ([], 8))
        self.assertEqual(decoder.discardedFrames, 1)

    def test_straddlingDelimiterWhileDiscarding(self) -> None:
        """While discarding, a delimiter split over two reads still ends it."""
        decoder = DelimiterDecoder(b"\r\n", maxFrameLength=4, discard=True)
        self.assertEqual(feedChunks(decoder, [b"abcdefgh\r", b"\nok\r\n"]), [b"ok"])
        self.assertEqual(decoder.discardedFrames, 1)
        decoder = DelimiterDecoder(b"\r\n", maxFrameLength=4, discard=True)
        buffer = bytearray(b"abcdefgh\r")
        consumed = decoder.decode(buffer, [])
        self.assertEqual(buffer[consumed:], b"\r")

    def test_neverRaises(self) -> None:
        """In discard mode decode never raises for long frames."""
        decoder = DelimiterDecoder(b";", maxFrameLength=2, discard=True)
        wire = b"x" * 1000 + b";ab;" + b"y" * 3 + b";"
        for chunks in everySplit(wire)[::37]:
            decoder = DelimiterDecoder(b";", maxFrameLength=2, discard=True)
            self.assertEqual(feedChunks(decoder, chunks), [b"ab"])
            self.assertEqual(decoder.discardedFrames, 2)


class OverlappingDelimiterTests(SynchronousTestCase):
    """A delimiter that overlaps itself (00 00) is read left to right."""

    def test_sameAsOneByteAtATime(self) -> None:
        """One read and one byte per read split the same way."""
        wire = b"x\x00\x00\x00y\x00\x00\x00\x00z\x00\x00"
        whole = feedChunks(DelimiterDecoder(b"\x00\x00"), [wire])
        single = feedChunks(DelimiterDecoder(b"\x00\x00"), [wire[i : i + 1] for i in range(len(wire))])
        self.assertEqual(whole, [b"x", b"\x00y", b"", b"z"])
        self.assertEqual(single, whole)


@implementer(IEncoder)
class Greeting:
    """
    An application message class that provides IEncoder itself, so that
    IEncoder(greeting) is the greeting: the framer's adapter path.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def encode(self, obj: object) -> bytes:
        return b"hello " + self.name.encode()


class EncoderTests(SynchronousTestCase):
    """LineEncoder and DelimiterEncoder."""

    def test_appendsEol(self) -> None:
        """The line encoder appends LF, or CRLF with eol=\\r\\n."""
        self.assertEqual(LineEncoder().encode(b"abc"), b"abc\n")
        self.assertEqual(LineEncoder(b"\r\n").encode(b"abc"), b"abc\r\n")
        self.assertEqual(LineEncoder().encode(b""), b"\n")

    def test_refusesLf(self) -> None:
        """A payload containing LF is refused: it would be two lines."""
        self.assertRaises(EncodeError, LineEncoder().encode, b"a\nb")
        self.assertRaises(EncodeError, LineEncoder(b"\r\n").encode, b"ab\n")

    def test_trailingCr(self) -> None:
        """
        A payload ending with CR gets CRLF whatever eol is, so the CR the
        decoder removes is the added one and the payload comes back whole.
        """
        for encoder in (LineEncoder(), LineEncoder(b"\r\n")):
            for payload in (b"ab\r", b"\r", b"\r\r", b"a\rb\r"):
                wire = encoder.encode(payload)
                self.assertEqual(wire, payload + b"\r\n")
                self.assertEqual(decodeOnce(LineDecoder(), wire), ([payload], len(wire)))

    def test_trailingCrLargePayload(self) -> None:
        """A large payload ending with CR goes out as its own chunk, then CRLF."""
        payload = b"x" * 100_000 + b"\r"
        encoded = LineEncoder().encode(payload)
        self.assertEqual(len(encoded), 2)
        self.assertIs(encoded[0], payload)
        self.assertEqual(encoded[1], b"\r\n")

    def test_trailingCrAtMaximum(self) -> None:
        """A payload of exactly max bytes ending with CR is still not too long."""
        wire = encodedBytes(LineEncoder().encode(b"abc\r"))
        for chunks in everySplit(wire):
            self.assertEqual(feedChunks(LineDecoder(maxFrameLength=4), chunks), [b"abc\r"])

    def test_badEol(self) -> None:
        """Only LF and CRLF are line ends."""
        self.assertRaises(ValueError, LineEncoder, b"\r")

    def test_largePayloadIsNotCopied(self) -> None:
        """A large payload goes out as its own chunk, the same object."""
        payload = b"x" * 100_000
        for encoder, end in (
            (LineEncoder(), b"\n"),
            (DelimiterEncoder(b"\x00"), b"\x00"),
        ):
            encoded = encoder.encode(payload)
            self.assertEqual(len(encoded), 2)
            self.assertIs(encoded[0], payload)
            self.assertEqual(encoded[1], end)

    def test_delimiterEncoder(self) -> None:
        """The delimiter encoder appends its delimiter."""
        self.assertEqual(DelimiterEncoder(b"\r\n").encode(b"GET"), b"GET\r\n")

    def test_delimiterInPayloadRefused(self) -> None:
        """A payload containing the delimiter is refused."""
        self.assertRaises(EncodeError, DelimiterEncoder(b"\r\n").encode, b"a\r\nb")
        self.assertEqual(DelimiterEncoder(b"\r\n").encode(b"a\rb\n"), b"a\rb\n\r\n")

    def test_payloadRunningIntoDelimiterRefused(self) -> None:
        """A payload whose tail and the delimiter form an early delimiter."""
        encoder = DelimiterEncoder(b"\x00\x00")
        self.assertRaises(EncodeError, encoder.encode, b"x\x00")
        self.assertEqual(encoder.encode(b"\x00x"), b"\x00x\x00\x00")
        self.assertRaises(EncodeError, DelimiterEncoder(b"aba").encode, b"xab")
        self.assertEqual(DelimiterEncoder(b"aab").encode(b"xa"), b"xaaab")

    def test_nonBytes(self) -> None:
        """bytearray is copied, adapters are used, other objects refused."""
        self.assertEqual(LineEncoder().encode(bytearray(b"ab")), b"ab\n")
        self.assertEqual(LineEncoder().encode(Greeting("bob")), b"hello bob\n")
        self.assertEqual(DelimiterEncoder(b";").encode(memoryview(b"m")), b"m;")
        self.assertRaises(EncodeError, LineEncoder().encode, 42)
        self.assertRaises(EncodeError, DelimiterEncoder(b";").encode, "text")


class SpecTests(SynchronousTestCase):
    """The line and delimiter codecs named in spec strings."""

    def test_registered(self) -> None:
        """The module exports both plugins, as framers."""
        names = {plugin.name: plugin.kind for plugin in linemodule.plugins}
        self.assertEqual(names, {"line": "framer", "delimiter": "framer"})

    def test_lineDefaults(self) -> None:
        """line: 1 MiB maximum, LF line end, no discarding."""
        codec = parseCodecSpec("line")
        decoder = codec.newDecoder()
        # The pure LineDecoder, or its compiled twin (iocpsvc.accel): the same state.
        self.assertTrue(IDecoder.providedBy(decoder))
        self.assertTrue(decoder._stripCR)
        self.assertEqual(decoder.delimiter, b"\n")
        self.assertEqual(decoder.maxFrameLength, 1024 * 1024)
        self.assertFalse(decoder.discard)
        self.assertEqual(codec.encoder.encode(b"x"), b"x\n")

    def test_maxPrecedence(self) -> None:
        """The spec's max beats --max-frame-length, which beats 1 MiB."""
        self.assertEqual(parseCodecSpec("line", 4096).maxFrameLength, 4096)
        self.assertEqual(parseCodecSpec("line:max=64KiB", 4096).maxFrameLength, 65536)
        self.assertEqual(parseCodecSpec("delimiter:delim=;", 100).maxFrameLength, 100)

    def test_lineParameters(self) -> None:
        """eol and discard are read from the spec."""
        codec = parseCodecSpec("line:eol=\\r\\n:discard=true:max=4")
        self.assertEqual(codec.encoder.encode(b"x"), b"x\r\n")
        decoder = codec.newDecoder()
        self.assertEqual(decodeOnce(decoder, b"toolong\nok\n"), ([b"ok"], 11))
        self.assertEqual(parseCodecSpec("line:eol=0x0d0a").encoder.encode(b"x"), b"x\r\n")

    def test_delimiterSpecs(self) -> None:
        """delim takes backslash escapes, or hex digits after 0x."""
        for spec, delimiter in (
            ("delimiter:delim=\\r\\n", b"\r\n"),
            ("delimiter:delim=0x00", b"\x00"),
            ("delimiter:delim=0x0d0a", b"\r\n"),
            ("delimiter:delim=\\x00\\xff", b"\x00\xff"),
            ("delimiter:delim=\\:", b":"),
            ("delimiter:delim=END", b"END"),
        ):
            codec = parseCodecSpec(spec)
            self.assertEqual(codec.newDecoder().delimiter, delimiter)
            self.assertEqual(codec.encoder.encode(b"x"), b"x" + delimiter)

    def test_badSpecs(self) -> None:
        """Missing or bad parameters are CodecSpecErrors."""
        for spec in (
            "delimiter",
            "delimiter:delim=",
            "delimiter:delim=0xzz",
            "line:eol=\\r",
            "line:max=0",
            "line:max=lots",
            "line:discard=maybe",
            "line:delim=;",
            "delimiter:delim=;:eol=\\n",
        ):
            self.assertRaises(CodecSpecError, parseCodecSpec, spec)


class LineReceiverInteropTests(SynchronousTestCase):
    """Twisted's LineReceiver as a peer."""

    def test_twistedToUs(self) -> None:
        """What LineReceiver.sendLine writes (CRLF) the line codec decodes."""
        sender = LineReceiver()
        transport = StringTransport()
        sender.makeConnection(transport)
        lines = [b"first", b"", b"caf\xc3\xa9", b"z" * 70000]
        for message in lines:
            sender.sendLine(message)
        for chunks in (
            [transport.value()],
            cutAt(transport.value(), range(0, 80000, 7)),
        ):
            self.assertEqual(feedChunks(LineDecoder(), chunks), lines)

    def test_usToTwisted(self) -> None:
        """Lines from the encoder reach LineReceiver.lineReceived intact."""
        lines = [b"one", b"", b"x" * 5000]
        for encoder, delimiter in (
            (LineEncoder(b"\r\n"), b"\r\n"),
            (LineEncoder(), b"\n"),
        ):
            received: list[bytes] = []
            receiver = LineReceiver()
            receiver.delimiter = delimiter
            receiver.MAX_LENGTH = 100000
            receiver.lineReceived = received.append  # type: ignore[method-assign]
            receiver.makeConnection(StringTransport())
            for message in lines:
                receiver.dataReceived(encodedBytes(encoder.encode(message)))
            self.assertEqual(received, lines)


# (delimiter, eol): None is the line codec.
_CODECS = [
    (None, b"\n"),
    (None, b"\r\n"),
    (b"\x00", None),
    (b"\r\n", None),
    (b"\x00\x00", None),
    (b"a\rb", None),
]


def _codec(
    index: int, maximum: int = 1024 * 1024, discard: bool = False
) -> tuple[LineDecoder | DelimiterDecoder, LineEncoder | DelimiterEncoder]:
    delimiter, eol = _CODECS[index]
    if delimiter is None:
        assert eol is not None
        return LineDecoder(maximum, discard), LineEncoder(eol)
    return DelimiterDecoder(delimiter, maximum, discard), DelimiterEncoder(delimiter)


# A small alphabet, so that payloads often contain CR, LF, NUL and the
# letters of the delimiters.
_payloads = st.binary(max_size=60).map(lambda data: bytes(b"ab\r\n\x00x"[byte % 6] for byte in data))


def _encodable(encoder: object, frames: list[bytes]) -> list[bytes]:
    kept = []
    for frame in frames:
        try:
            encoder.encode(frame)  # type: ignore[attr-defined]
        except EncodeError:
            continue
        kept.append(frame)
    return kept


class PropertyTests(SynchronousTestCase):
    """Chunking never changes what decodes."""

    @settings(max_examples=200, deadline=None)
    @given(
        frames=st.lists(_payloads, max_size=25),
        cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30),
        index=st.integers(min_value=0, max_value=len(_CODECS) - 1),
    )
    def test_anyChunking(self, frames: list[bytes], cuts: list[int], index: int) -> None:
        """Any frames, encoded and cut anywhere, decode to the same frames."""
        decoder, encoder = _codec(index)
        frames = _encodable(encoder, frames)
        wire = b"".join(encodedBytes(encoder.encode(frame)) for frame in frames)
        self.assertEqual(feedChunks(decoder, cutAt(wire, cuts)), frames)
        self.assertEqual(feedChunks(_codec(index)[0], [wire]), frames)

    @settings(max_examples=200, deadline=None)
    @given(
        frames=st.lists(_payloads, max_size=25),
        cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30),
        index=st.integers(min_value=0, max_value=len(_CODECS) - 1),
        maximum=st.integers(min_value=1, max_value=20),
    )
    def test_discardKeepsShortFrames(
        self, frames: list[bytes], cuts: list[int], index: int, maximum: int
    ) -> None:
        """With discard, exactly the frames of at most max bytes come out."""
        decoder, encoder = _codec(index, maximum, discard=True)
        frames = _encodable(encoder, frames)
        wire = b"".join(encodedBytes(encoder.encode(frame)) for frame in frames)
        short = [frame for frame in frames if len(frame) <= maximum]
        self.assertEqual(feedChunks(decoder, cutAt(wire, cuts)), short)
        self.assertEqual(decoder.discardedFrames, len(frames) - len(short))

    @settings(max_examples=200, deadline=None)
    @given(
        frames=st.lists(_payloads, max_size=25),
        cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30),
        index=st.integers(min_value=0, max_value=len(_CODECS) - 1),
        maximum=st.integers(min_value=1, max_value=20),
    )
    def test_failFastOnlyForLongFrames(
        self, frames: list[bytes], cuts: list[int], index: int, maximum: int
    ) -> None:
        """
        Without discard, the frames before the first long one come out, then
        FrameTooLong -- and never for a stream of short frames.
        """
        decoder, encoder = _codec(index, maximum)
        frames = _encodable(encoder, frames)
        wire = b"".join(encodedBytes(encoder.encode(frame)) for frame in frames)
        buffer = bytearray()
        out: list[object] = []
        long = [i for i, frame in enumerate(frames) if len(frame) > maximum]
        try:
            for chunk in cutAt(wire, cuts):
                buffer += chunk
                del buffer[: decoder.decode(buffer, out)]
        except FrameTooLong:
            self.assertTrue(long)
            self.assertEqual(out, frames[: long[0]])
        else:
            self.assertEqual(long, [])
            self.assertEqual(out, frames)


# Every test above, again on the pure-Python implementation (iocpsvc.accel).
bothImplementations(globals())
