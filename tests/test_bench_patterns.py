"""
Tests for L{iocpsvc.bench.patterns}: the frames the load tool sends, built
once per run with the codec and checked by decoding them.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.bench.patterns import FramePatterns


class FramePatternsTests(SynchronousTestCase):
    """Frames built once per run with the codec, checked by decoding them."""

    def test_framingCodecs(self) -> None:
        """Every framing codec frames the payload so that its decoder gets it back."""
        for spec in (
            "length",
            "length:size=2:order=little",
            "line",
            "delimiter:delim=\\r\\n",
            "delimiter:delim=END",
            "fixed:size=100",
            "netstring",
            "diocp",
            "hpsocket",
        ):
            patterns = FramePatterns(spec, 100, variants=300)
            first, second = patterns.pattern(0), patterns.pattern(1)
            self.assertEqual(len(first.payload), 100, spec)
            self.assertNotEqual(first.payload, second.payload, spec)
            self.assertGreater(len(set(first.payload)), 50, spec)  # not constant
            self.assertEqual(first.wireSize, second.wireSize, spec)
            self.assertEqual(first.block, first.frame * (len(first.block) // first.wireSize), spec)
            self.assertGreaterEqual(len(first.block), 65536 + first.wireSize, spec)

    def test_connectionsGetVariants(self) -> None:
        """Neighbouring connections send different payloads."""
        patterns = FramePatterns("length", 64, variants=1000)
        self.assertEqual(patterns.variants, 256 - 3)  # CR, LF and the zero byte of length's header avoided
        self.assertNotEqual(patterns.forConnection(7).frame, patterns.forConnection(8).frame)
        self.assertEqual(patterns.forConnection(7).frame, patterns.forConnection(7 + patterns.variants).frame)

    def test_objectCodecRefused(self) -> None:
        """A spec with object stages is refused: its echo is not byte-exact."""
        self.assertRaises(ValueError, FramePatterns, "line+json", 64)

    def test_fixedSizeMustMatch(self) -> None:
        """fixed:size=16 cannot frame 64-byte payloads."""
        error = self.assertRaises(ValueError, FramePatterns, "fixed:size=16", 64)
        self.assertIn("64-byte", str(error))

    def test_unknownCodec(self) -> None:
        """An unknown codec name is a ValueError (a usage error on the command line)."""
        self.assertRaises(ValueError, FramePatterns, "nonesuch", 64)
