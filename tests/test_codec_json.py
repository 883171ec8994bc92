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
from iocpsvc.codecs.json import JSONDecoder, JSONEncoder
from iocpsvc.errors import CodecSpecError, CorruptFrame, EncodeError
from iocpsvc.interfaces import IEncoder, IObjectDecoder
from tests.helpers import cutAt, encodedBytes, feedChunks


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
        self.assertRaises(CorruptFrame, JSONDecoder().decodeObject, 42)


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
