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
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody

import iocpsvc
from iocpsvc import errors
from iocpsvc.apps import EchoContext
from iocpsvc.codecs import parseCodecSpec
from iocpsvc.config import ServerConfig
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.limits import ServerLimits
from iocpsvc.monitor import MonitorService, makeSite
from iocpsvc.monitor.about import ServerDescription
from iocpsvc.monitor.prometheus import metricsText
from iocpsvc.monitor.site import MonitorChannel, MonitorLimits, MonitorSite
from iocpsvc.monitor.stats import StatsSampler, collect, connections, summaryLine
from iocpsvc.service import SocketServerService
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
        config = ServerConfig(
            ports=("tcp:0:interface=127.0.0.1",),
            contextClass=EchoContext,
            codec=parseCodecSpec("length"),
            limits=factory.limits,
        )
        about = ServerDescription(
            config, factory.limits, reactor, lambda: [port.getHost() for port in server.ports]
        )
        MonitorService(
            factory, "tcp:0:interface=127.0.0.1", statsInterval=0, reactor=reactor, about=about
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
        # What is running: the version, the codec, the listener's address.
        port = clients[0].transport.getPeer().port  # the server's listening port
        self.assertIn(f"iocpsvc {iocpsvc.__version__} · Python".encode(), domText(dom, "about-version"))
        self.assertTrue(domText(dom, "about-codec").startswith(b"length (largest frame 1.00 MiB)"))
        self.assertEqual(domText(dom, "about-listeners"), f"tcp:127.0.0.1:{port}".encode())
        self.assertEqual(domText(dom, "about-context"), b"echo")
        self.assertEqual(domText(dom, "about-workers"), b"one process")
        self.assertIn(b'id="workers-panel" hidden', dom)  # no workers: no table
        # Even ticks at round numbers: 7 online is drawn on 0, 2, 4, 6, 8.
        self.assertIn(b'data-y-ticks="0|2|4|6|8"', dom)
        self.assertIn(b'data-x-ticks="now|-1 min|-2 min|-3 min|-4 min|-5 min"', dom)

    @defer.inlineCallbacks
    def test_workersInBrowser(self) -> Any:
        """
        Under --workers (a pool of fake workers here), the dashboard has a
        row per worker: its pid, state, figures and restarts.
        """
        from twisted.internet import reactor

        from iocpsvc.monitor.pool import PoolSource
        from tests.fakeworkers import FakeWorker, clockedPool

        if chromium() is None:
            if os.environ.get("CI") and sys.platform.startswith("linux"):
                self.fail("chromium is not installed (.ci/run installs it)")
            raise self.skipTest("chromium is not installed")
        pool = clockedPool()
        one, two = FakeWorker(1, 10), FakeWorker(2, 11)
        one.answer = {"online": 3, "accepted_total": 5, "received_frames_total": 1200, "connections": []}
        two.answer = {"online": 4, "accepted_total": 6, "connections": []}
        two.restarts = 2
        pool.workers = {1: one, 2: two}  # type: ignore[dict-item]
        pool.poll()
        config = ServerConfig(
            ports=("tcp:9983",),
            contextClass=EchoContext,
            codec=parseCodecSpec("line"),
            limits=ServerLimits(maxConnections=1000),
            workerCount=2,
        )
        about = ServerDescription(
            config, config.limits, reactor, lambda: [], nodeIds=[10, 11], workerMode="reuseport"
        )
        monitor = MonitorService(
            PoolSource(pool), "tcp:0:interface=127.0.0.1", statsInterval=0, reactor=reactor, about=about
        )
        monitor.startService()
        self.addCleanup(monitor.stopService)
        base = f"http://127.0.0.1:{monitor.port.getHost().port}/"
        dom = yield runChromium(
            reactor, temporaryDirectory(self), "--virtual-time-budget=5000", "--dump-dom", base
        )
        self.assertIn(b'id="status" class="live"', dom)
        self.assertNotIn(b'id="workers-panel" hidden', dom)
        rows = dict(re.findall(rb'<tr data-worker="(\d)">(.*?)</tr>', dom))
        self.assertEqual(sorted(rows), [b"1", b"2"], dom[-3000:])
        cells = [re.findall(rb"<td>(.*?)</td>", rows[index]) for index in (b"1", b"2")]
        self.assertIn(b"serving", cells[0][1])
        # pid, node id, online, accepted, frames in, ..., restarts, answered
        self.assertEqual(cells[0][2:7], [b"1001", b"10", b"3", b"5", b"1.20k"])
        self.assertEqual(cells[1][2:6], [b"1002", b"11", b"4", b"6"])
        self.assertEqual(cells[1][10], b"2")
        self.assertEqual(domText(dom, "about-workers"), b"2 processes (reuseport)")
        self.assertEqual(domText(dom, "about-max-connections"), b"1,000 per worker")
        self.assertIn(b'id="online">7<', dom)


def domText(dom: bytes, elementId: str) -> bytes:
    """The text inside the element of C{dom} with id C{elementId}."""
    match = re.search(rb'id="' + elementId.encode() + rb'">(.*?)</', dom)
    assert match is not None, f"no {elementId} in the page"
    return match.group(1).replace(b"&amp;", b"&")


class RecordingChannel(MonitorChannel):
    """Counts the reads its site's connections have taken in."""

    def dataReceived(self, data: bytes) -> None:
        self.site.readsTaken = getattr(self.site, "readsTaken", 0) + 1  # type: ignore[attr-defined]
        super().dataReceived(data)


class HardenedMonitorTests(TestCase):
    """The monitor's HTTP server over real TCP: its cap, deadline, limits and counters."""

    timeout = 60

    def startSite(self, clock: Any = None, **options: Any) -> tuple[MonitorSite, int]:
        from twisted.internet import reactor

        from iocpsvc.accept import guardedReactor

        factory = ConnectionContextFactory(EchoContext, reactor=reactor)
        sampler = StatsSampler(factory)
        site = makeSite(factory, sampler, MonitorLimits(**options))
        if clock is not None:
            site.reactor = clock  # the deadline runs on the test's clock
        site.protocol = RecordingChannel  # type: ignore[assignment]
        port = guardedReactor(reactor).listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return site, port.getHost().port

    @defer.inlineCallbacks
    def rawRequest(self, port: int, data: bytes) -> Any:
        from twisted.internet import reactor

        [client] = yield connectRaw(reactor, port, 1)
        client.transport.write(data)
        received = yield client.lost
        return received

    @defer.inlineCallbacks
    def test_connectionCap(self) -> Any:
        """Past --monitor-max-connections a connection is refused at accept; the rest are served."""
        from twisted.internet import reactor

        site, port = self.startSite(maxConnections=3)
        holders = yield connectRaw(reactor, port, 3)
        yield waitUntil(reactor, lambda: site.online == 3)
        extra = yield connectRaw(reactor, port, 1)
        for client in extra:
            yield client.lost  # refused: closed with nothing said
            self.assertEqual(bytes(client.received), b"")
        yield waitUntil(reactor, lambda: site.refused == 1)
        holders[0].transport.loseConnection()
        yield holders[0].lost
        yield waitUntil(reactor, lambda: site.online == 2)
        answer = yield self.rawRequest(
            port, b"GET /stats.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:100])
        self.assertEqual(json.loads(answer.split(b"\r\n\r\n", 1)[1])["monitor"]["refused_total"], 1)
        for holder in holders[1:]:
            holder.transport.loseConnection()
        yield defer.gatherResults([h.lost for h in holders])

    @defer.inlineCallbacks
    def test_trickledHeadersHitTheDeadline(self) -> Any:
        """A header line every few seconds does not extend the request's deadline."""
        from twisted.internet import reactor

        clock = Clock()
        site, port = self.startSite(clock=clock, requestTimeout=10)
        [client] = yield connectRaw(reactor, port, 1)
        client.transport.write(b"GET /stats.json HTTP/1.1\r\n")
        for n in range(3):
            yield waitUntil(reactor, lambda n=n: getattr(site, "readsTaken", 0) == n + 1)
            clock.advance(4)  # 4, 8, 12 seconds: each line arrived before the next
            if n < 2:
                client.transport.write(b"X-Slow: %d\r\n" % n)
        yield client.lost
        self.assertEqual(bytes(client.received), b"")
        self.assertEqual(site.timedOut, 1)

    @defer.inlineCallbacks
    def test_wholeRequestInTimeIsServed(self) -> Any:
        """A request that arrives in whole before the deadline is answered; the next one gets its own."""
        from twisted.internet import reactor

        clock = Clock()
        site, port = self.startSite(clock=clock, requestTimeout=10)
        [client] = yield connectRaw(reactor, port, 1)
        client.transport.write(b"GET /history.json HTTP/1.1\r\nHost: x\r\n")
        yield waitUntil(reactor, lambda: getattr(site, "readsTaken", 0) == 1)
        clock.advance(9)
        client.transport.write(b"\r\n")
        yield waitUntil(reactor, lambda: b"\r\n\r\n" in client.received)
        clock.advance(9)  # the next request's deadline started with the response
        self.assertFalse(client.lost.called)
        self.assertEqual(site.timedOut, 0)
        clock.advance(2)
        yield client.lost
        self.assertEqual(site.timedOut, 1)

    @defer.inlineCallbacks
    def test_postRefusedBeforeItsBody(self) -> Any:
        """Any method but GET/HEAD gets 405 and a close; its body is never read."""
        site, port = self.startSite()
        answer = yield self.rawRequest(
            port, b"POST /stats.json HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 405"), answer)
        self.assertIn(b"Allow: GET, HEAD", answer)
        answer = yield self.rawRequest(port, b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 405"), answer)
        self.assertEqual((site.rejected, site.requests), (2, 0))

    @defer.inlineCallbacks
    def test_bodyOnGetRefused(self) -> Any:
        """A GET with a body (length or chunked) gets 413 before the body is read."""
        site, port = self.startSite()
        for framing in (b"Content-Length: 10", b"Transfer-Encoding: chunked"):
            answer = yield self.rawRequest(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n")
            self.assertTrue(answer.startswith(b"HTTP/1.1 413"), answer)
        self.assertEqual(site.rejected, 2)

    @defer.inlineCallbacks
    def test_oversizedRequestRefused(self) -> Any:
        """Too many headers, or headers too large, end in 400 and a close."""
        site, port = self.startSite()
        many = b"".join(b"X-%d: y\r\n" % n for n in range(40))
        answer = yield self.rawRequest(port, b"GET / HTTP/1.1\r\n" + many + b"\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 400"), answer)
        large = b"X-Big: " + b"y" * 9000 + b"\r\n"
        answer = yield self.rawRequest(port, b"GET / HTTP/1.1\r\n" + large + b"\r\n")
        # A line past the limit: closed (Twisted's line reader says nothing).
        self.assertIn(answer[:12], (b"", b"HTTP/1.1 400"))
        self.assertEqual(site.requests, 0)  # neither reached a resource

    @defer.inlineCallbacks
    def test_tooManySentAhead(self) -> Any:
        """A client that sends more than the queue limit ahead of its answers gets 429 and is closed."""
        site, port = self.startSite(maxRequestRate=1)
        request = b"GET /history.json HTTP/1.1\r\nHost: x\r\n\r\n"
        answer = yield self.rawRequest(port, request * (60_000 // len(request)))
        self.assertIn(b"HTTP/1.1 429", answer)
        self.assertEqual(site.rejected, 1)

    def test_noAccessLog(self) -> None:
        """A request is counted, not written to the log."""
        site = makeSite(
            ConnectionContextFactory(EchoContext, reactor=Clock()),
            StatsSampler(ConnectionContextFactory(EchoContext, reactor=Clock())),
        )
        site.log(object())
        self.assertEqual(site.requests, 1)

    @defer.inlineCallbacks
    def test_dashboardRequestsAreNotLogged(self) -> Any:
        """
        What an open dashboard asks, over kept-alive connections as a
        browser asks it, and those connections closed when left idle,
        write nothing to the log at any level (twistd writes debug events
        too), while a request cut off half-way still is.
        """
        from twisted.internet import reactor
        from twisted.web.client import HTTPConnectionPool

        clock = Clock()
        site, port = self.startSite(clock=clock, requestTimeout=10)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        agent = Agent(reactor, pool=pool)
        paths = ["", "stats.json", "connections.json?sort=bytes_in&limit=10", "history.json", "metrics", "x"]
        for method in (b"GET", b"HEAD", b"GET"):  # HEAD: a health check's
            for path in paths:
                response = yield agent.request(method, f"http://127.0.0.1:{port}/{path}".encode())
                body = yield readBody(response)
                if method == b"HEAD" and path != "x":
                    self.assertEqual(body, b"")
                    self.assertEqual(response.code, 200)
        self.assertEqual(site.requests, 3 * len(paths))
        clock.advance(11)  # the kept-alive connections are closed, idle
        yield waitUntil(reactor, lambda: site.online == 0)
        self.assertEqual(site.timedOut, 1)
        said = [formatEvent(event) for event in events if _fromMonitor(event)]
        self.assertEqual(said, [])
        # A request that stops half-way is still worth a line.
        [client] = yield connectRaw(reactor, port, 1)
        client.transport.write(b"GET /stats.json HTTP/1.1\r\n")
        yield waitUntil(reactor, lambda: getattr(site, "readsTaken", 0) == 3 * len(paths) + 1)
        clock.advance(11)
        yield client.lost
        said = [formatEvent(event) for event in events if _fromMonitor(event)]
        self.assertEqual(len(said), 1, said)
        self.assertIn("no whole request within 10", said[0])


def _fromMonitor(event: dict[str, Any]) -> bool:
    """Whether a log event is the monitor's, or an access log line of any web server."""
    text = formatEvent(event) or ""
    namespace = event.get("log_namespace", "")
    if namespace.startswith("twisted.web.client"):
        return False  # the test's own client
    return namespace.startswith(("iocpsvc.monitor", "twisted.web")) or any(
        marker in text for marker in ('"GET ', "stats.json", "connections.json", "history.json", "/metrics")
    )


class RequestTurnTests(SynchronousTestCase):
    """The monitor serves requests sent ahead one per reactor turn, at its request rate."""

    def test_pipelinedServedOneAtATimeAndRated(self) -> None:
        """
        Of requests sent at once, one is served in that read and each next
        one in a later call; past the burst they wait for the rate.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        from iocpsvc.monitor.site import REQUEST_BURST

        clock = Clock()
        factory = ConnectionContextFactory(EchoContext, reactor=clock)
        site = makeSite(factory, StatsSampler(factory), MonitorLimits(maxRequestRate=10))
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport()
        channel.makeConnection(transport)
        count = REQUEST_BURST + 3
        channel.dataReceived(b"GET /history.json HTTP/1.1\r\nHost: x\r\n\r\n" * count)

        def answers() -> int:
            return transport.value().count(b"HTTP/1.1 200")

        self.assertEqual(answers(), 1)  # the rest wait for later turns
        self.assertEqual(len([c for c in clock.getDelayedCalls() if "_next" in repr(c)]), 1)
        clock.advance(0)  # each turn serves one and schedules the next
        self.assertEqual(answers(), REQUEST_BURST)  # the burst is spent
        self.assertEqual(site.throttled, 1)
        clock.advance(0.1)
        self.assertEqual(answers(), REQUEST_BURST + 1)
        clock.advance(0.2)
        self.assertEqual(answers(), count)
        self.assertEqual(site.requests, count)


class SnapshotTests(SynchronousTestCase):
    """Scrapes cost no pass over the connections beyond one per half second."""

    def test_statsCollectedOncePerMaxAge(self) -> None:
        """Many stats() calls within maxAge collect once; after it, once more."""
        clock = Clock()
        factory = ConnectionContextFactory(EchoContext, reactor=clock)
        sampler = StatsSampler(factory, maxAge=0.5)
        calls = []
        original = sampler.source.collect
        sampler.source.collect = lambda: calls.append(1) or original()  # type: ignore[method-assign]
        first = sampler.stats()
        for _ in range(1000):
            self.assertIs(sampler.stats(), first)
        self.assertEqual(len(calls), 1)
        clock.advance(0.5)
        self.assertIsNot(sampler.stats(), first)
        self.assertEqual(len(calls), 2)

    def test_renderedOncePerSnapshot(self) -> None:
        """/stats.json and /metrics bodies are made once per snapshot."""
        from twisted.web.test.requesthelper import DummyRequest

        from iocpsvc.monitor import MetricsResource, StatsResource

        clock = Clock()
        sampler = StatsSampler(ConnectionContextFactory(EchoContext, reactor=clock))
        for resource in (StatsResource(sampler), MetricsResource(sampler)):
            first = resource.render_GET(DummyRequest([b""]))  # type: ignore[arg-type]
            self.assertIs(resource.render_GET(DummyRequest([b""])), first)  # type: ignore[arg-type]
            clock.advance(1)
            self.assertIsNot(resource.render_GET(DummyRequest([b""])), first)  # type: ignore[arg-type]

    def test_connectionsListingKept(self) -> None:
        """The same /connections.json query within maxAge is answered from the kept listing."""
        from iocpsvc.monitor import ConnectionsResource
        from iocpsvc.monitor.stats import FactorySource

        clock = Clock()
        factory = ConnectionContextFactory(EchoContext, reactor=clock)
        source = FactorySource(factory)
        calls = []
        original = source.connections
        source.connections = lambda *a: calls.append(a) or original(*a)  # type: ignore[method-assign]
        resource = ConnectionsResource(source, maxAge=0.5)
        for _ in range(50):
            resource._listing("idle", 100, None)
        resource._listing("id", 100, None)
        self.assertEqual(len(calls), 2)
        clock.advance(0.5)
        resource._listing("idle", 100, None)
        self.assertEqual(len(calls), 3)

    def test_monitorMetrics(self) -> None:
        """The monitor's own counters are in /metrics."""
        clock = Clock()
        factory = ConnectionContextFactory(EchoContext, reactor=clock)
        sampler = StatsSampler(factory)
        makeSite(factory, sampler, MonitorLimits(maxConnections=5))
        names = {f.name for f in text_string_to_metric_families(metricsText(sampler.stats).decode())}
        self.assertTrue(
            {
                "iocpsvc_monitor_connections_online",
                "iocpsvc_monitor_connections_max",
                "iocpsvc_monitor_requests",
                "iocpsvc_monitor_connections_refused",
                "iocpsvc_monitor_timed_out",
                "iocpsvc_monitor_rejected",
                "iocpsvc_accept_errors",
            }
            <= names,
            names,
        )
