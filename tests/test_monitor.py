"""
Tests for the monitor (L{iocpsvc.monitor}): the figures against known
traffic, the JSON and Prometheus endpoints over real HTTP, the twistd
options, and the dashboard rendered by a real headless Chromium.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import sys
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody

from iocpsvc import errors
from iocpsvc.contexts import EchoContext
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.monitor import MonitorService
from iocpsvc.monitor.prometheus import metricsText
from iocpsvc.monitor.stats import StatsSampler, collect, connections, summaryLine
from iocpsvc.service import SocketServerService
from iocpsvc.tap import Options
from iocpsvc.testing import EmbeddedConnection
from tests.netutil import connectRaw, temporaryDirectory, waitUntil

STATS_KEYS = {
    "online",
    "peak_online",
    "accepted_total",
    "refused_total",
    "closed_total",
    "received_bytes_total",
    "sent_bytes_total",
    "received_frames_total",
    "sent_frames_total",
    "decode_errors_total",
    "pending_write_bytes",
    "uptime_seconds",
    "rates",
}
METRICS = {
    "iocpsvc_connections_online",
    "iocpsvc_connections_peak",
    "iocpsvc_connections_accepted",
    "iocpsvc_connections_refused",
    "iocpsvc_connections_closed",
    "iocpsvc_received_bytes",
    "iocpsvc_sent_bytes",
    "iocpsvc_received_frames",
    "iocpsvc_sent_frames",
    "iocpsvc_decode_errors",
    "iocpsvc_pending_write_bytes",
}


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


class FiguresTests(SynchronousTestCase):
    """The figures, driven without sockets."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.factory = ConnectionContextFactory(EchoContext, reactor=self.clock)

    def connect(self) -> EmbeddedConnection:
        return EmbeddedConnection(factory=self.factory, clock=self.clock)

    def test_collectCountsKnownTraffic(self) -> None:
        """Three connections, five frames; one closed: the totals add up."""
        a, b, c = self.connect(), self.connect(), self.connect()
        a.feed(frame(b"x" * 10) * 3)
        b.feed(frame(b"y") * 2)
        a.disconnect()
        stats = collect(self.factory)
        self.assertEqual(
            (stats["online"], stats["peak_online"], stats["accepted_total"]),
            (2, 3, 3),
        )
        self.assertEqual(stats["received_frames_total"], 5)
        self.assertEqual(stats["sent_frames_total"], 5)
        self.assertEqual(stats["received_bytes_total"], 3 * 14 + 2 * 5)
        self.assertEqual(stats["sent_bytes_total"], 3 * 14 + 2 * 5)
        self.assertEqual(stats["closed_total"][errors.PEER], 1)
        c.disconnect()

    def test_rates(self) -> None:
        """Rates are per second over the last few seconds of samples."""
        sampler = StatsSampler(self.factory)
        connection = self.connect()
        sampler.sample()
        for _ in range(4):
            self.clock.advance(1)
            connection.feed(frame(b"z" * 96) * 10)  # 1000 bytes, 10 frames a second
            sampler.sample()
        rates = sampler.stats()["rates"]
        self.assertEqual(rates["received_frames_per_second"], 10)
        self.assertEqual(rates["received_bytes_per_second"], 1000)
        self.assertEqual(rates["accepted_per_second"], 0)
        past = sampler.historyJSON()
        self.assertEqual(past["online"], [1, 1, 1, 1])
        self.assertEqual(past["received_bytes_per_second"], [1000, 1000, 1000, 1000])
        self.assertEqual(set(sampler.stats()), STATS_KEYS | set(collect(self.factory)))

    def test_connectionsSortedAndCapped(self) -> None:
        """connections.json sorts by idle time (largest first) and caps the list."""
        old = self.connect()
        self.clock.advance(10)
        busy = self.connect()
        busy.feed(frame(b"q" * 100))
        self.clock.advance(1)
        listing = connections(self.factory, "idle", limit=1)
        self.assertEqual([c["id"] for c in listing["connections"]], [old.context.contextId])
        self.assertEqual(listing["connections"][0]["idle_seconds"], 11)
        top = connections(self.factory, "bytes_in", limit=5)
        self.assertEqual(top["connections"][0]["id"], busy.context.contextId)
        self.assertEqual(len(top["connections"]), 2)
        self.assertRaises(ValueError, connections, self.factory, "nosuch")

    def test_metricsParse(self) -> None:
        """The exposition parses with prometheus_client's own parser, with the right values."""
        connection = self.connect()
        connection.feed(frame(b"abc") * 4)
        families = {
            f.name: f
            for f in text_string_to_metric_families(metricsText(lambda: collect(self.factory)).decode())
        }
        self.assertTrue(METRICS <= set(families), METRICS - set(families))
        values = {s.name: s.value for f in families.values() for s in f.samples if not s.labels}
        self.assertEqual(values["iocpsvc_connections_online"], 1)
        self.assertEqual(values["iocpsvc_received_frames_total"], 4)
        self.assertEqual(values["iocpsvc_sent_bytes_total"], 28)
        reasons = {s.labels["reason"] for s in families["iocpsvc_connections_closed"].samples}
        self.assertEqual(reasons, set(errors.CLOSE_REASONS))

    def test_summaryLine(self) -> None:
        """The logged summary names the main figures."""
        self.connect().feed(frame(b"a"))
        line = summaryLine(StatsSampler(self.factory).stats())
        self.assertIn("online 1 (peak 1)", line)
        self.assertIn("decode errors 0", line)


class OptionsTests(SynchronousTestCase):
    """--monitor and --stats-interval."""

    def test_defaults(self) -> None:
        """By default the monitor listens on 127.0.0.1:9984 and logs every minute."""
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["monitor"], "tcp:9984:interface=127.0.0.1")
        self.assertEqual(options["statsInterval"], 60)

    def test_none(self) -> None:
        """--monitor none turns it off."""
        options = Options()
        options.parseOptions(["--monitor", "none"])
        self.assertIsNone(options["monitor"])

    def test_bad(self) -> None:
        """A bad endpoint or interval is a usage error."""
        from twisted.python.usage import UsageError

        self.assertRaises(UsageError, Options().parseOptions, ["--monitor", "bogus:1"])
        self.assertRaises(UsageError, Options().parseOptions, ["--stats-interval", "-1"])


class _Output(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(reason.value)


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


@defer.inlineCallbacks
def runChromium(reactor: Any, userDataDir: str, *args: str) -> Any:
    """Run headless Chromium with the flags above; fire with its stdout."""
    browser = chromium()
    assert browser is not None
    output = _Output()
    argv = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={userDataDir}", *args]
    process = reactor.spawnProcess(output, browser, argv, env=dict(os.environ))
    timeout = reactor.callLater(90, process.signalProcess, "KILL")
    yield output.ended
    if timeout.active():
        timeout.cancel()
    return bytes(output.out)


class LiveMonitorTests(TestCase):
    """The monitor over real HTTP, beside a real socket server."""

    timeout = 150

    @defer.inlineCallbacks
    def startBoth(self) -> Any:
        from twisted.internet import reactor

        factory = ConnectionContextFactory(EchoContext, reactor=reactor)
        server = SocketServerService(factory, ["tcp:0:interface=127.0.0.1"], reactor=reactor)
        MonitorService(
            factory, "tcp:0:interface=127.0.0.1", statsInterval=0, reactor=reactor
        ).setServiceParent(server)
        server.startService()
        self.addCleanup(server.stopService)
        monitor = next(iter(server))
        port = server.ports[0].getHost().port
        base = f"http://127.0.0.1:{monitor.port.getHost().port}/"
        # Seven clients, each sends three frames and gets them back.
        clients = yield connectRaw(reactor, port, 7)
        for client in clients:
            client.transport.write(frame(b"m" * 20) * 3)
        yield waitUntil(reactor, lambda: all(len(c.received) == 72 for c in clients))
        self.addCleanup(self.closeClients, clients)
        # Requests are served from a snapshot at most half a second old.
        yield waitUntil(reactor, lambda: monitor.sampler.stats()["sent_frames_total"] == 21)
        return factory, base, clients

    @defer.inlineCallbacks
    def closeClients(self, clients: list[Any]) -> Any:
        for client in clients:
            client.transport.loseConnection()
        yield defer.gatherResults([c.lost for c in clients])

    @defer.inlineCallbacks
    def get(self, url: str) -> Any:
        from twisted.internet import reactor

        response = yield Agent(reactor).request(b"GET", url.encode())
        body = yield readBody(response)
        return response, body

    @defer.inlineCallbacks
    def test_endpoints(self) -> Any:
        """stats.json, metrics and connections.json report the known traffic."""
        factory, base, clients = yield self.startBoth()
        response, body = yield self.get(base + "stats.json")
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        stats = json.loads(body)
        self.assertTrue(STATS_KEYS <= set(stats))
        self.assertEqual(
            (
                stats["online"],
                stats["accepted_total"],
                stats["received_frames_total"],
                stats["sent_frames_total"],
            ),
            (7, 7, 21, 21),
        )
        self.assertEqual(stats["received_bytes_total"], 7 * 72)
        _, body = yield self.get(base + "metrics")
        samples = {
            s.name: s.value
            for f in text_string_to_metric_families(body.decode())
            for s in f.samples
            if not s.labels
        }
        self.assertEqual(samples["iocpsvc_connections_online"], 7)
        self.assertEqual(samples["iocpsvc_received_frames_total"], 21)
        _, body = yield self.get(base + "connections.json?sort=idle&limit=3")
        listing = json.loads(body)
        self.assertEqual((listing["online"], len(listing["connections"])), (7, 3))
        self.assertEqual(listing["connections"][0]["bytes_in"], 72)
        response, body = yield self.get(base + "connections.json?sort=nosuch")
        self.assertEqual(response.code, 400)
        response, body = yield self.get(base)
        self.assertIn(b"<canvas", body)
        self.assertNotIn(b"http://", body.replace(b"http://www.w3.org", b""))  # no CDN

    @defer.inlineCallbacks
    def test_dashboardInBrowser(self) -> Any:
        """Headless Chromium renders the dashboard with the live online count."""
        from twisted.internet import reactor

        if chromium() is None:
            if os.environ.get("CI") and sys.platform.startswith("linux"):
                self.fail("chromium is not installed (.ci/run installs it)")
            raise self.skipTest("chromium is not installed")
        factory, base, clients = yield self.startBoth()
        dom = yield runChromium(
            reactor, temporaryDirectory(self), "--virtual-time-budget=5000", "--dump-dom", base
        )
        match = re.search(rb'id="online">(\d+)<', dom)
        self.assertIsNotNone(match, dom[-3000:])
        self.assertEqual(int(match.group(1)), 7)  # type: ignore[union-attr]
        self.assertIn(b'id="status" class="live"', dom)
