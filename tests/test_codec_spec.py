"""
Tests for codec spec strings (L{iocpsvc.codecs.parseCodecSpec}), plugin
discovery of third-party codecs, and the chunking property across every
built-in codec and chain.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

import twisted.plugins
from iocpsvc.codecs import availableCodecs, parseCodecSpec
from iocpsvc.errors import CodecSpecError, CorruptFrame
from tests.helpers import bothImplementations, cutAt, encodeFrames, feedChunks
from tests.netutil import temporaryDirectory


class SpecParsingTests(SynchronousTestCase):
    """The spec grammar and its error messages."""

    def test_names(self) -> None:
        """Every built-in codec of the issue is registered."""
        self.assertTrue(
            {"length", "line", "delimiter", "fixed", "netstring", "diocp", "hpsocket", "text", "json"}
            <= set(availableCodecs())
        )

    def test_parameters(self) -> None:
        """Parameters are converted and reach the codec."""
        codec = parseCodecSpec("length:size=2:order=little:max=64KiB+json")
        self.assertEqual(codec.names, ["length", "json"])
        self.assertEqual(codec.maxFrameLength, 65536)
        self.assertEqual(codec.newDecoder().maxFrameLength, 65536)
        self.assertEqual(encodeFrames(codec.spec, [{"a": 1}]), b"\x07\x00" + b'{"a":1}')

    def test_chainRoundTrip(self) -> None:
        """line+json decodes what it encodes."""
        codec = parseCodecSpec("line:max=8192+json")
        out: list[object] = []
        codec.newDecoder().decode(encodeFrames("line+json", [{"x": [1, "é"]}, 3]), out)
        self.assertEqual(out, [{"x": [1, "é"]}, 3])

    def test_escapedDelimiter(self) -> None:
        """Backslash escapes reach the delimiter parameter; \\: is a colon."""
        self.assertEqual(encodeFrames("delimiter:delim=\\r\\n", [b"a"]), b"a\r\n")
        self.assertEqual(encodeFrames("delimiter:delim=\\:\\:", [b"a"]), b"a::")
        self.assertEqual(encodeFrames("delimiter:delim=0x00", [b"a"]), b"a\x00")

    def test_defaultMaxFrameLength(self) -> None:
        """The process-wide default applies unless the spec gives max."""
        self.assertEqual(parseCodecSpec("length", 1000).maxFrameLength, 1000)
        self.assertEqual(parseCodecSpec("length:max=10", 1000).maxFrameLength, 10)

    def test_codecOwnDefaults(self) -> None:
        """Without --max-frame-length, DIOCP keeps 10 MiB and HP-Socket 256 KiB."""
        self.assertEqual(parseCodecSpec("diocp").maxFrameLength, 10 * 1024 * 1024)
        self.assertEqual(parseCodecSpec("hpsocket").maxFrameLength, 256 * 1024)
        self.assertEqual(parseCodecSpec("length").maxFrameLength, 1024 * 1024)

    def test_errorsNameTheBadPart(self) -> None:
        """Each malformed spec raises CodecSpecError naming what is wrong."""
        for spec, words in [
            ("", "empty"),
            ("nosuch", "nosuch"),
            ("json", "framer"),
            ("line+length", "framer"),
            ("length:size", "key=value"),
            ("length:bogus=1", "bogus"),
            ("length:size=7", "size"),
            ("length:max=lots", "lots"),
            ("length:size=2:size=2", "twice"),
            ("hpsocket:max=8MiB", "hpsocket"),
            ("line+", "empty"),
        ]:
            with self.assertRaises(CodecSpecError, msg=spec) as caught:
                parseCodecSpec(spec)
            self.assertIn(words, str(caught.exception), spec)

    def test_objectStageErrorIsProtocolError(self) -> None:
        """Bad JSON in a frame is a CorruptFrame (protocol-error)."""
        decoder = parseCodecSpec("line+json").newDecoder()
        out: list[object] = []
        with self.assertRaises(CorruptFrame):
            decoder.decode(b'{"ok": 1}\n{bad\n', out)
        self.assertEqual(out, [{"ok": 1}])


PLUGIN_SOURCE = textwrap.dedent(
    """
    from iocpsvc.codecs import CodecPlugin
    from iocpsvc.codecs.length import _build

    def build(defaultMaxFrameLength, **params):
        return _build(defaultMaxFrameLength, size=1)

    tinyLength = CodecPlugin(
        name="tiny-length",
        kind="framer",
        description="a 1-byte length prefix, from a third-party plugin",
        parameters={},
        builder=build,
    )
    """
)


class PluginDiscoveryTests(SynchronousTestCase):
    """Third-party codecs are found as Twisted plugins."""

    def test_thirdPartyCodec(self) -> None:
        """A module in a twisted/plugins directory adds a codec name."""
        base = temporaryDirectory(self)
        pluginDir = os.path.join(base, "twisted", "plugins")
        os.makedirs(pluginDir)
        with open(os.path.join(pluginDir, "iocpsvc_test_tiny.py"), "w") as f:
            f.write(PLUGIN_SOURCE)
        twisted.plugins.__path__.append(pluginDir)
        self.addCleanup(twisted.plugins.__path__.remove, pluginDir)
        self.addCleanup(sys.modules.pop, "twisted.plugins.iocpsvc_test_tiny", None)
        codec = parseCodecSpec("tiny-length+text")
        self.assertEqual(encodeFrames("tiny-length+text", ["hey"]), b"\x03hey")
        out: list[object] = []
        codec.newDecoder().decode(b"\x02hi", out)
        self.assertEqual(out, ["hi"])
        self.assertIn("tiny-length", availableCodecs())


# spec -> a strategy for objects it can carry
CARRIED = {
    "length": st.binary(max_size=200),
    "length:size=2:order=little": st.binary(max_size=200),
    "length:size=3:adjust=-3": st.binary(max_size=200),
    "line": st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
    "delimiter:delim=\\r\\n": st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"")),
    "delimiter:delim=0x00": st.binary(max_size=80).map(lambda b: b.replace(b"\x00", b"")),
    "fixed:size=5": st.binary(min_size=5, max_size=5),
    "netstring": st.binary(max_size=200),
    "diocp": st.binary(min_size=1, max_size=200),
    "hpsocket:flag=0x155": st.binary(min_size=1, max_size=200),
    "line+text": st.text(max_size=40).map(lambda s: s.replace("\n", "").replace("\r", "")),
    "length+json": st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children),
        max_leaves=8,
    ),
    "netstring+text": st.text(max_size=40),
}


@st.composite
def framesAndCuts(draw: st.DrawFn) -> tuple[str, list[object], list[int]]:
    spec = draw(st.sampled_from(sorted(CARRIED)))
    objects = draw(st.lists(CARRIED[spec], max_size=12))
    cuts = draw(st.lists(st.integers(min_value=0, max_value=5000), max_size=15))
    return spec, objects, cuts


class ChunkingPropertyTests(SynchronousTestCase):
    """Any sequence of frames, cut anywhere, decodes the same for every codec."""

    @settings(max_examples=400, deadline=None)
    @given(framesAndCuts())
    def test_anyCodecAnyChunking(self, case: tuple[str, list[object], list[int]]) -> None:
        """Encode, cut at arbitrary points, feed chunk by chunk: same objects."""
        spec, objects, cuts = case
        wire = encodeFrames(spec, objects)
        decoded = feedChunks(parseCodecSpec(spec).newDecoder(), cutAt(wire, cuts))
        if spec.endswith("json"):
            self.assertEqual(json.dumps(decoded), json.dumps(objects))
        else:
            self.assertEqual(decoded, objects)


# Every test above, again on the pure-Python implementation (iocpsvc.accel).
bothImplementations(globals())
