"""
Tests for the built-in codecs in L{iocpsvc.codecs}: decode/encode symmetry.

Whatever a built-in decoder yields, the same codec's encoder encodes, and
what it writes decodes to the same objects again.  So an echo (or any
handler that writes back what it received) never fails on the way out: a
stream the codec cannot take back is refused as it is decoded, with a
L{DecodeError} (a C{protocol-error} close and one line in the log), not by
the encoder (a C{handler-error} close with a traceback).

For every spec in L{SPECS}, streams are fed to a fresh decoder in
arbitrary chunks, the way a context does, and the objects it yields up to
the first L{DecodeError} are kept (any other exception fails the test);
each object must encode, and the encoded bytes must decode, in one read, to
the same objects with nothing left over.  Three tests per spec: every one
of L{EDGES}, bare and framed by the spec's own framer; then two Hypothesis
properties, over arbitrary bytes, and over valid frames of edge-case
payloads mixed with edge cases and arbitrary bytes -- so that the object
stages and the rare paths are reached, not only garbage that fails at the
first header.

Then, over real TCP, the built-in echo server with the codecs of issue 10
(finding 3): a stray CR is echoed byte-exact, and JSON that cannot be sent
back is a protocol error.
"""

from __future__ import annotations

import functools
import re
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from iocpsvc import accel, errors
from iocpsvc.codecs import parseCodecSpec
from iocpsvc.codecs.length import LengthFieldPrepender, WholeFrameEncoder
from iocpsvc.errors import DecodeError, EncodeError
from tests.helpers import bothImplementations, cutAt, encodedBytes
from tests.netutil import connectRaw, echoMany, waitUntil
from tests.test_tcp import ServerMixin

SPECS = (
    # length: Netty's parameters, every size, both orders, signed, adjusted,
    # offset, and strip=0 (whole frames written back as they are).
    "length",
    "length:size=1",
    "length:size=2:order=little",
    "length:size=3",
    "length:size=8",
    "length:size=2:adjust=-2",
    "length:size=2:adjust=3",
    "length:size=1:signed=true",
    "length:size=2:signed=true:adjust=-2:order=little",
    "length:max=40",
    "length:strip=0",
    "length:size=1:strip=0",
    "length:size=2:adjust=-2:strip=0",
    "length:offset=2:size=3:strip=0",
    "length:size=3:adjust=2:strip=0",
    "length:offset=1:size=2:adjust=-3:strip=0:signed=true",
    # delimiters: lines (LF, CRLF), multi-byte and self-overlapping ones
    "line",
    "line:eol=\\r\\n",
    "line:max=8",
    "line:max=8:discard=true",
    "delimiter:delim=\\r\\n",
    "delimiter:delim=0x00",
    "delimiter:delim=0x0000",
    "delimiter:delim=aba",
    "delimiter:delim=0x0000:max=6:discard=true",
    "netstring",
    "netstring:max=20",
    "fixed:size=1",
    "fixed:size=4",
    "diocp",
    "diocp:checksum=false",
    "diocp:max=40",
    "hpsocket",
    "hpsocket:flag=0x155",
    "hpsocket:max=40",
    # object stages and chains
    "line+text",
    "line:eol=\\r\\n+text",
    "line+text:encoding=utf-16",
    "length+text:encoding=latin-1",
    "netstring+text:encoding=gbk",
    "length+text:encoding=utf-16",
    "fixed:size=4+text",
    "diocp+text",
    "hpsocket+text:encoding=utf-16-le",
    "line+json",
    "length+json",
    "netstring+json",
    "diocp+json",
    "hpsocket:flag=0x155+json",
    "line+text+json",
    "length+text+json",
    "length+text:encoding=gbk+json",
    "length+text:encoding=utf-16+json",
    "netstring+text:encoding=ascii+json",
    "delimiter:delim=0x00+text:encoding=latin-1+json",
)
"""Every built-in codec and the chains worth checking; a new codec is one line."""

# Payloads that reach the rare paths: line ends, delimiters, netstring and
# DIOCP fragments, JSON that Python parses but cannot send back, JSON at the
# nesting limit, BOMs, and text in the encodings above.
EDGES = (
    b"",
    b"\r",
    b"\n",
    b"\r\n",
    b"abc\r",
    b"abc\r\r\n",
    b"\x00",
    b"\x00\x00",
    b"x\x00",
    b"aba",
    b"ab",
    b"5:hello,",
    b"0:,",
    b"\x10\x0d",
    b"NaN",
    b"[Infinity]",
    b"-Infinity",
    b"1e999",
    b"[-1e400]",
    b"1" * 320 + b".5",
    b"12.5",
    b"-0.0",
    b'"\\ud800"',
    b'{"\\udc00":1}',
    b'"\\ud83d\\ude00"',
    b'"\\\\ud800"',
    b'"\xed\xa0\x80"',
    b"\xef\xbb\xbf[1]",
    "[1e999]".encode("utf-16"),
    '"\\ud800"'.encode("utf-16"),
    '"é"'.encode("utf-16"),
    '{"a":[1,"é"]}'.encode("utf-16-le"),
    b"\xff\xfe",
    b"[" * 256 + b"]" * 256,
    b"[" * 257 + b"]" * 257,
    b'{"op":"echo","n":[1,2.5,null,true],"s":"caf\xc3\xa9"}',
    '"中文"'.encode("gbk"),
    b'"\xc3\xa9"',
    b"\xc3\xa9",
    b'"\\u00e9\\u4e2d"',
)

_payloads = st.one_of(
    st.binary(max_size=24),
    st.sampled_from(EDGES),
    st.lists(st.sampled_from(EDGES) | st.binary(max_size=6), max_size=3).map(b"".join),
)


# Parsed once per spec: a codec's encoder is shared anyway, and newDecoder()
# gives each stream a fresh decoder.
@functools.cache
def _codecOf(spec: str, implementation: str) -> Any:
    return parseCodecSpec(spec)


def _codec(spec: str) -> Any:
    # Cached per implementation: the Pure twins build pure codecs.
    return _codecOf(spec, accel.implementation())


def _framerOf(spec: str) -> Any:
    """
    A function that frames a payload with C{spec}'s framer (the part before
    the first C{+}; no spec here has an escaped C{+}), or returns C{None}
    when the framer cannot carry it.
    """
    framer = _codec(spec.split("+", 1)[0])
    encode = framer.encoder.encode
    if isinstance(framer.encoder, WholeFrameEncoder):
        # strip=0: the application writes whole frames; build one around
        # the payload (a filler header before the length field, if any).
        decoder = framer.newDecoder()
        prefix = b"\xca" * decoder.lengthFieldOffset
        encode = LengthFieldPrepender(
            decoder.lengthFieldLength, decoder.lengthAdjustment, decoder.byteOrder, decoder.signed
        ).encode

        def frame(payload: bytes) -> bytes | None:
            try:
                return prefix + encodedBytes(encode(payload))
            except EncodeError:
                return None

        return frame

    def frameWithEncoder(payload: bytes) -> bytes | None:
        try:
            return encodedBytes(encode(payload))
        except EncodeError:
            return None

    return frameWithEncoder


@st.composite
def framesAndNoise(draw: st.DrawFn, spec: str) -> bytes:
    """
    Valid frames of edge-case payloads (C{spec}'s framer cuts them out whole
    and hands them to its object stages, if any), with bare edge cases and
    arbitrary bytes among them.
    """
    frame = _framerOf(spec)
    pieces = []
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        kind = draw(st.integers(min_value=0, max_value=9))
        if kind < 6:
            framed = frame(draw(_payloads))
            if framed is not None:
                pieces.append(framed)
        elif kind < 9:
            pieces.append(draw(st.sampled_from(EDGES)))
        else:
            pieces.append(draw(st.binary(max_size=12)))
    return b"".join(pieces)


def decodeUntilError(spec: str, stream: bytes, cuts: list[int]) -> list[object]:
    """
    The objects a fresh decoder for C{spec} yields from C{stream} fed in the
    chunks C{cuts} makes (as a context does), up to the first
    L{DecodeError}.  Any other exception propagates.
    """
    decoder = _codec(spec).newDecoder()
    buffer = bytearray()
    objects: list[object] = []
    try:
        for chunk in cutAt(stream, cuts):
            buffer += chunk
            del buffer[: decoder.decode(buffer, objects)]
    except DecodeError:
        pass
    return objects


def _testName(spec: str) -> str:
    """C{length:size=2:order=little} -> C{length_size_2_order_little}."""
    return re.sub(r"[^0-9A-Za-z]+", "_", spec).strip("_")


_cuts = st.lists(st.integers(min_value=0, max_value=4096), max_size=8)

# Bounded and derandomized, with no example database: the same examples on
# every run, a few seconds for the whole module (the edge cases themselves
# are checked one by one, so the properties need few examples each).
_anyBytesSettings = settings(max_examples=15, deadline=None, derandomize=True, database=None)
_framesSettings = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.differing_executors],
)


class SymmetryTests(SynchronousTestCase):
    """
    For each spec of L{SPECS}: what decodes, encodes, and decodes again to
    the same objects (three tests per spec, generated below).
    """

    def checkSymmetry(self, spec: str, stream: bytes, cuts: list[int]) -> None:
        """Decode C{stream}, encode what came out, decode that again."""
        objects = decodeUntilError(spec, stream, cuts)
        codec = _codec(spec)
        wire = b"".join(encodedBytes(codec.encoder.encode(obj)) for obj in objects)
        again: list[object] = []
        consumed = codec.newDecoder().decode(wire, again)
        self.assertEqual(consumed, len(wire))
        self.assertEqual(again, objects)
        # Equal is not enough: 1 == 1.0 == True; the types must match too.
        self.assertEqual(repr(again), repr(objects))


def _symmetryTests(spec: str) -> list[Any]:
    """The tests of C{spec}, named after it: every edge case, then two properties."""

    def edgeCases(self: Any) -> None:
        frame = _framerOf(spec)
        framed = [frame(payload) for payload in EDGES]
        streams = [*EDGES, *(f for f in framed if f is not None)]
        # One at a time (each from a fresh decoder), and all in one stream.
        for stream in [*streams, b"".join(f for f in framed if f is not None)]:
            self.checkSymmetry(spec, stream, [])

    @_anyBytesSettings
    @given(stream=st.binary(max_size=200), cuts=_cuts)
    def anyBytes(self: Any, stream: bytes, cuts: list[int]) -> None:
        self.checkSymmetry(spec, stream, cuts)

    @_framesSettings
    @given(stream=framesAndNoise(spec), cuts=_cuts)
    def framesAndNoise_(self: Any, stream: bytes, cuts: list[int]) -> None:
        self.checkSymmetry(spec, stream, cuts)

    tests = []
    for test, kind, what in (
        (edgeCases, "edgeCases", "each edge case, bare and framed"),
        (anyBytes, "anyBytes", "arbitrary bytes"),
        (framesAndNoise_, "framesAndNoise", "valid frames of edge cases among arbitrary bytes"),
    ):
        test.__name__ = f"test_{kind}_{_testName(spec)}"
        test.__doc__ = f"{spec}, {what}: whatever decodes, encodes and decodes the same."
        tests.append(test)
    return tests


for _spec in SPECS:
    for _test in _symmetryTests(_spec):
        setattr(SymmetryTests, _test.__name__, _test)
del _spec, _test


class EdgeCaseTests(SynchronousTestCase):
    """The inputs of issue 10, finding 3, one by one."""

    def test_strayCarriageReturn(self) -> None:
        """line and line+text: "abc" CR CR LF decodes and encodes back byte-exact."""
        for spec, expected in (("line", b"abc\r"), ("line+text", "abc\r")):
            objects = decodeUntilError(spec, b"abc\r\r\n", [])
            self.assertEqual(objects, [expected])
            self.assertEqual(encodedBytes(parseCodecSpec(spec).encoder.encode(objects[0])), b"abc\r\r\n")

    def test_jsonRefusedAtDecode(self) -> None:
        """Documents json.loads takes but the encoder cannot send back are DecodeErrors."""
        for document in (b"NaN", b"Infinity", b"-Infinity", b"1e999", b'"\\ud800"', b'"\xed\xa0\x80"'):
            decoder = parseCodecSpec("length+json").newDecoder()
            with self.assertRaises(DecodeError, msg=document) as caught:
                decoder.decode(struct.pack(">I", len(document)) + document, [])
            self.assertEqual(caught.exception.closeReason, errors.PROTOCOL_ERROR)


class EchoServerTests(ServerMixin, TestCase):
    """The built-in echo server over real TCP, with the codecs of finding 3."""

    timeout = 60

    @defer.inlineCallbacks
    def checkStrayCarriageReturn(self, spec: str) -> Any:
        from twisted.internet import reactor

        factory, port = self.startServer(spec)
        # LF-ended lines, so that the echo (eol=\n) is byte-exact.
        wires = [b"abc\r\r\n", b"abc\r\r\n" * 3, b"\r\r\nx\r\r\r\nplain\n"]
        received = yield echoMany(reactor, port, wires)
        self.assertEqual(received, wires)
        self.assertEqual(factory.counters.handlerErrors, 0)
        self.assertEqual(factory.counters.decodeErrors, 0)

    def test_lineStrayCarriageReturn(self) -> Any:
        """line: "abc" CR CR LF is echoed byte-exact."""
        return self.checkStrayCarriageReturn("line")

    def test_lineTextStrayCarriageReturn(self) -> Any:
        """line+text: "abc" CR CR LF is echoed byte-exact."""
        return self.checkStrayCarriageReturn("line+text")

    @defer.inlineCallbacks
    def test_jsonNotSendable(self) -> Any:
        """
        length+json: NaN, 1e999 and "\\ud800" close their connections as
        protocol errors (decode errors, no handler error); a good client
        beside them is echoed byte-exact.
        """
        from twisted.internet import reactor

        factory, port = self.startServer("length+json")
        documents = [b"NaN", b"1e999", b'"\\ud800"']
        attackers = yield connectRaw(reactor, port, len(documents))
        self.assertEqual(len(attackers), len(documents))
        # Compact UTF-8 JSON, as the encoder writes it: the echo is byte-exact.
        compact = (b'{"op":"echo","n":[1,2.5]}', b'"\xc3\xa9"')
        good = [b"".join(struct.pack(">I", len(d)) + d for d in compact)]
        echoing = echoMany(reactor, port, good)
        for attacker, document in zip(attackers, documents, strict=True):
            attacker.transport.write(struct.pack(">I", len(document)) + document)
        echoedToAttackers = yield defer.gatherResults([a.lost for a in attackers])
        received = yield echoing
        self.assertEqual(received, good)
        self.assertEqual(echoedToAttackers, [b""] * len(documents))
        yield waitUntil(
            reactor, lambda: factory.counters.closedTotal[errors.PROTOCOL_ERROR] == len(documents)
        )
        self.assertEqual(factory.counters.decodeErrors, len(documents))
        self.assertEqual(factory.counters.handlerErrors, 0)
        self.assertEqual(factory.counters.closedTotal[errors.HANDLER_ERROR], 0)


# Every test above, again on the pure-Python implementation (iocpsvc.accel).
bothImplementations(globals())
