"""
Tests for L{iocpsvc.accel}: the compiled accelerator against the pure-Python
code it mirrors.

For every framer spec, Hypothesis builds byte streams (valid frames of edge
payloads, mixed with arbitrary and corrupting bytes), cuts them into
arbitrary chunks and feeds them, the way a context does (a C{bytes} read, or
the C{bytearray} buffer of a partial frame), to a compiled and a pure
decoder side by side: at every step both must consume the same count and
yield the same frames, or raise the same L{DecodeError} subclass with the
same words, and keep the same state.  Encoders likewise: the same bytes, or
the same L{EncodeError}; and a batch gives, at its C{take}, exactly what
the pure encoder gives object by object, raising at C{add} where the pure
encoder raises.

Skipped where the accelerator is not built, unless C{IOCPSVC_REQUIRE_EXTENSIONS}
is set (as in CI), when that is a failure.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from iocpsvc import accel
from iocpsvc.codecs import parseCodecSpec
from iocpsvc.errors import DecodeError, EncodeError
from tests import test_codec_symmetry as symmetry
from tests.helpers import cutAt

# Every framer of the symmetry tests, and a few more limits to run into.
FRAMERS = tuple(spec for spec in symmetry.SPECS if "+" not in spec) + (
    "length:size=8:max=100",
    "length:offset=2:size=3:strip=0",
    "delimiter:delim=aba:max=5",
    "netstring:max=9",
)

# The symmetry tests' edge payloads, and the headers and sizes that reach
# the framers' error paths.
EDGES = symmetry.EDGES + (
    b"05:",
    b"\xff\xff\xff\xff",
    b"\x80",
    b"x" * 41,
)


def requireCompiled() -> None:
    if not accel.compiledAvailable():
        if os.environ.get("IOCPSVC_REQUIRE_EXTENSIONS"):
            raise AssertionError(
                f"the compiled accelerator is required and missing: {accel.unavailableReason}"
            )
        raise SkipTest(f"the compiled accelerator is not built: {accel.unavailableReason}")


# Netty's configurations that strip part of the header cannot be encoded,
# so no codec spec builds them: their decoders are made directly.
DECODER_ONLY = (
    dict(lengthFieldOffset=1, lengthFieldLength=2, lengthAdjustment=1, initialBytesToStrip=3),
    dict(lengthFieldOffset=1, lengthFieldLength=2, lengthAdjustment=-3, initialBytesToStrip=3),
    dict(lengthFieldLength=1, initialBytesToStrip=3, maxFrameLength=50),
    dict(lengthFieldLength=2, initialBytesToStrip=1, signed=True, lengthAdjustment=-1),
)


def build(spec: str, implementation: str) -> Any:
    with accel.using(implementation):
        return parseCodecSpec(spec)


def buildDecoderOnly(parameters: dict[str, Any], implementation: str) -> Any:
    from iocpsvc.codecs import length

    pure = length.LengthFieldDecoder(**parameters)
    if implementation == "python":
        return pure
    return length._compiledClasses(accel.speedups or accel._loadIgnoringEnvironment()[0])[0](pure)


def feed(decoder: Any, chunks: list[bytes]) -> list[Any]:
    """
    Feed C{chunks} to C{decoder} as a context does; the events: per read,
    (consumed, frames, state), or at the first error (its class, its words,
    the frames before it).
    """
    events: list[Any] = []
    buffer: bytearray | None = None
    for chunk in chunks:
        data: bytes | bytearray = chunk
        if buffer:
            buffer += chunk
            data = buffer
        out: list[object] = []
        try:
            consumed = decoder.decode(data, out)
        except DecodeError as e:
            events.append(("error", type(e), str(e), out))
            return events
        events.append((consumed, out, stateOf(decoder)))
        if consumed >= len(data):
            buffer = None
        elif buffer is not None and data is buffer:
            del buffer[:consumed]
        else:
            buffer = bytearray(memoryview(data)[consumed:])
    return events


def stateOf(decoder: Any) -> tuple[Any, ...]:
    return tuple(
        getattr(decoder, name, None)
        for name in ("discardedFrames", "_scanned", "_discarding", "_payloadLength")
    )


def encodeAll(encoder: Any, objects: list[Any]) -> list[Any]:
    results: list[Any] = []
    for obj in objects:
        try:
            encoded = encoder.encode(obj)
        except EncodeError as e:
            results.append(("error", str(e)))
        else:
            results.append(encoded if isinstance(encoded, bytes) else b"".join(encoded))
    return results


# Deeper, random runs by hand: IOCPSVC_HYPOTHESIS_EXAMPLES=5000.
EXAMPLES = int(os.environ.get("IOCPSVC_HYPOTHESIS_EXAMPLES", "0")) or None
DERANDOMIZE = EXAMPLES is None

_streams = st.lists(
    st.one_of(
        st.tuples(st.just("frame"), st.one_of(st.binary(max_size=24), st.sampled_from(EDGES))),
        st.tuples(st.just("raw"), st.one_of(st.binary(max_size=12), st.sampled_from(EDGES))),
    ),
    max_size=12,
)


class CompiledMatchesPureTests(SynchronousTestCase):
    """The compiled framers and encoders against the pure ones, for any input."""

    def setUp(self) -> None:
        requireCompiled()

    def test_buildsCompiled(self) -> None:
        """Under C{using('compiled')}, every plain framer is built compiled."""
        for spec in FRAMERS:
            compiled = build(spec, "compiled")
            pure = build(spec, "python")
            self.assertIn("Compiled", type(compiled.newDecoder()).__name__, spec)
            self.assertNotIn("Compiled", type(pure.newDecoder()).__name__, spec)
            self.assertEqual(compiled.maxFrameLength, pure.maxFrameLength)

    @settings(
        max_examples=EXAMPLES or 200,
        derandomize=DERANDOMIZE,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        spec=st.sampled_from(FRAMERS),
        parts=_streams,
        cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=6),
    )
    def test_decodersAgree(self, spec: str, parts: list[tuple[str, bytes]], cuts: list[int]) -> None:
        """Same frames, counts, state and errors, for any stream in any chunks."""
        compiled, pure = build(spec, "compiled"), build(spec, "python")
        stream = b""
        for kind, payload in parts:
            if kind == "raw":
                stream += payload
                continue
            encoded = encodeAll(pure.encoder, [payload])[0]
            stream += payload if isinstance(encoded, tuple) else encoded
        chunks = cutAt(stream, cuts)
        self.assertEqual(feed(compiled.newDecoder(), chunks), feed(pure.newDecoder(), chunks), spec)

    @settings(max_examples=EXAMPLES or 100, derandomize=DERANDOMIZE, database=None, deadline=None)
    @given(
        parameters=st.sampled_from(DECODER_ONLY),
        stream=st.binary(max_size=60),
        cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=6),
    )
    def test_decoderOnlyAgree(self, parameters: dict[str, Any], stream: bytes, cuts: list[int]) -> None:
        """The same for the length decoders no spec builds (they strip part of the header)."""
        chunks = cutAt(stream, cuts)
        self.assertEqual(
            feed(buildDecoderOnly(parameters, "compiled"), chunks),
            feed(buildDecoderOnly(parameters, "python"), chunks),
        )

    def test_edgesAgree(self) -> None:
        """
        Every edge payload (and payloads around each spec's limits), framed
        and bare, in one read, in 1-byte reads and in 7-byte reads; and
        each one encoded alone and in a batch.
        """
        for spec in FRAMERS:
            compiled, pure = build(spec, "compiled"), build(spec, "python")
            maximum = pure.maxFrameLength
            payloads = list(EDGES) + [b"m" * n for n in (maximum - 1, maximum, maximum + 1) if 0 <= n <= 5000]
            expected = encodeAll(pure.encoder, payloads)
            self.assertEqual(encodeAll(compiled.encoder, payloads), expected, spec)
            for payload, want in zip(payloads, expected, strict=True):
                framed = payload if isinstance(want, tuple) else want
                for stream in (framed, framed + framed + payload + framed, payload + framed):
                    for size in (len(stream) or 1, 1, 7):
                        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
                        self.assertEqual(
                            feed(compiled.newDecoder(), chunks),
                            feed(pure.newDecoder(), chunks),
                            (spec, stream),
                        )
                newBatch = getattr(compiled.encoder, "newBatch", None)
                if newBatch is not None:
                    batch = newBatch()
                    try:
                        batch.add(payload)
                    except EncodeError as e:
                        self.assertEqual(("error", str(e)), want, spec)
                    else:
                        self.assertEqual(batch.take(), want, spec)

    def test_hardCases(self) -> None:
        """Many frames in one read; one long frame in many small reads; errors at the header."""
        for spec in FRAMERS:
            compiled, pure = build(spec, "compiled"), build(spec, "python")
            one = encodeAll(pure.encoder, [b"abcd"])[0]
            frames = (b"abcd" if isinstance(one, tuple) else one) * 500
            self.assertEqual(feed(compiled.newDecoder(), [frames]), feed(pure.newDecoder(), [frames]), spec)
            big = encodeAll(pure.encoder, [b"y" * 3000])[0]
            if isinstance(big, tuple):  # refused by a small max: feed the payload raw
                big = b"y" * 3000
            chunks = [big[i : i + 100] for i in range(0, len(big), 100)]
            self.assertEqual(feed(compiled.newDecoder(), chunks), feed(pure.newDecoder(), chunks), spec)

    @settings(max_examples=EXAMPLES or 200, derandomize=DERANDOMIZE, database=None, deadline=None)
    @given(
        spec=st.sampled_from(FRAMERS),
        objects=st.lists(
            st.one_of(
                st.binary(max_size=50),
                st.sampled_from(EDGES),
                st.binary(max_size=8).map(bytearray),
                st.just("text"),
                st.just(300 * b"z"),
            ),
            max_size=8,
        ),
    )
    def test_encodersAgree(self, spec: str, objects: list[Any]) -> None:
        """
        encode gives the pure encoder's bytes or error; a batch, at take(),
        the pure encodings joined, refusing at add() what the pure refuses.
        """
        compiled, pure = build(spec, "compiled"), build(spec, "python")
        expected = encodeAll(pure.encoder, objects)
        self.assertEqual(encodeAll(compiled.encoder, objects), expected, spec)
        newBatch = getattr(compiled.encoder, "newBatch", None)
        if newBatch is None:
            return
        batch = newBatch()
        batch.append(b"<raw>")
        added: list[Any] = [b"<raw>"]
        for obj, want in zip(objects, expected, strict=True):
            try:
                batch.add(obj)
            except EncodeError as e:
                self.assertEqual(("error", str(e)), want, spec)
            else:
                added.append(want)
        self.assertEqual(len(batch), len(added))
        self.assertEqual(batch.take(), b"".join(added), spec)
        self.assertEqual(len(batch), 0)
        self.assertEqual(batch.take(), b"")

    def test_batchManyObjects(self) -> None:
        """A batch grows past its inline room, and keeps the order of raw and framed writes."""
        compiled, pure = build("length", "compiled"), build("length", "python")
        batch = compiled.encoder.newBatch()
        expected = b""
        for index in range(100):
            payload = b"%d" % index
            batch.add(payload)
            expected += pure.encoder.encode(payload)
            if index % 7 == 0:
                batch.extend([b"r", b"s"])
                expected += b"rs"
        self.assertEqual(batch.size, len(expected))
        self.assertEqual(batch.take(), expected)

    def test_decodeArguments(self) -> None:
        """decode takes bytes-like data and a list, as the pure one does."""
        decoder = build("length", "compiled").newDecoder()
        out: list[object] = []
        self.assertEqual(decoder.decode(memoryview(b"\x00\x00\x00\x01a"), out), 5)
        self.assertEqual(out, [b"a"])
        self.assertRaises(TypeError, decoder.decode, b"", ())
        self.assertRaises(TypeError, decoder.decode, "text", [])


class ImplementationSwitchTests(SynchronousTestCase):
    """The switch between the implementations."""

    def test_using(self) -> None:
        """using() sets what codecs built inside it use, and restores it."""
        before = accel.implementation()
        with accel.using("python"):
            self.assertEqual(accel.implementation(), "python")
            self.assertNotIn("Compiled", type(parseCodecSpec("length").newDecoder()).__name__)
        self.assertEqual(accel.implementation(), before)
        self.assertRaises(ValueError, accel.using("fast").__enter__)

    def test_describe(self) -> None:
        """The start log's phrase names the implementation, and why pure Python runs."""
        with accel.using("python"):
            self.assertTrue(accel.describe().startswith("pure Python"))
        if accel.compiledAvailable():
            with accel.using("compiled"):
                self.assertEqual(accel.describe(), "compiled (iocpsvc._speedups)")


class StartLogTests(SynchronousTestCase):
    """The start log says which implementation the hot path runs."""

    def test_describeCodec(self) -> None:
        from twisted.internet.task import Clock

        from iocpsvc.factory import ConnectionContextFactory

        with accel.using("python"):
            pure = ConnectionContextFactory(reactor=Clock()).describeCodec()
        self.assertIn("pure Python", pure)
        if accel.compiledAvailable():
            with accel.using("compiled"):
                plain = ConnectionContextFactory(reactor=Clock()).describeCodec()
                chain = ConnectionContextFactory(codec="line+text", reactor=Clock()).describeCodec()
            self.assertIn("compiled framing and batch encoding", plain)
            self.assertIn("compiled framing (iocpsvc._speedups), per-object encoding", chain)
