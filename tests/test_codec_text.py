"""
Tests for L{iocpsvc.codecs.text}: the module docstring's examples, strict
decoding, the encoding parameter, and the encoder's treatment of str, bytes
and other objects.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from iocpsvc.codecs import parseCodecSpec
from iocpsvc.codecs import text as textmodule
from iocpsvc.codecs.text import TextDecoder, TextEncoder, parseEncoding
from iocpsvc.errors import CodecSpecError, CorruptFrame, EncodeError
from iocpsvc.interfaces import IEncoder, IObjectDecoder
from tests.helpers import bothImplementations, cutAt, encodedBytes, feedChunks


class DocExampleTests(SynchronousTestCase):
    """The examples in the module docstring."""

    def test_cafe(self) -> None:
        """63 61 66 C3 A9 21 is the 5-character str "café!"."""
        frame = bytes.fromhex("636166C3A921")
        text = TextDecoder().decodeObject(frame)
        self.assertEqual(text, "caf\u00e9!")
        self.assertEqual(len(text), 5)

    def test_invalidUtf8(self) -> None:
        """C3 28 is a CorruptFrame naming the reason and the byte."""
        with self.assertRaises(CorruptFrame) as caught:
            TextDecoder().decodeObject(b"\xc3\x28")
        self.assertEqual(
            caught.exception.reason,
            "frame is not valid utf-8: invalid continuation byte at byte 0",
        )
        self.assertEqual(caught.exception.closeReason, "protocol-error")


class DecoderTests(SynchronousTestCase):
    """TextDecoder."""

    def test_providesIObjectDecoder(self) -> None:
        """The decoder provides IObjectDecoder, the encoder IEncoder."""
        self.assertTrue(IObjectDecoder.providedBy(TextDecoder()))
        self.assertTrue(IEncoder.providedBy(TextEncoder()))

    def test_bufferTypes(self) -> None:
        """bytes, bytearray and memoryview frames all decode."""
        for frame in (b"abc", bytearray(b"abc"), memoryview(b"abc")):
            self.assertEqual(TextDecoder().decodeObject(frame), "abc")

    def test_otherEncodings(self) -> None:
        """The encoding parameter selects the codec, strictly."""
        self.assertEqual(TextDecoder("latin-1").decodeObject(b"caf\xe9"), "caf\u00e9")
        self.assertEqual(TextDecoder("gbk").decodeObject(b"\xc4\xe3\xba\xc3"), "你好")
        self.assertRaises(CorruptFrame, TextDecoder("ascii").decodeObject, b"\x80")
        self.assertRaises(CorruptFrame, TextDecoder("utf-16").decodeObject, b"abc")

    def test_truncatedSequence(self) -> None:
        """A multi-byte character cut at the frame end is corrupt."""
        self.assertRaises(CorruptFrame, TextDecoder().decodeObject, b"caf\xc3")

    def test_notBytes(self) -> None:
        """A frame that is not bytes-like is a CorruptFrame, not a crash."""
        self.assertRaises(CorruptFrame, TextDecoder().decodeObject, "already text")
        self.assertRaises(CorruptFrame, TextDecoder().decodeObject, 42)


@implementer(IEncoder)
class Temperature:
    """An application object that encodes itself (provides IEncoder)."""

    def __init__(self, degrees: int) -> None:
        self.degrees = degrees

    def encode(self, obj: object) -> tuple[bytes, ...]:
        return (b"T=", str(self.degrees).encode())


class EncoderTests(SynchronousTestCase):
    """TextEncoder."""

    def test_str(self) -> None:
        """A str is encoded in the codec's encoding."""
        self.assertEqual(TextEncoder().encode("caf\u00e9!"), bytes.fromhex("636166C3A921"))
        self.assertEqual(TextEncoder("latin-1").encode("caf\u00e9"), b"caf\xe9")

    def test_strSubclass(self) -> None:
        """A str subclass is encoded like a str."""

        class Name(str):
            pass

        self.assertEqual(TextEncoder().encode(Name("bob")), b"bob")

    def test_unencodable(self) -> None:
        """A character the encoding lacks is an EncodeError."""
        with self.assertRaises(EncodeError) as caught:
            TextEncoder("ascii").encode("caf\u00e9")
        self.assertIn("'\u00e9'", str(caught.exception))
        self.assertRaises(EncodeError, TextEncoder().encode, "\ud800")

    def test_bytesPassThrough(self) -> None:
        """bytes are already encoded: the same object comes back."""
        payload = b"\xff raw"
        self.assertIs(TextEncoder().encode(payload), payload)
        self.assertEqual(TextEncoder().encode(bytearray(b"ab")), b"ab")

    def test_adapter(self) -> None:
        """An IEncoder provider encodes itself; chunks are joined."""
        self.assertEqual(TextEncoder().encode(Temperature(21)), b"T=21")

    def test_otherObjects(self) -> None:
        """Anything else is an EncodeError that names its type."""
        with self.assertRaises(EncodeError) as caught:
            TextEncoder().encode(3.5)
        self.assertIn("float", str(caught.exception))
        self.assertRaises(EncodeError, TextEncoder().encode, None)


class EncodingParameterTests(SynchronousTestCase):
    """The encoding parameter."""

    def test_canonicalName(self) -> None:
        """Aliases are normalised."""
        self.assertEqual(parseEncoding("UTF8"), "utf-8")
        self.assertEqual(parseEncoding("latin1"), "iso8859-1")

    def test_refused(self) -> None:
        """Unknown encodings and bytes-to-bytes codecs are refused."""
        for name in ("klingon", "base64", "rot13", "zlib", ""):
            self.assertRaises(ValueError, parseEncoding, name)

    def test_plugin(self) -> None:
        """The module's plugin is the object codec "text"."""
        self.assertEqual(textmodule.plugin.name, "text")
        self.assertEqual(textmodule.plugin.kind, "object")
        self.assertEqual(set(textmodule.plugin.parameters), {"encoding"})

    def test_specs(self) -> None:
        """text and text:encoding=... in chains."""
        codec = parseCodecSpec("line+text")
        out: list[object] = []
        codec.newDecoder().decode(b"caf\xc3\xa9\n", out)
        self.assertEqual(out, ["caf\u00e9"])
        self.assertEqual(encodedBytes(codec.encoder.encode("caf\u00e9")), b"caf\xc3\xa9\n")
        codec = parseCodecSpec("netstring+text:encoding=gbk")
        self.assertEqual(encodedBytes(codec.encoder.encode("你好")), b"4:\xc4\xe3\xba\xc3,")
        for spec in ("line+text:encoding=klingon", "line+text:errors=replace"):
            self.assertRaises(CodecSpecError, parseCodecSpec, spec)

    def test_corruptFrameInChain(self) -> None:
        """Bad UTF-8 in a line+text chain raises after the good lines."""
        out: list[object] = []
        decoder = parseCodecSpec("line+text").newDecoder()
        self.assertRaises(CorruptFrame, decoder.decode, b"ok\n\xff\n", out)
        self.assertEqual(out, ["ok"])


class PropertyTests(SynchronousTestCase):
    """Round trips."""

    @settings(max_examples=200, deadline=None)
    @given(
        text=st.text(),
        encoding=st.sampled_from(["utf-8", "utf-16", "utf-32", "utf-16-be"]),
    )
    def test_roundTrip(self, text: str, encoding: str) -> None:
        """Any text survives encode then decode in the Unicode encodings."""
        try:
            encoded = TextEncoder(encoding).encode(text)
        except EncodeError:
            # Only lone surrogates cannot be encoded.
            self.assertTrue(any(0xD800 <= ord(c) <= 0xDFFF for c in text))
            return
        self.assertEqual(TextDecoder(encoding).decodeObject(encoded), text)

    @settings(max_examples=200, deadline=None)
    @given(
        texts=st.lists(st.text(alphabet=st.characters(exclude_categories=["Cs"]))),
        cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20),
    )
    def test_chainAnyChunking(self, texts: list[str], cuts: list[int]) -> None:
        """netstring+text: any texts, cut anywhere, decode to the same."""
        codec = parseCodecSpec("netstring+text")
        wire = b"".join(encodedBytes(codec.encoder.encode(t)) for t in texts)
        self.assertEqual(feedChunks(codec.newDecoder(), cutAt(wire, cuts)), texts)


# Every test above, again on the pure-Python implementation (iocpsvc.accel).
bothImplementations(globals())
