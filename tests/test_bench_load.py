"""
Tests for L{iocpsvc.bench.load}: load runs against an in-process echo
server over real TCP on 127.0.0.1 -- echo, every framing codec, large
frames, corruption, early close, silence, refused connects.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from iocpsvc.apps import EchoContext
from iocpsvc.bench.load import runLoad
from tests.helpers import startServer

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


class EchoServerMixin:
    """Start an iocpsvc server on 127.0.0.1:0, stopped after the test."""

    def startServer(self, codec: str = "length", contextClass: Any = EchoContext) -> int:
        _, port, _ = startServer(self, codec, contextClass)
        return port


class LoadRunTests(EchoServerMixin, TestCase):
    """runLoad against an in-process iocpsvc server on 127.0.0.1."""

    timeout = 60

    def load(self, port: int, **options: Any) -> defer.Deferred[dict[str, Any]]:
        from twisted.internet import reactor

        options.setdefault("warmup", 0)
        options.setdefault("duration", 0.3)
        options.setdefault("connections", 5)
        options.setdefault("inFlight", 4)
        return runLoad(reactor, "127.0.0.1", port, **options)

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
