"""
Tests for L{iocpsvc.codecs.json}: the module docstring's examples, corrupt
documents, compact UTF-8 output, what the encoder refuses, adapters, and
round trips.
"""

from __future__ import annotations

import json
import math
import os

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from iocpsvc.codecs import json as jsonmodule
from iocpsvc.codecs import parseCodecSpec
from iocpsvc.codecs.json import MAX_DEPTH, JSONDecoder, JSONEncoder
from iocpsvc.errors import CodecSpecError, CorruptFrame, EncodeError
from iocpsvc.interfaces import IEncoder, IObjectDecoder, ITextDocumentEncoder
from tests.helpers import bothImplementations, cutAt, encodedBytes, feedChunks


class DocExampleTests(SynchronousTestCase):
    """The examples in the module docstring."""

    def test_object(self) -> None:
        """The 23-byte frame is the dict it shows; it encodes back the same."""
        frame = b'{"op":"echo","n":[1,2]}'
        self.assertEqual(len(frame), 23)
        decoded = JSONDecoder().decodeObject(frame)
        self.assertEqual(decoded, {"op": "echo", "n": [1, 2]})
        self.assertEqual(JSONEncoder().encode(decoded), frame)

    def test_corrupt(self) -> None:
        """b"{1" is a CorruptFrame with json's own explanation."""
        with self.assertRaises(CorruptFrame) as caught:
            JSONDecoder().decodeObject(b"{1")
        self.assertEqual(
            caught.exception.reason,
            "invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        )
        self.assertEqual(caught.exception.closeReason, "protocol-error")

    def test_compact(self) -> None:
        """{"op": "echo"} encodes as the 13 bytes {"op":"echo"}."""
        self.assertEqual(JSONEncoder().encode({"op": "echo"}), b'{"op":"echo"}')

    def test_refusedAtDecode(self) -> None:
        """Each frame of the table is a CorruptFrame with the reason shown."""
        for frame, reason in (
            (b"NaN", "invalid JSON: NaN is not a JSON number"),
            (b"[Infinity]", "invalid JSON: Infinity is not a JSON number"),
            (b"-Infinity", "invalid JSON: -Infinity is not a JSON number"),
            (b"1e999", "invalid JSON: the number 1e999 is too large for a float"),
            (b"-1e400", "invalid JSON: the number -1e400 is too large for a float"),
            (
                b"1" + b"0" * 399 + b".5",
                "invalid JSON: the number 10000000000000000000... (402 characters) is too large for a float",
            ),
            (b'"\\ud800"', "invalid JSON: \\ud800 in a string is a lone surrogate, which has no UTF-8 form"),
            (b'"\\udc00x"', "invalid JSON: \\udc00 in a string is a lone surrogate, which has no UTF-8 form"),
            (b'"\xed\xa0\x80"', "invalid JSON: not valid utf-8: invalid continuation byte at byte 1"),
            (b"[" * 257 + b"]" * 257, "invalid JSON: nested deeper than 256 levels"),
        ):
            with self.assertRaises(CorruptFrame, msg=frame[:20]) as caught:
                JSONDecoder().decodeObject(frame)
            self.assertEqual(caught.exception.reason, reason)
            self.assertEqual(caught.exception.closeReason, "protocol-error")

    def test_surrogatePair(self) -> None:
        """A pair of surrogate escapes is one character, and encodes."""
        decoded = JSONDecoder().decodeObject(b'"\\ud83d\\ude00"')
        self.assertEqual(decoded, "\U0001f600")
        self.assertEqual(JSONEncoder().encode(decoded), '"\U0001f600"'.encode())


class ModuleTests(SynchronousTestCase):
    """A module named json.py that imports json."""

    def test_importsStandardLibrary(self) -> None:
        """Inside iocpsvc.codecs.json, json is the standard library."""
        self.assertIs(jsonmodule.json, json)
        self.assertNotEqual(os.path.dirname(json.__file__), os.path.dirname(jsonmodule.__file__))
        self.assertTrue(hasattr(jsonmodule.json, "JSONDecodeError"))

    def test_plugin(self) -> None:
        """The module's plugin is the object codec "json", no parameters."""
        self.assertEqual(jsonmodule.plugin.name, "json")
        self.assertEqual(jsonmodule.plugin.kind, "object")
        self.assertEqual(jsonmodule.plugin.parameters, {})


class DecoderTests(SynchronousTestCase):
    """JSONDecoder."""

    def test_providesIObjectDecoder(self) -> None:
        """The decoder provides IObjectDecoder, the encoder IEncoder."""
        self.assertTrue(IObjectDecoder.providedBy(JSONDecoder()))
        self.assertTrue(IEncoder.providedBy(JSONEncoder()))

    def test_frameTypes(self) -> None:
        """bytes, bytearray and str frames parse."""
        for frame in (b"[1]", bytearray(b"[1]"), "[1]"):
            self.assertEqual(JSONDecoder().decodeObject(frame), [1])

    def test_scalars(self) -> None:
        """Any JSON value is a document, not only objects."""
        for frame, value in ((b"3", 3), (b'"x"', "x"), (b"null", None), (b"true", True)):
            self.assertEqual(JSONDecoder().decodeObject(frame), value)

    def test_utf8(self) -> None:
        """Non-ASCII text arrives as UTF-8 (a BOM is tolerated)."""
        self.assertEqual(JSONDecoder().decodeObject('"é"'.encode()), "é")
        self.assertEqual(JSONDecoder().decodeObject(b'\xef\xbb\xbf"x"'), "x")

    def test_corrupt(self) -> None:
        """Malformed documents are CorruptFrames, whatever the failure."""
        for frame in (
            b"",
            b"{",
            b"[1,]",
            b"1 2",
            b'"\xff"',
            b"[" * 100000 + b"]" * 100000,
            b"9" * 5000,
        ):
            self.assertRaises(CorruptFrame, JSONDecoder().decodeObject, frame)

    def test_notBytes(self) -> None:
        """A frame that is neither bytes nor str is a CorruptFrame."""
        for frame in (42, memoryview(b"[1]"), None):
            self.assertRaises(CorruptFrame, JSONDecoder().decodeObject, frame)


class SendableTests(SynchronousTestCase):
    """The decoder refuses what the encoder could not send back."""

    def assertRefused(self, *frames: object) -> None:
        for frame in frames:
            with self.assertRaises(CorruptFrame, msg=repr(frame)[:60]):
                JSONDecoder().decodeObject(frame)

    def assertRoundTrip(self, *frames: object) -> None:
        for frame in frames:
            value = JSONDecoder().decodeObject(frame)
            self.assertEqual(JSONDecoder().decodeObject(JSONEncoder().encode(value)), value)

    def test_constants(self) -> None:
        """NaN and the infinities are refused wherever they are."""
        self.assertRefused(b"NaN", b'{"a":[1,NaN]}', b"[Infinity]", b"[-Infinity]", "NaN", bytearray(b"NaN"))

    def test_overflowingFloats(self) -> None:
        """Numbers that overflow a float are refused; the largest finite ones pass."""
        self.assertRefused(
            b"1e309",
            b"[1E+999]",
            b"1e0000309",
            b"1.8e308",
            b"1" * 211 + b"e99",
            b"1" * 400 + b".5",
            "[1e999]".encode("utf-16"),
            "[1e999]".encode("utf-32"),
            "[1e999]",
        )
        self.assertRoundTrip(
            b"1e308",
            b"1.7976931348623157e308",
            b"-1e-999",
            b"1" * 210 + b"e98",
            b"1" * 4000,
            b"[12.5, 1e5, 1E-5, -0.0]",
        )

    def test_surrogateEscapes(self) -> None:
        """
        An escape that decodes to a lone surrogate is refused, in a value or a
        key; a pair, or an escaped backslash before the letters, passes.
        """
        self.assertRefused(
            b'"\\ud800"',
            b'"\\uDBFF"',
            b'"\\udc00"',
            b'"x\\ud800y"',
            b'"\\ud800\\ud800\\udc00"',
            b'"\\ud800\\udc00\\udc00"',
            b'"\\ud800\\\\\\udc00"',
            b'{"\\ud800":1}',
            b'[1,{"a":["\\udfff"]}]',
            '"\\ud800"'.encode("utf-16"),
            '"\\ud800"',
        )
        self.assertRoundTrip(
            b'"\\ud83d\\ude00"',
            b'"\\uD83D\\uDE00"',
            b'"\\\\ud800"',
            b'"\\\\\\ud83d\\ude00"',
            b'"\\u00e9\\u4e2d"',
            b'{"\\ud83d\\ude00":"\\\\udc00"}',
        )

    def test_rawSurrogates(self) -> None:
        """
        The UTF-8 (or UTF-16) form of a surrogate is invalid: json.loads takes
        it (surrogatepass), this decoder does not.  So is a raw surrogate in a
        str frame.
        """
        self.assertRefused(
            b'"\xed\xa0\x80"',
            b'"\xed\xa0\xbd\xed\xb8\x80"',
            '"\ud800"'.encode("utf-16-le", "surrogatepass"),
            '["\udc00"]'.encode("utf-32", "surrogatepass"),
            '"\ud800"',
            '["caf\u00e9", "\udfff"]',
        )
        self.assertRoundTrip(b'"\xed\x9f\xbf"', '"\ud7ff\ue000"'.encode(), '["caf\u00e9"]')

    def test_depth(self) -> None:
        """
        256 levels of arrays and objects pass, 257 do not; brackets inside
        strings do not count.
        """
        self.assertEqual(MAX_DEPTH, 256)
        self.assertRoundTrip(
            b"[" * 256 + b"]" * 256,
            b'{"a":' * 256 + b"1" + b"}" * 256,
            b"[" + b"[[]]," * 300 + b"[" * 255 + b"]" * 255 + b"]",
            b'["' + b"[" * 600 + b'"]',
            b"[" * 200 + b'"]]]\\"]]]"' + b"]" * 200,
        )
        self.assertRefused(
            b"[" * 257 + b"]" * 257,
            b'{"a":' * 257 + b"1" + b"}" * 257,
            b'[{"a":' * 129 + b"1" + b"}]" * 129,
            b"[" + b"[[]]," * 300 + b"[" * 256 + b"]" * 256 + b"]",
            b"[" * 150 + b'"]]]",' * 50 + b"[" * 107 + b"]" * 257,
            b"[" * 130 + b'"\\\\",' + b"[" * 127 + b'"\\"]"' + b"]" * 257,
            (b"[" * 257 + b"]" * 257).decode(),
            b"[" * 100000 + b"]" * 100000,
        )


@implementer(IEncoder)
class Point:
    """An application object json cannot serialise; it encodes itself."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def encode(self, obj: object) -> list[bytes]:
        return [b'{"x":%d,' % self.x, b'"y":%d}' % self.y]


class EncoderTests(SynchronousTestCase):
    """JSONEncoder."""

    def test_nonAscii(self) -> None:
        """Non-ASCII characters are UTF-8, not \\u escapes."""
        self.assertEqual(JSONEncoder().encode(["é"]), b'["\xc3\xa9"]')

    def test_values(self) -> None:
        """Lists, tuples, nested dicts, numbers, None and booleans."""
        self.assertEqual(
            JSONEncoder().encode({"a": (1, 2.5), "b": [None, True]}),
            b'{"a":[1,2.5],"b":[null,true]}',
        )

    def test_bytesPassThrough(self) -> None:
        """bytes are an already-encoded document: the same object returns."""
        document = b'{"cached":true}'
        self.assertIs(JSONEncoder().encode(document), document)

    def test_adapter(self) -> None:
        """An unserialisable IEncoder provider encodes itself; chunks joined."""
        self.assertEqual(JSONEncoder().encode(Point(1, 2)), b'{"x":1,"y":2}')

    def test_unserialisable(self) -> None:
        """Objects json cannot serialise and without adapter are refused."""
        for obj in ({1, 2}, object(), {"nested": {3}}, [Point(1, 2)]):
            self.assertRaises(EncodeError, JSONEncoder().encode, obj)

    def test_notJson(self) -> None:
        """NaN, infinities, cycles and lone surrogates are refused."""
        cycle: list[object] = []
        cycle.append(cycle)
        for obj in (math.nan, [math.inf], -math.inf, cycle, "\ud800"):
            self.assertRaises(EncodeError, JSONEncoder().encode, obj)

    def test_specs(self) -> None:
        """json in a chain; it takes no parameters."""
        codec = parseCodecSpec("line+json")
        self.assertEqual(encodedBytes(codec.encoder.encode({"a": 1})), b'{"a":1}\n')
        out: list[object] = []
        self.assertRaises(CorruptFrame, codec.newDecoder().decode, b'{"a":1}\n{oops}\n', out)
        self.assertEqual(out, [{"a": 1}])
        self.assertRaises(CodecSpecError, parseCodecSpec, "line+json:indent=2")


class TextEncodingTests(SynchronousTestCase):
    """
    encoderIn: documents in a text stage's encoding, for chains such as
    line+text:encoding=gbk+json.
    """

    def test_provides(self) -> None:
        """The encoder provides ITextDocumentEncoder; UTF-8 is its own encode."""
        encoder = JSONEncoder()
        self.assertTrue(ITextDocumentEncoder.providedBy(encoder))
        self.assertEqual(encoder.encoderIn("UTF8"), encoder.encode)

    def test_inEncoding(self) -> None:
        """The document is written in the encoding, not in UTF-8."""
        encoder = JSONEncoder()
        self.assertEqual(encoder.encoderIn("gbk")({"a": "\u4e2d"}), '{"a":"\u4e2d"}'.encode("gbk"))
        self.assertEqual(encoder.encoderIn("utf-16")([1]), "[1]".encode("utf-16"))

    def test_escapesWhatTheEncodingLacks(self) -> None:
        """
        A document with a character the encoding lacks is written with every
        non-ASCII character escaped, and reads back the same.
        """
        encoder = JSONEncoder()
        self.assertEqual(encoder.encoderIn("ascii")({"a": "\u00e9"}), b'{"a":"\\u00e9"}')
        document = encoder.encoderIn("latin-1")(["\u00e9", "\u4e2d", "\U0001f600"])
        self.assertEqual(document, b'["\\u00e9","\\u4e2d","\\ud83d\\ude00"]')
        self.assertEqual(JSONDecoder().decodeObject(document), ["\u00e9", "\u4e2d", "\U0001f600"])

    def test_passThroughAndRefusals(self) -> None:
        """bytes and adapters pass through; what encode refuses, it refuses."""
        encode = JSONEncoder().encoderIn("gbk")
        document = b'{"cached":true}'
        self.assertIs(encode(document), document)
        self.assertEqual(encode(Point(1, 2)), b'{"x":1,"y":2}')
        for obj in (math.nan, [math.inf], "\ud800", ["\u4e2d", "\udc00"], {1, 2}):
            self.assertRaises(EncodeError, encode, obj)

    def test_chains(self) -> None:
        """A text stage before json: what the chain sends, it decodes the same."""
        values: list[object] = [{"a": "\u4e2d\u00e9"}, ["\U0001f600", 1.5], "plain", None]
        for spec in (
            "line+text:encoding=gbk+json",
            "length+text:encoding=utf-16+json",
            "netstring+text:encoding=ascii+json",
            "line+text:encoding=latin-1+json",
            "line+text+json",
        ):
            codec = parseCodecSpec(spec)
            wire = b"".join(encodedBytes(codec.encoder.encode(value)) for value in values)
            self.assertEqual(feedChunks(codec.newDecoder(), [wire]), values, spec)
        self.assertEqual(
            encodedBytes(parseCodecSpec("line+text:encoding=gbk+json").encoder.encode(["\u4e2d"])),
            '["\u4e2d"]\n'.encode("gbk"),
        )
        self.assertEqual(
            encodedBytes(parseCodecSpec("line+text+json").encoder.encode({"a": "\u00e9"})),
            encodedBytes(parseCodecSpec("line+json").encoder.encode({"a": "\u00e9"})),
        )


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


class PropertyTests(SynchronousTestCase):
    """Round trips."""

    @settings(max_examples=200, deadline=None)
    @given(value=_json)
    def test_roundTrip(self, value: object) -> None:
        """Any JSON value survives encode then decode."""
        encoded = JSONEncoder().encode(value)
        self.assertEqual(JSONDecoder().decodeObject(encoded), value)
        self.assertEqual(json.loads(encoded), value)

    @settings(max_examples=200, deadline=None)
    @given(
        values=st.lists(_json, max_size=10),
        cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20),
    )
    def test_chainAnyChunking(self, values: list[object], cuts: list[int]) -> None:
        """line+json: compact JSON has no raw LF, so any values frame as lines."""
        codec = parseCodecSpec("line+json")
        wire = b"".join(encodedBytes(codec.encoder.encode(v)) for v in values)
        self.assertEqual(feedChunks(codec.newDecoder(), cutAt(wire, cuts)), values)


# JSON text built from pieces that json.loads takes but the encoder may not
# send back (constants, huge numbers, surrogate escapes, raw surrogates,
# deep nesting), among ordinary ones.
_pieces = st.sampled_from(
    [
        "NaN",
        "-Infinity",
        "1e999",
        "-1e400",
        "1e308",
        "-0.0",
        "12.5",
        "7",
        "null",
        "true",
        '"\\ud800"',
        '"\\udc00"',
        '"\\ud83d\\ude00"',
        '"\\\\ud800"',
        '"\\\\\\ud800"',
        '"\\ud800\\\\\\udc00"',
        '"a\\"]]"',
        '"[{"',
        '"\ud800"',
        '"caf\u00e9"',
    ]
)
_documents = st.recursive(
    _pieces,
    lambda children: (
        st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]")
        # Keys differ: a later duplicate key would hide an earlier value
        # that json.loads parsed (and the decoder refuses).
        | st.lists(children, max_size=3).map(
            lambda values: "{" + ",".join(f'"k{index}":{value}' for index, value in enumerate(values)) + "}"
        )
    ),
    max_leaves=10,
)


def _depth(value: object) -> int:
    """How deeply C{value} nests lists and dicts (the document must be shallow enough to recurse)."""
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


class SendablePropertyTests(SynchronousTestCase):
    """The decoder refuses exactly what the encoder could not send back."""

    @settings(max_examples=300, deadline=None)
    @given(document=_documents, levels=st.sampled_from([0, 0, 1, 250, 255, 256, 257]))
    def test_refusesExactlyTheUnsendable(self, document: str, levels: int) -> None:
        """
        A document json.loads takes is decoded to the same value if the
        encoder can send that back and it nests at most MAX_DEPTH deep, and
        is a CorruptFrame otherwise; so is one json.loads refuses.
        """
        text = "[" * levels + document + "]" * levels
        frame = text.encode("utf-8", "surrogatepass")
        try:
            expected = json.loads(frame)
            sendable = _depth(expected) <= MAX_DEPTH
            JSONEncoder().encode(expected)
        except (ValueError, EncodeError):
            sendable = False
        for source in (frame, text):
            if sendable:
                decoded = JSONDecoder().decodeObject(source)
                self.assertEqual(repr(decoded), repr(expected))
                self.assertEqual(JSONDecoder().decodeObject(JSONEncoder().encode(decoded)), decoded)
            else:
                self.assertRaises(CorruptFrame, JSONDecoder().decodeObject, source)


# Every test above, again on the pure-Python implementation (iocpsvc.accel).
bothImplementations(globals())
