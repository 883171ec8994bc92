"""
The load tool (iocpsvc.bench): its latency histogram, its frame patterns,
runs against an in-process echo server over real TCP on 127.0.0.1 (echo,
every framing codec, corruption, early close, silence, refused connects),
and the command line in worker processes.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet import defer
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from iocpsvc import bench
from iocpsvc.contexts import EchoContext
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.service import SocketServerService
from tests.netutil import REPO

REPORT_KEYS = {
    "connections",
    "in_flight",
    "size",
    "codec",
    "duration",
    "frames",
    "bytes",
    "frames_per_second",
    "mb_per_second",
    "latency_ms",
    "errors",
    "processes",
    "client_cpu_seconds",
    "client_cpu_us_per_frame",
}


class CorruptingEchoContext(EchoContext):
    """Echoes every frame with its first payload byte flipped."""

    __slots__ = ()

    def objectReceived(self, obj: object) -> None:
        payload = bytearray(obj)  # type: ignore[call-overload]
        payload[0] ^= 0xFF
        self.writeObject(bytes(payload))


class ClosingContext(EchoContext):
    """Closes the connection on the first frame instead of echoing it."""

    __slots__ = ()

    def objectReceived(self, obj: object) -> None:
        self.close()


class SilentContext(EchoContext):
    """Takes every frame and never answers."""

    __slots__ = ()

    def objectReceived(self, obj: object) -> None:
        pass


class LatencyHistogramTests(SynchronousTestCase):
    """Percentiles from log-scale buckets, exact maximum, merging."""

    def assertClose(self, value: float, expected: float) -> None:
        """Within one bucket's width (2.3%) of C{expected}."""
        self.assertTrue(abs(value - expected) <= expected * 0.025, f"{value} is not close to {expected}")

    def test_knownPercentiles(self) -> None:
        """1..1000 ms once each: p50 ~ 500 ms, p99 ~ 990 ms (within a bucket), max exact."""
        histogram = bench.LatencyHistogram()
        for ms in range(1, 1001):
            histogram.record(ms / 1000)
        self.assertEqual(histogram.count, 1000)
        p50, p99 = histogram.percentile(50), histogram.percentile(99)
        assert p50 is not None and p99 is not None
        self.assertClose(p50, 0.500)
        self.assertClose(p99, 0.990)
        self.assertEqual(histogram.percentile(100), 1.0)
        self.assertEqual(histogram.percentile(0), 0.001)
        self.assertEqual(histogram.maximum, 1.0)
        self.assertClose(histogram.mean() or 0, 0.5005)

    def test_weights(self) -> None:
        """record(seconds, count) counts C{count} latencies: 99 fast ones and one slow."""
        histogram = bench.LatencyHistogram()
        histogram.record(0.001, 99)
        histogram.record(2.0)
        p50, p99 = histogram.percentile(50), histogram.percentile(99)
        assert p50 is not None and p99 is not None
        self.assertClose(p50, 0.001)
        self.assertClose(p99, 0.001)
        self.assertEqual(histogram.percentile(99.5), 2.0)
        self.assertEqual(histogram.count, 100)

    def test_extremes(self) -> None:
        """Latencies under 1 µs and over 10 s are kept in the end buckets, clamped to min and max."""
        histogram = bench.LatencyHistogram()
        histogram.record(1e-7)
        histogram.record(30.0)
        self.assertEqual(histogram.percentile(1), 1e-7)
        self.assertEqual(histogram.percentile(100), 30.0)

    def test_empty(self) -> None:
        """No latencies: no percentiles."""
        histogram = bench.LatencyHistogram()
        self.assertIsNone(histogram.percentile(50))
        self.assertIsNone(histogram.mean())

    def test_mergeAndJSON(self) -> None:
        """Two halves merged (through JSON, as workers send them) equal the whole."""
        whole, first, second = bench.LatencyHistogram(), bench.LatencyHistogram(), bench.LatencyHistogram()
        for ms in range(1, 1001):
            whole.record(ms / 1000)
            (first if ms % 2 else second).record(ms / 1000)
        merged = bench.LatencyHistogram.fromJSON(json.loads(json.dumps(first.toJSON())))
        merged.merge(bench.LatencyHistogram.fromJSON(json.loads(json.dumps(second.toJSON()))))
        self.assertEqual(merged.counts, whole.counts)
        self.assertEqual((merged.count, merged.minimum, merged.maximum), (1000, 0.001, 1.0))
        self.assertEqual(merged.percentile(99), whole.percentile(99))


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
            patterns = bench.FramePatterns(spec, 100, variants=300)
            first, second = patterns.pattern(0), patterns.pattern(1)
            self.assertEqual(len(first.payload), 100, spec)
            self.assertNotEqual(first.payload, second.payload, spec)
            self.assertGreater(len(set(first.payload)), 50, spec)  # not constant
            self.assertEqual(first.wireSize, second.wireSize, spec)
            self.assertEqual(first.block, first.frame * (len(first.block) // first.wireSize), spec)
            self.assertGreaterEqual(len(first.block), 65536 + first.wireSize, spec)

    def test_connectionsGetVariants(self) -> None:
        """Neighbouring connections send different payloads."""
        patterns = bench.FramePatterns("length", 64, variants=1000)
        self.assertEqual(patterns.variants, 256 - 3)  # CR, LF and the zero byte of length's header avoided
        self.assertNotEqual(patterns.forConnection(7).frame, patterns.forConnection(8).frame)
        self.assertEqual(patterns.forConnection(7).frame, patterns.forConnection(7 + patterns.variants).frame)

    def test_objectCodecRefused(self) -> None:
        """A spec with object stages is refused: its echo is not byte-exact."""
        self.assertRaises(ValueError, bench.FramePatterns, "line+json", 64)

    def test_fixedSizeMustMatch(self) -> None:
        """fixed:size=16 cannot frame 64-byte payloads."""
        error = self.assertRaises(ValueError, bench.FramePatterns, "fixed:size=16", 64)
        self.assertIn("64-byte", str(error))

    def test_unknownCodec(self) -> None:
        """An unknown codec name is a ValueError (a usage error on the command line)."""
        self.assertRaises(ValueError, bench.FramePatterns, "nonesuch", 64)


class LoadRunTests(TestCase):
    """runLoad against an in-process iocpsvc server on 127.0.0.1."""

    timeout = 60

    def startServer(self, codec: str = "length", contextClass: Any = EchoContext) -> int:
        from twisted.internet import reactor

        factory = ConnectionContextFactory(contextClass, codec, reactor=reactor)
        service = SocketServerService(
            factory, ["tcp:0:interface=127.0.0.1"], reactor=reactor, shutdownTimeout=5
        )
        service.startService()
        self.addCleanup(service.stopService)
        address: Any = service.ports[0].getHost()
        return int(address.port)

    def load(self, port: int, **options: Any) -> defer.Deferred[dict[str, Any]]:
        from twisted.internet import reactor

        options.setdefault("warmup", 0)
        options.setdefault("duration", 0.3)
        options.setdefault("connections", 5)
        options.setdefault("inFlight", 4)
        return bench.runLoad(reactor, "127.0.0.1", port, **options)

    @defer.inlineCallbacks
    def test_echo(self) -> Any:
        """A second against the echo server: frames counted, no errors, latencies, CPU."""
        port = self.startServer()
        progress: list[dict[str, Any]] = []
        report = yield self.load(
            port,
            duration=1.0,
            warmup=0.2,
            connections=20,
            inFlight=8,
            progress=progress.append,
            progressInterval=0.25,
        )
        self.assertTrue(REPORT_KEYS <= set(report), REPORT_KEYS - set(report))
        self.assertEqual(report["errors"], {})
        self.assertEqual(report["connected"], 20)
        self.assertGreater(report["frames"], 0)
        self.assertEqual(report["bytes"], report["frames"] * (64 + 4))
        latency = report["latency_ms"]
        self.assertTrue(0 < latency["p50"] <= latency["p99"] <= latency["max"], latency)
        self.assertGreater(report["frames_per_second"], 0)
        self.assertGreaterEqual(report["measured_seconds"], 1.0)
        self.assertIsNotNone(report["client_cpu_us_per_frame"])
        phases = [p["phase"] for p in progress]
        self.assertIn("measuring", phases)
        self.assertEqual(phases[-1], "done")

    @defer.inlineCallbacks
    def test_codecs(self) -> Any:
        """Every framing codec's echo checks out byte for byte."""
        for spec in ("line", "delimiter:delim=\\r\\n", "fixed:size=64", "netstring", "diocp", "hpsocket"):
            port = self.startServer(spec)
            report = yield self.load(port, codec=spec, size=64)
            self.assertEqual(report["errors"], {}, spec)
            self.assertGreater(report["frames"], 0, spec)

    @defer.inlineCallbacks
    def test_largeFrames(self) -> Any:
        """Frames larger than a socket read (100 KiB) are compared piece by piece."""
        port = self.startServer()
        report = yield self.load(port, size=100 * 1024, inFlight=2, connections=2)
        self.assertEqual(report["errors"], {})
        self.assertGreater(report["frames"], 0)

    @defer.inlineCallbacks
    def test_corruption(self) -> Any:
        """A server that flips a byte is caught: one mismatch per connection, each aborted."""
        port = self.startServer(contextClass=CorruptingEchoContext)
        report = yield self.load(port)
        self.assertEqual(report["errors"], {"mismatch": 5})
        self.assertEqual(report["frames"], 0)
        self.assertIn("offset 4) is", report["error_examples"][0])  # the first payload byte

    @defer.inlineCallbacks
    def test_serverCloses(self) -> Any:
        """Connections the server closes are counted as errors."""
        port = self.startServer(contextClass=ClosingContext)
        report = yield self.load(port)
        self.assertEqual(report["errors"], {"closed": 5})

    @defer.inlineCallbacks
    def test_noEcho(self) -> Any:
        """Echoes that never come are timeouts once the drain timeout runs out; the run still ends."""
        port = self.startServer(contextClass=SilentContext)
        report = yield self.load(port, drainTimeout=0.2)
        self.assertEqual(report["errors"], {"timeout": 5})
        self.assertEqual(report["frames"], 0)
        self.assertEqual(report["latency_ms"], {"p50": None, "p99": None, "max": None})

    @defer.inlineCallbacks
    def test_refused(self) -> Any:
        """Nothing listening: every connection is a connect error, and the run ends at once."""
        from twisted.internet import reactor
        from twisted.internet.protocol import ServerFactory

        listening = reactor.listenTCP(0, ServerFactory(), interface="127.0.0.1")
        address: Any = listening.getHost()
        port = address.port
        yield listening.stopListening()
        report = yield self.load(port, duration=30)
        self.assertEqual(report["errors"], {"connect": 5})
        self.assertEqual(report["connected"], 0)

    @defer.inlineCallbacks
    def test_processes(self) -> Any:
        """
        C{python -m iocpsvc.bench --json --processes 2} in a child process
        prints one JSON report, with both workers' connections merged.
        """
        from twisted.internet import reactor

        port = self.startServer()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
        args = [
            "-m", "iocpsvc.bench", "--json", "--duration", "1", "--warmup", "0",
            "--connections", "10", "--processes", "2", "--port", str(port),
        ]  # fmt: skip
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, args, env=env, path=REPO, reactor=reactor
        )
        self.assertEqual(code, 0, err)
        report = json.loads(out)
        self.assertTrue(REPORT_KEYS <= set(report), REPORT_KEYS - set(report))
        self.assertEqual(report["processes"], 2)
        self.assertEqual(report["connections"], 10)
        self.assertEqual(report["connected"], 10)
        self.assertEqual(report["errors"], {})
        self.assertGreater(report["frames"], 0)
        self.assertIsNotNone(report["latency_ms"]["p99"])
        self.assertEqual(len(out.splitlines()), 1)  # progress goes to stderr
        self.assertIn(b"frames/s", err)


class CommandLineTests(SynchronousTestCase):
    """The argument parser and the human summary."""

    def test_defaults(self) -> None:
        """Loopback port 9983, length codec, one process, 10 s after 1 s of warm-up."""
        args = bench.makeParser().parse_args([])
        self.assertEqual((args.host, args.port, args.codec), ("127.0.0.1", 9983, "length"))
        self.assertEqual((args.duration, args.warmup, args.processes), (10.0, 1.0, 1))

    def test_badCodec(self) -> None:
        """An object codec is a usage error (exit status 2) before anything connects."""
        self.patch(sys, "stderr", open(os.devnull, "w"))
        self.addCleanup(sys.stderr.close)
        error = self.assertRaises(SystemExit, bench.main, ["--codec", "line+json"])
        self.assertEqual(error.code, 2)

    def test_summary(self) -> None:
        """The human summary names the rates, latencies and errors."""
        result = bench.ProcessResult(connections=2, connected=2, frames=1000, bytes=68000, seconds=1.0)
        result.histogram.record(0.002, 1000)
        result.addError("closed", "connection 1: closed by the server")
        settings = bench.LoadSettings(connections=2)
        text = bench.formatReport(bench.makeReport(settings, [result], wireSize=68))
        self.assertIn("1,000 frames/s", text)
        self.assertIn("p50 2.0", text)
        self.assertIn("closed 1", text)
