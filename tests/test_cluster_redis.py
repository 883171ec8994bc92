"""
Tests for L{iocpsvc.cluster.redis.RedisBus} against a real C{redis-server}
started by each test on 127.0.0.1 (skipped when it is not installed): two
nodes in this process with real client connections, an outage and the
recovery from it, the node-id claim, malformed messages, a paused Redis
flooded with publishes (the buffer cap), and two C{twistd} chat servers
joined through Redis.  Without Redis: a bus that cannot reach it, and a bus
on a L{MemoryReactorClock} where the test plays Redis (what is counted when
the link fails, the cap where the transport does not tell its unsent bytes,
how often the overflow is logged, how long an outage is said to have lasted).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionAborted, ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from iocpsvc.cluster import BROADCAST, nodeOfContext, packMessage
from iocpsvc.cluster.redis import DEFAULT_MAX_PENDING_BYTES, RedisBus
from iocpsvc.cluster.resp import RedisConnection, encodeCommand
from iocpsvc.context import ConnectionContext
from iocpsvc.factory import ConnectionContextFactory
from tests.certs import CertificateFiles, issueCertificates
from tests.netutil import getJSON, spawnTwistd, temporaryDirectory, waitUntil
from tests.test_cluster import RelayContext


def _findRedisServer() -> str | None:
    found = shutil.which("redis-server")
    if found is None and os.access("/usr/bin/redis-server", os.X_OK):
        found = "/usr/bin/redis-server"
    return found


REDIS_SERVER = _findRedisServer()
NO_REDIS = "redis-server is not installed (apt-get install redis-server; .ci/run does it)"

# Fast reconnection, so that an outage test takes a fraction of a second.
FAST = {"retryDelay": 0.02, "maxRetryDelay": 0.1, "connectTimeout": 3.0}


def freePort() -> int:
    """
    A loopback port nothing listens on now.  (Redis cannot listen on port 0
    and report the port, so the test picks one.)
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _RedisProcess(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = bytearray()
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.ready.called and b"Ready to accept connections" in self.output:
            self.ready.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError("redis-server exited: " + self.output.decode(errors="replace")))
        self.ended.callback(None)


class RedisServer:
    """
    A C{redis-server} on 127.0.0.1:C{port}, without persistence, in its own
    directory; stopped when the test ends.  C{kill} and C{start} again make
    an outage on the same port.
    """

    def __init__(self, test: TestCase, *options: str, tls: CertificateFiles | None = None) -> None:
        """
        @param options: more of redis-server's options (C{--requirepass}, ...).
        @param tls: serve TLS only (no plain port), with this certificate,
            its chain, and its root as the CA of client certificates
            (which it does not ask for).
        """
        self.port = freePort()
        self.url = f"{'rediss' if tls else 'redis'}://127.0.0.1:{self.port}"
        self.directory = temporaryDirectory(test)
        self.options = options
        self.tls = tls
        self.process: _RedisProcess | None = None
        self.transport: Any = None
        test.addCleanup(self.kill)

    def urlWith(self, userInfo: str = "", path: str = "", query: str = "") -> str:
        """Its URL, with C{userInfo@} (a password), a path and a query."""
        scheme = "rediss" if self.tls else "redis"
        at = "@" if userInfo else ""
        return f"{scheme}://{userInfo}{at}127.0.0.1:{self.port}{path}{'?' if query else ''}{query}"

    def _tlsOptions(self) -> list[str]:
        if self.tls is None:
            return []
        fullChain = os.path.join(self.directory, "fullchain.pem")
        with open(fullChain, "wb") as out:
            for path in (self.tls.cert, self.tls.chain):
                with open(path, "rb") as part:
                    out.write(part.read())
        return [
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", fullChain,
            "--tls-key-file", self.tls.key,
            "--tls-ca-cert-file", self.tls.root,
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    def start(self) -> defer.Deferred[None]:
        """Start it; fires once it accepts connections."""
        assert REDIS_SERVER is not None
        self.process = _RedisProcess()
        argv = [
            REDIS_SERVER,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", self.directory,
            "--daemonize", "no",
            *self._tlsOptions(),
            *self.options,
        ]  # fmt: skip
        self.transport = reactor.spawnProcess(self.process, REDIS_SERVER, argv, env={}, path=self.directory)
        return self.process.ready

    def kill(self) -> defer.Deferred[None]:
        """Kill it at once (an outage); fires once it is gone."""
        process = self.process
        if process is None or process.ended.called:
            return defer.succeed(None)
        self.transport.signalProcess("KILL")
        return process.ended

    def pause(self) -> None:
        """Stop it without closing its connections (SIGSTOP): it accepts and never answers."""
        self.transport.signalProcess(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server go on (SIGCONT); nothing if it has exited (a cleanup may ask twice)."""
        if self.process is not None and not self.process.ended.called:
            self.transport.signalProcess(signal.SIGCONT)

    def connect(self, test: TestCase, *auth: bytes) -> defer.Deferred[RedisConnection]:
        """
        A raw connection to it (plain TCP), logged in with C{AUTH *auth} if
        given, closed when the test ends.
        """
        connection = RedisConnection()

        def closeLater(connected: RedisConnection) -> Any:
            def close() -> defer.Deferred[None]:
                lost = connected.notifyLost()
                connected.abort()
                return lost

            test.addCleanup(close)
            if auth:
                return connected.execute(b"AUTH", *auth).addCallback(lambda _: connected)
            return connected

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        return connectProtocol(endpoint, connection).addCallback(closeLater)


class LineClient(LineReceiver):
    """A client that records the lines it receives."""

    delimiter = b"\n"

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.lost: defer.Deferred[None] = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line.decode())

    def say(self, text: str) -> None:
        self.sendLine(text.encode())

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lost.callback(None)


class Node:
    """A factory listening on 127.0.0.1 with a RedisBus joined to it."""

    def __init__(
        self,
        test: TestCase,
        url: str,
        nodeId: int,
        contextClass: type[ConnectionContext] = RelayContext,
        **busArgs: Any,
    ) -> None:
        self.test = test
        self.factory = ConnectionContextFactory(contextClass, reactor=reactor)
        self.bus = RedisBus(url, nodeId, reactor=reactor, **{**FAST, **busArgs})
        self.factory.joinCluster(self.bus)
        self.listening: IListeningPort = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.port = self.listening.getHost().port
        test.addCleanup(self.listening.stopListening)
        test.addCleanup(self.factory.closeAll)
        self.bus.start(self.factory)
        test.addCleanup(self.bus.stop)

    @defer.inlineCallbacks
    def client(self) -> Any:
        """A connected LineClient, once this node has its context; closed when the test ends."""
        client = LineClient()
        before = set(self.factory.online)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), client)
        self.test.addCleanup(lambda: client.lost)
        self.test.addCleanup(client.transport.loseConnection)  # type: ignore[union-attr]
        yield waitUntil(reactor, lambda: len(set(self.factory.online) - before) == 1, timeout=5)
        (contextId,) = set(self.factory.online) - before
        client.contextId = contextId  # type: ignore[attr-defined]
        return client


def captureLogs(test: SynchronousTestCase) -> list[dict[str, Any]]:
    """The log events of the Redis bus while the test runs."""
    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "iocpsvc.cluster.redis":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    test.addCleanup(globalLogPublisher.removeObserver, observe)
    return events


def said(events: list[dict[str, Any]], level: LogLevel, words: str) -> list[str]:
    """The formatted events of C{level} that contain C{words}."""
    return [text for e in events if e["log_level"] is level and words in (text := formatEvent(e))]


class UnreachableRedisTests(TestCase):
    """A bus whose Redis is not there (no redis-server needed)."""

    @defer.inlineCallbacks
    def test_unreachable(self) -> Any:
        """
        It warns once, keeps retrying by itself without warning again, drops
        and counts publishes, and stops cleanly.
        """
        events = captureLogs(self)
        bus = RedisBus(
            f"redis://127.0.0.1:{freePort()}", 3, reactor=reactor, retryDelay=0.005, maxRetryDelay=0.02
        )
        factory = ConnectionContextFactory(RelayContext, reactor=reactor)
        factory.joinCluster(bus)
        bus.start(factory)
        try:
            yield waitUntil(reactor, lambda: bus._failedAttempts >= 5, timeout=10)
            self.assertFalse(bus.connected)
            factory.broadcast("nobody out there")
            self.assertEqual(factory.sendTo((4 << 32) + 1, "x"), True)  # handed to the bus, which drops it
            self.assertEqual(bus.stats()["dropped_total"], 2)
            self.assertEqual(bus.stats()["published_total"], 0)
            self.assertEqual(len(said(events, LogLevel.warn, "cannot reach Redis")), 1)
            self.assertEqual(len(events), 1)
        finally:
            yield bus.stop()

    def test_publishToOutOfRange(self) -> None:
        """A context id beyond every node's range is refused with ValueError."""
        bus = RedisBus("redis://127.0.0.1:1", 3, reactor=reactor)
        self.assertRaises(ValueError, bus.publishTo, 1 << 53, b"x")
        self.assertRaises(ValueError, bus.publishTo, 0, b"x")


class Recorder:
    """An IClusterReceiver that keeps what it is given."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, bytes, int]] = []

    def deliverBroadcast(self, payload: bytes, excludeContextId: int) -> None:
        self.delivered.append(("broadcast", payload, excludeContextId))

    def deliverTo(self, contextId: int, payload: bytes) -> None:
        self.delivered.append(("to", payload, contextId))


class PlayedLink:
    """
    The two connections of one connection attempt of a bus on a
    L{MemoryReactorClock}, each over a StringTransport (which does not tell
    its unsent bytes), with the test answering for Redis.
    """

    def __init__(self, reactor: MemoryReactorClock) -> None:
        (_, _, subscriberFactory, _, _), (_, _, commandsFactory, _, _) = reactor.tcpClients[-2:]
        address = IPv4Address("TCP", "127.0.0.1", 6379)
        self.subscriberWrapper = subscriberFactory.buildProtocol(address)
        self.commandsWrapper = commandsFactory.buildProtocol(address)
        self.subscriberWrapper.makeConnection(StringTransport())
        self.commandsWrapper.makeConnection(StringTransport())

    def setUp(self) -> None:
        """Answer the two SUBSCRIBEs and the node-id claim: the link is ready."""
        subscribed = b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"
        self.subscriberWrapper.dataReceived(subscribed * 2)
        self.commandsWrapper.dataReceived(b"+OK\r\n")

    def answer(self, replies: bytes) -> None:
        """Redis answers on the command connection."""
        self.commandsWrapper.dataReceived(replies)

    def end(self, reason: Exception) -> None:
        """Both connections end (the command one first)."""
        self.commandsWrapper.connectionLost(Failure(reason))
        self.subscriberWrapper.connectionLost(Failure(reason))


class PlayedRedisTests(SynchronousTestCase):
    """A bus on a MemoryReactorClock; the test plays Redis (no redis-server needed)."""

    def setUp(self) -> None:
        self.events = captureLogs(self)
        self.reactor = MemoryReactorClock()

    def bus(self, **busArgs: Any) -> RedisBus:
        """A started bus, its link set up (on 127.0.0.1:6379, which is never dialled)."""
        bus = RedisBus("redis://127.0.0.1:6379", 1, reactor=self.reactor, **busArgs)
        bus.start(Recorder())
        self.link = PlayedLink(self.reactor)
        self.link.setUp()
        self.assertTrue(bus.connected)
        self.assertTrue(bus.nodeIdClaimed)
        return bus

    def test_unansweredCountedWhenLost(self) -> None:
        """
        Publishes still awaiting Redis's reply when the connection is lost
        are counted as dropped (they stay in published_total, which counts
        what was handed to Redis); one that Redis refused is counted and
        warned about; the node no longer claims its id.
        """
        bus = self.bus()
        for index in range(5):
            bus.publishBroadcast(b"payload %d\n" % index, 0)
        self.link.answer(b":1\r\n-ERR no memory\r\n")
        self.assertEqual(bus.stats()["dropped_total"], 1)
        self.link.end(ConnectionLost())
        stats = bus.stats()
        self.assertEqual((stats["published_total"], stats["dropped_total"]), (5, 4))
        self.assertEqual(stats["overflow_total"], 0)
        self.assertFalse(stats["connected"])
        self.assertFalse(stats["node_id_claimed"])
        self.assertEqual(stats["pending_bytes"], 0)
        self.assertEqual(len(said(self.events, LogLevel.warn, "refused a publish")), 1)
        (down,) = said(self.events, LogLevel.warn, "cluster bus down")
        self.assertIn("counted as dropped: 3", down)
        bus.stop()

    def test_unansweredCountedOnceOnTimeout(self) -> None:
        """
        A Redis that stops answering is found by the refresh; the publishes
        awaiting a reply are counted as dropped then, and not again when the
        aborted connections end.  The outage is measured from Redis's last
        answer, not from when it was found: "back ... 12.0s after its last
        answer", not the 1s since the deadline passed.
        """
        bus = self.bus(claimInterval=10.0, connectTimeout=5.0, retryDelay=0.5)
        for _ in range(3):
            bus.publishTo((2 << 32) + 1, b"to you\n")
        self.reactor.advance(4)
        self.link.answer(b":1\r\n")  # Redis's last answer, at 4s
        self.reactor.advance(6)  # the refresh at 10s: never answered
        self.reactor.advance(5)  # its deadline, at 15s
        self.assertFalse(bus.connected)
        self.assertFalse(bus.nodeIdClaimed)
        self.assertEqual(bus.droppedTotal, 2)
        (down,) = said(self.events, LogLevel.warn, "cluster bus down")
        self.assertIn("no answer within 5s; last answer 11.0s ago", down)
        self.link.end(ConnectionAborted())  # the aborts take effect
        self.assertEqual(bus.droppedTotal, 2)

        self.reactor.advance(1)  # the first retry (0.5s, +-20%)
        PlayedLink(self.reactor).setUp()
        self.assertTrue(bus.connected)
        self.assertTrue(bus.nodeIdClaimed)
        (back,) = [e for e in self.events if "cluster bus back" in formatEvent(e)]
        self.assertEqual(back["downSeconds"], 12.0)
        self.assertIn("12.0s after its last answer; publishes dropped meanwhile: 2", formatEvent(back))
        self.assertEqual(bus.stats()["dropped_total"], 2)
        bus.stop()

    def test_capWhereUnsentIsUnknown(self) -> None:
        """
        Over a transport that does not tell its unsent bytes, the cap bounds
        the bytes of the publishes awaiting a reply: beyond it publishes are
        dropped and counted as overflow; once Redis answers they go again.
        """
        bus = self.bus(maxPendingBytes=1000, claimInterval=1000.0)
        payload = b"x" * 300
        for _ in range(10):
            bus.publishBroadcast(payload, 0)
        stats = bus.stats()
        self.assertEqual(
            (stats["published_total"], stats["overflow_total"], stats["dropped_total"]), (2, 8, 8)
        )
        self.assertLessEqual(stats["pending_bytes"], 1000)  # type: ignore[operator]
        self.assertGreater(stats["pending_bytes"], 600)  # type: ignore[operator]
        self.assertEqual(stats["max_pending_bytes"], 1000)
        self.link.answer(b":1\r\n:1\r\n")
        self.assertEqual(bus.stats()["pending_bytes"], 0)
        bus.publishBroadcast(payload, 0)
        self.assertEqual((bus.publishedTotal, bus.overflowTotal), (3, 8))
        bus.stop()

    def test_overflowLogged(self) -> None:
        """
        An overflow is warned about once, with the cap; while it goes on, a
        reminder with the count comes at most once a minute; after a quiet
        minute, a new overflow is warned about as new.
        """
        bus = self.bus(maxPendingBytes=100, claimInterval=1000.0)
        bus.publishBroadcast(b"x" * 90, 0)  # alone over the cap, but nothing waits: sent
        self.assertEqual(bus.publishedTotal, 1)
        for _second in range(150):  # 150 seconds of a Redis that does not answer
            for _ in range(10):
                bus.publishBroadcast(b"y", 0)
            self.reactor.advance(1)
        self.assertEqual(bus.overflowTotal, 1500)
        warnings = [formatEvent(e) for e in self.events if e["log_level"] is LogLevel.warn]
        self.assertEqual(len(warnings), 3)  # at 0s, 60s, 120s
        self.assertIn("over its buffer", warnings[0])
        self.assertIn("the cap is 100", warnings[0])
        self.assertIn("still over its buffer", warnings[1])
        self.assertIn("in the last 60s: 600", warnings[1])
        self.assertIn("in the last 60s: 600", warnings[2])

        self.reactor.advance(120)
        bus.publishBroadcast(b"z", 0)
        last = formatEvent(self.events[-1])
        self.assertIn("over its buffer", last)
        self.assertNotIn("still", last)
        bus.stop()

    def test_authOnTheWire(self) -> None:
        """
        On each connection AUTH goes first (C{AUTH USER PASSWORD} for an ACL
        user); on the command connection SELECT follows, before the claim;
        the subscriber subscribes after its AUTH.
        """
        bus = RedisBus("redis://app:s%40cret@127.0.0.1:6379/3", 1, reactor=self.reactor)
        bus.start(Recorder())
        link = PlayedLink(self.reactor)
        auth = encodeCommand((b"AUTH", b"app", b"s@cret"))
        subscriber = link.subscriberWrapper.transport.value()
        commands = link.commandsWrapper.transport.value()
        self.assertEqual(
            subscriber,
            auth
            + encodeCommand((b"SUBSCRIBE", b"iocpsvc:all"))
            + encodeCommand((b"SUBSCRIBE", b"iocpsvc:node:1")),
        )
        self.assertTrue(commands.startswith(auth + encodeCommand((b"SELECT", b"3")) + b"*6\r\n$3\r\nSET\r\n"))
        # A password alone: AUTH PASSWORD; none: no AUTH, no SELECT for database 0.
        RedisBus("redis://:pw@127.0.0.1:6379", 2, reactor=self.reactor).start(Recorder())
        link = PlayedLink(self.reactor)
        self.assertTrue(
            link.commandsWrapper.transport.value().startswith(encodeCommand((b"AUTH", b"pw")) + b"*6")
        )
        RedisBus("redis://127.0.0.1:6379", 3, reactor=self.reactor).start(Recorder())
        link = PlayedLink(self.reactor)
        self.assertTrue(link.commandsWrapper.transport.value().startswith(b"*6\r\n$3\r\nSET\r\n"))
        bus.stop()

    def test_authReplyThatRepeatsThePassword(self) -> None:
        """
        A server without AUTH answers with the command's arguments, the
        password among them: the log line and /stats.json say what the
        reply means, never its text.
        """
        bus = RedisBus("redis://app:S3cretPW@127.0.0.1:6379", 1, reactor=self.reactor)
        bus.start(Recorder())
        echoed = b"-ERR unknown command 'AUTH', with args beginning with: 'app' 'S3cretPW' \r\n"
        link = PlayedLink(self.reactor)
        link.subscriberWrapper.dataReceived(echoed)
        link.commandsWrapper.dataReceived(echoed)
        self.reactor.advance(0)
        self.assertEqual(bus.authFailuresTotal, 1)
        self.assertEqual(bus.stats()["last_error"], "ERR: this server does not know AUTH")
        said = [formatEvent(e) for e in self.events]
        meaning = "refused AUTH (ERR: this server does not know AUTH)"
        self.assertTrue(any(meaning in line for line in said), said)
        self.assertFalse([line for line in said if "S3cretPW" in line])
        self.assertNotIn("S3cretPW", repr(bus.stats()))
        bus.stop()

    def test_passwordNeededAndNoneGiven(self) -> None:
        """A Redis that wants a password, and a URL without one: a login problem, said as one."""
        bus = RedisBus("redis://127.0.0.1:6379", 1, reactor=self.reactor)
        bus.start(Recorder())
        link = PlayedLink(self.reactor)
        noauth = b"-NOAUTH Authentication required.\r\n"
        link.subscriberWrapper.dataReceived(noauth * 2)
        link.commandsWrapper.dataReceived(noauth)
        self.reactor.advance(0)
        self.assertEqual((bus.authFailuresTotal, bus.authRefused), (1, True))
        errors = [formatEvent(e) for e in self.events if e["log_level"] is LogLevel.error]
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("refused AUTH (NOAUTH: Redis needs a password; give one in the URL", errors[0])
        self.assertIn("; the URL gives no password; this node serves its own clients only", errors[0])
        bus.stop()

    def test_authRefusedRepeatedly(self) -> None:
        """
        A lasting refusal is said once, then reminded once a minute with how
        long it has lasted; every attempt is counted and retried with the
        backoff (at most maxRetryDelay apart, never a tight loop).
        """
        bus = RedisBus("redis://:wrong@127.0.0.1:6379", 1, reactor=self.reactor, maxRetryDelay=10.0)
        bus.start(Recorder())
        refusal = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        noauth = b"-NOAUTH Authentication required.\r\n"
        answered = 0
        for _second in range(150):
            if len(self.reactor.tcpClients) == answered + 2:  # a new attempt's two connections
                link = PlayedLink(self.reactor)
                link.subscriberWrapper.dataReceived(refusal + noauth * 2)
                link.commandsWrapper.dataReceived(refusal + noauth)
                answered += 2
            self.reactor.advance(1)
        attempts = answered // 2
        self.assertEqual(bus.authFailuresTotal, attempts)
        self.assertGreaterEqual(attempts, 12)  # 10 s apart (+-20%) once backed off
        self.assertLessEqual(attempts, 25)
        self.assertTrue(bus.authRefused)
        self.assertFalse(bus.connected)
        errors = [formatEvent(e) for e in self.events if e["log_level"] is LogLevel.error]
        self.assertEqual(len(errors), 3)  # at 0 s, then about 60 s and 120 s
        self.assertIn("cluster: Redis at redis://:***@127.0.0.1:6379 refused AUTH (WRONGPASS", errors[0])
        self.assertIn(
            "cluster bus still down: Redis at redis://:***@127.0.0.1:6379 refuses AUTH for ", errors[1]
        )
        # The first attempt at least a minute after the last line says it (attempts are 8 to 12 s apart).
        lasted = [event["downSeconds"] for event in self.events if "refuses AUTH for" in event["log_format"]]
        self.assertEqual(len(lasted), 2)
        self.assertTrue(60 <= lasted[0] <= 73, lasted)
        self.assertTrue(120 <= lasted[1] <= 146, lasted)
        self.assertEqual([e for e in self.events if e["log_level"] is LogLevel.warn], [])
        bus.stop()

    def test_authRefusalComesAndGoes(self) -> None:
        """
        A refusal, then an attempt that cannot connect, then a refusal
        again within the minute: one line, not one per refusal; each
        refusal counted; auth_refused says what the last attempt met.
        """
        bus = RedisBus("redis://:wrong@127.0.0.1:6379", 1, reactor=self.reactor, retryDelay=1.0)
        bus.start(Recorder())
        refusal = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        noauth = b"-NOAUTH Authentication required.\r\n"

        def refuse() -> None:
            link = PlayedLink(self.reactor)
            link.subscriberWrapper.dataReceived(refusal + noauth * 2)
            link.commandsWrapper.dataReceived(refusal + noauth)

        refuse()
        self.assertEqual((bus.authFailuresTotal, bus.authRefused), (1, True))
        self.reactor.advance(1.5)  # the retry: Redis cannot be reached this time
        for _, _, factory, _, _ in self.reactor.tcpClients[-2:]:
            factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual((bus.authFailuresTotal, bus.authRefused), (1, False))
        self.assertEqual(bus.lastError, "connection refused")
        self.reactor.advance(3)  # the next retry: refused again
        refuse()
        self.assertEqual((bus.authFailuresTotal, bus.authRefused), (2, True))
        self.assertEqual(len(self.reactor.tcpClients), 6)
        (error,) = [formatEvent(e) for e in self.events if e["log_level"] is LogLevel.error]
        self.assertIn("refused AUTH (WRONGPASS", error)
        self.assertEqual([e for e in self.events if e["log_level"] is LogLevel.warn], [])
        bus.stop()

    def test_defaultCap(self) -> None:
        """The cap is the server's --max-pending-write default, 4 MiB."""
        self.assertEqual(DEFAULT_MAX_PENDING_BYTES, 4 * 1024 * 1024)
        self.assertEqual(RedisBus("redis://127.0.0.1:1", 3, reactor=self.reactor).maxPendingBytes, 4 << 20)
        self.assertRaises(ValueError, RedisBus, "redis://127.0.0.1:1", 3, maxPendingBytes=0)


class RedisBusTests(TestCase):
    """Two nodes in this process joined through a real redis-server."""

    if REDIS_SERVER is None:
        skip = NO_REDIS

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.events = captureLogs(self)
        self.redis = RedisServer(self)
        yield self.redis.start()

    @defer.inlineCallbacks
    def twoNodes(self) -> Any:
        """Nodes 1 and 2, both joined."""
        nodes = Node(self, self.redis.url, 1), Node(self, self.redis.url, 2)
        yield waitUntil(reactor, lambda: all(n.bus.connected for n in nodes), timeout=10)
        return nodes

    @defer.inlineCallbacks
    def test_broadcastAndSendTo(self) -> Any:
        """
        A broadcast reaches the clients of both nodes (not the sender); sendTo
        reaches a client on the other node; context ids carry their node.
        """
        node1, node2 = yield self.twoNodes()
        sender = yield node1.client()
        neighbour = yield node1.client()
        remote = yield node2.client()
        self.assertEqual(nodeOfContext(sender.contextId), 1)
        self.assertEqual(nodeOfContext(remote.contextId), 2)
        self.assertNotEqual(sender.contextId, remote.contextId)

        sender.say("all hello everyone")
        yield waitUntil(reactor, lambda: remote.lines and neighbour.lines, timeout=5)
        self.assertEqual((remote.lines, neighbour.lines), (["hello everyone"], ["hello everyone"]))

        sender.say(f"to {remote.contextId} just you")
        remote.say(f"to {sender.contextId} and back")
        yield waitUntil(reactor, lambda: len(remote.lines) == 3 and len(sender.lines) == 2, timeout=5)
        # Each sender also gets its own "sent=True"; what crosses Redis may come before or after it.
        self.assertEqual(sorted(remote.lines[1:]), ["just you", "sent=True"])
        self.assertEqual(sorted(sender.lines), ["and back", "sent=True"])
        self.assertEqual(neighbour.lines, ["hello everyone"])

        self.assertEqual(node1.bus.stats()["published_total"], 2)
        self.assertEqual(node2.bus.stats()["received_total"], 2)
        self.assertEqual(node1.bus.stats()["received_total"], 1)
        self.assertTrue(node1.bus.stats()["node_id_claimed"])
        self.assertEqual(node1.bus.stats()["dropped_total"], 0)

    @defer.inlineCallbacks
    def test_unrouted(self) -> Any:
        """A message to a node that is not there is counted as unrouted."""
        node1, _ = yield self.twoNodes()
        self.assertTrue(node1.factory.sendTo((9 << 32) + 1, "anyone?"))
        yield waitUntil(reactor, lambda: node1.bus.unroutedTotal == 1, timeout=5)

    @defer.inlineCallbacks
    def test_outage(self) -> Any:
        """
        When Redis dies, each node warns once, delivers to its own clients
        only and counts dropped publishes; when Redis is back on the same
        port, the buses reconnect and resubscribe by themselves and
        cross-node delivery works again.
        """
        node1, node2 = yield self.twoNodes()
        sender = yield node1.client()
        neighbour = yield node1.client()
        remote = yield node2.client()
        sender.say("all before")
        yield waitUntil(reactor, lambda: remote.lines == ["before"], timeout=5)

        yield self.redis.kill()
        yield waitUntil(reactor, lambda: not node1.bus.connected and not node2.bus.connected, timeout=5)
        sender.say("all during")
        yield waitUntil(reactor, lambda: neighbour.lines == ["before", "during"], timeout=5)
        self.assertEqual(node1.bus.stats()["dropped_total"], 1)
        # It keeps trying, without a warning per attempt.
        yield waitUntil(reactor, lambda: node1.bus._failedAttempts >= 3, timeout=5)
        self.assertEqual(len(said(self.events, LogLevel.warn, "cluster bus down")), 2)
        self.assertEqual(len([e for e in self.events if e["log_level"] is LogLevel.warn]), 2)

        yield self.redis.start()
        yield waitUntil(reactor, lambda: node1.bus.connected and node2.bus.connected, timeout=10)
        self.assertEqual((node1.bus.reconnectsTotal, node2.bus.reconnectsTotal), (1, 1))
        self.assertEqual(len(said(self.events, LogLevel.info, "cluster bus back")), 2)
        self.assertEqual(len(said(self.events, LogLevel.info, "publishes dropped meanwhile: 1")), 1)

        sender.say("all after")
        sender.say(f"to {remote.contextId} direct")
        yield waitUntil(reactor, lambda: len(remote.lines) == 3, timeout=5)
        self.assertEqual(remote.lines, ["before", "after", "direct"])
        self.assertEqual(neighbour.lines, ["before", "during", "after"])

    @defer.inlineCallbacks
    def test_unresponsive(self) -> Any:
        """
        A Redis that stops answering without closing the connections counts
        as down once a refresh goes unanswered; the bus is back when it answers again.
        """
        node = Node(self, self.redis.url, 1, claimInterval=0.05, connectTimeout=0.3)
        yield waitUntil(reactor, lambda: node.bus.connected, timeout=10)
        self.redis.pause()
        self.addCleanup(self.redis.resume)  # should the test fail before it does
        yield waitUntil(reactor, lambda: not node.bus.connected, timeout=5)
        node.bus.publishBroadcast(b"lost\n", 0)
        self.assertEqual(node.bus.droppedTotal, 1)
        (warning,) = said(self.events, LogLevel.warn, "cluster bus down")
        self.assertIn("no answer within 0.3s", warning)
        self.redis.resume()
        yield waitUntil(reactor, lambda: node.bus.connected, timeout=10)
        self.assertEqual(node.bus.reconnectsTotal, 1)

    @defer.inlineCallbacks
    def test_pausedRedisBounded(self) -> Any:
        """
        While Redis is paused (SIGSTOP: it keeps its connections and reads
        nothing), a flood of publishes keeps at most maxPendingBytes unsent
        in this process; the rest are dropped, counted as overflow and
        warned about once.  Once it resumes, every publish handed to it
        reaches the other node, and new ones go through.
        """
        cap = 256 * 1024
        # A refresh would find the paused Redis and give the link up: not
        # within this test.
        node1 = Node(self, self.redis.url, 1, maxPendingBytes=cap, claimInterval=60.0)
        node2 = Node(self, self.redis.url, 2, claimInterval=60.0)
        yield waitUntil(reactor, lambda: node1.bus.connected and node2.bus.connected, timeout=10)
        link = node1.bus._link
        assert link is not None and link.commands is not None
        commands = link.commands

        self.redis.pause()
        self.addCleanup(self.redis.resume)  # cleanups run last-first: before the kill
        payload = b"x" * 4096 + b"\n"
        mostUnsent = 0
        deadline = reactor.seconds() + 5
        # Batches with a reactor turn in between, so that the kernel's socket
        # buffers fill up first and then this process's.
        while node1.bus.overflowTotal < 500:
            self.assertLess(reactor.seconds(), deadline, "the cap never bit")
            for _ in range(32):
                node1.bus.publishBroadcast(payload, 0)
                unsent = commands.unsentBytes()
                assert unsent is not None  # a TCP transport tells
                mostUnsent = max(mostUnsent, unsent)
            self.assertLessEqual(node1.bus.stats()["pending_bytes"], cap)  # type: ignore[operator]
            yield deferLater(reactor, 0, lambda: None)
        self.assertLessEqual(mostUnsent, cap)
        self.assertGreater(mostUnsent, cap - len(payload) - 100)  # it did fill up to the cap
        self.assertTrue(node1.bus.connected)
        self.assertEqual(node1.bus.droppedTotal, node1.bus.overflowTotal)
        self.assertEqual(len(said(self.events, LogLevel.warn, "over its buffer")), 1)

        self.redis.resume()
        yield waitUntil(reactor, lambda: node2.bus.receivedTotal == node1.bus.publishedTotal, timeout=5)
        node1.bus.publishBroadcast(b"after\n", 0)
        yield waitUntil(reactor, lambda: node2.bus.receivedTotal == node1.bus.publishedTotal, timeout=5)
        self.assertEqual(node1.bus.stats()["pending_bytes"], 0)
        self.assertEqual(len(said(self.events, LogLevel.warn, "over its buffer")), 1)
        self.assertEqual(node1.bus.droppedTotal, node1.bus.overflowTotal)

    @defer.inlineCallbacks
    def test_nodeIdClaim(self) -> Any:
        """
        A node holds {prefix}:nodes:{id} while it runs and releases it when
        it stops; an id held by another process is an error that names
        --node-id, not a crash, and is claimed once free.
        """
        raw = yield self.redis.connect(self)
        yield raw.execute(b"SET", b"iocpsvc:nodes:7", b"elsewhere/42", b"EX", 30)
        taken = Node(self, self.redis.url, 7, claimInterval=0.05)
        holder = Node(self, self.redis.url, 8)
        yield waitUntil(reactor, lambda: taken.bus.connected and holder.bus.connected, timeout=10)

        self.assertFalse(taken.bus.nodeIdClaimed)
        self.assertEqual(taken.bus.nodeIdHolder, "elsewhere/42")
        (error,) = said(self.events, LogLevel.error, "node id 7 is already held by elsewhere/42")
        self.assertIn("--node-id", error)
        self.assertEqual((yield raw.execute(b"GET", b"iocpsvc:nodes:8")), holder.bus.identity)
        self.assertGreater((yield raw.execute(b"TTL", b"iocpsvc:nodes:8")), 20)

        yield raw.execute(b"DEL", b"iocpsvc:nodes:7")
        yield waitUntil(reactor, lambda: taken.bus.nodeIdClaimed, timeout=5)
        self.assertEqual(len(said(self.events, LogLevel.info, "node id 7 is now held by this node")), 1)

        yield holder.bus.stop()
        self.assertIsNone((yield raw.execute(b"GET", b"iocpsvc:nodes:8")))

    @defer.inlineCallbacks
    def test_malformed(self) -> Any:
        """A message that is not a cluster message is counted and logged; the bus goes on."""
        (node,) = (Node(self, self.redis.url, 1),)
        yield waitUntil(reactor, lambda: node.bus.connected, timeout=10)
        client = yield node.client()
        raw = yield self.redis.connect(self)
        for _ in range(20):
            yield raw.execute(b"PUBLISH", b"iocpsvc:all", b"junk")
        yield raw.execute(b"PUBLISH", b"iocpsvc:node:1", b"T\x00")
        yield raw.execute(b"PUBLISH", b"iocpsvc:all", packMessage(BROADCAST, 99, 0, b"still fine\n"))
        yield waitUntil(reactor, lambda: client.lines == ["still fine"], timeout=5)
        self.assertEqual(node.bus.malformedTotal, 21)
        self.assertTrue(node.bus.connected)
        # Rate-limited: a few lines, not one per message.
        self.assertEqual(len(said(self.events, LogLevel.warn, "malformed cluster message")), 5)


class TwistdClusterTests(TestCase):
    """Two twistd chat servers joined through Redis."""

    if REDIS_SERVER is None:
        skip = NO_REDIS

    @defer.inlineCallbacks
    def chatAcross(self, *clusters: tuple[str, dict[str, str]]) -> Any:
        """
        Start a twistd chat server per C{(--cluster URL, environment
        variables)}, and check that a line said to the first reaches a
        client of the second; the servers' output, without a traceback.
        """
        servers = []
        for url, variables in clusters:
            self.patch(os, "environ", {**os.environ, **variables})  # spawnTwistd passes it on
            process, transport = spawnTwistd(
                reactor,
                temporaryDirectory(self),
                "iocpsvc",
                "--context",
                "chat",
                "--port",
                "tcp:0:interface=127.0.0.1",
                "--cluster",
                url,
                "--monitor",
                "none",
            )
            self.addCleanup(lambda p=process: p.ended)
            self.addCleanup(lambda p=process, t=transport: p.ended.called or t.signalProcess("TERM"))
            servers.append(process)
        ports = yield defer.gatherResults([p.listening for p in servers])
        yield waitUntil(reactor, lambda: all(b"joined the cluster" in p.output for p in servers), timeout=20)

        clients = []
        for port in ports:
            client = LineClient()
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
            self.addCleanup(lambda c=client: c.lost)
            self.addCleanup(client.transport.loseConnection)  # type: ignore[union-attr]
            clients.append(client)
        first, second = clients
        # The second one's join line crossing over proves both are subscribed.
        yield waitUntil(reactor, lambda: len(first.lines) == 2, timeout=10)
        self.assertRegex(first.lines[1], r"^\* user(\d+) joined \(id \1\)$")
        first.say("hello from the first node")
        yield waitUntil(reactor, lambda: any("hello from" in line for line in second.lines), timeout=10)
        self.assertRegex(second.lines[-1], r"^user\d+: hello from the first node$")
        outputs = [bytes(process.output) for process in servers]
        for output in outputs:
            self.assertNotIn(b"Traceback", output)
        return outputs

    @defer.inlineCallbacks
    def test_chatAcrossProcesses(self) -> Any:
        """A line said to one twistd chat server reaches a client of the other."""
        redis = RedisServer(self)
        yield redis.start()
        yield self.chatAcross((redis.url, {}), (redis.url, {}))

    @defer.inlineCallbacks
    def test_chatOverTLSWithPassword(self) -> Any:
        """
        The same through a TLS-only Redis that wants a password: one server
        reads it from password_file=, the other from
        $IOCPSVC_CLUSTER_PASSWORD; neither writes it anywhere.
        """
        certs = issueCertificates(temporaryDirectory(self))
        redis = RedisServer(self, "--requirepass", PASSWORD, tls=certs)
        yield redis.start()
        passwordFile = os.path.join(temporaryDirectory(self), "password")
        with open(passwordFile, "w") as f:
            f.write(PASSWORD + "\n")
        outputs = yield self.chatAcross(
            (redis.urlWith(query=f"ca={certs.root}&password_file={passwordFile}"), {}),
            (redis.urlWith(query=f"ca={certs.root}"), {"IOCPSVC_CLUSTER_PASSWORD": PASSWORD}),
        )
        for output in outputs:
            self.assertIn(f"joined the cluster at Redis rediss://127.0.0.1:{redis.port}".encode(), output)
            self.assertNotIn(PASSWORD.encode(), output)

    @defer.inlineCallbacks
    def test_workersWithPasswordInEnvironment(self) -> Any:
        """
        With --workers, the workers take the password from the environment
        they inherit (it is in no process's arguments); a wrong one is said
        by each worker once, and the pool's /stats.json sums their refused
        attempts.
        """
        redis = RedisServer(self, "--requirepass", PASSWORD)
        yield redis.start()
        self.patch(os, "environ", {**os.environ, "IOCPSVC_CLUSTER_PASSWORD": WRONG_PASSWORD})
        process, transport = spawnTwistd(
            reactor,
            temporaryDirectory(self),
            "iocpsvc",
            "--workers", "2",
            "--port", "tcp:0:interface=127.0.0.1",
            "--cluster", redis.url,
            "--monitor", "tcp:0:interface=127.0.0.1",
        )  # fmt: skip
        self.addCleanup(lambda: process.ended)
        self.addCleanup(lambda: process.ended.called or transport.signalProcess("TERM"))
        yield process.listening
        yield waitUntil(reactor, lambda: process.output.count(b"refused AUTH") == 2, timeout=20)
        # The parent's figures are up to a second old: ask until they show it.
        deadline = reactor.seconds() + 20
        while True:
            stats = yield getJSON(reactor, process.monitorURL() + "stats.json")
            if stats.get("cluster", {}).get("auth_failures_total", 0) >= 4:
                break
            self.assertLess(reactor.seconds(), deadline, stats.get("cluster"))
            yield deferLater(reactor, 0.2, lambda: None)
        self.assertFalse(stats["cluster"]["connected"])
        self.assertEqual(len(stats["workers"]), 2)
        for row in stats["workers"]:
            with open(f"/proc/{row['pid']}/cmdline", "rb") as f:
                arguments = f.read()
            self.assertIn(redis.url.encode(), arguments)
            self.assertNotIn(WRONG_PASSWORD.encode(), arguments)
        output = bytes(process.output)
        self.assertEqual(output.count(b"refused AUTH (WRONGPASS"), 2)
        self.assertNotIn(WRONG_PASSWORD.encode(), output)
        self.assertNotIn(b"Traceback", output)


PASSWORD = "c0rrect-h0rse"
WRONG_PASSWORD = "wr0ng-battery"


def captureAllLogs(test: SynchronousTestCase) -> list[dict[str, Any]]:
    """Every log event while the test runs, whatever its namespace."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def startBus(test: TestCase, url: str, nodeId: int, **busArgs: Any) -> tuple[RedisBus, Recorder]:
    """A started bus delivering to a Recorder, stopped when the test ends."""
    bus = RedisBus(url, nodeId, reactor=reactor, **{**FAST, **busArgs})
    received = Recorder()
    bus.start(received)
    test.addCleanup(bus.stop)
    return bus, received


class RedisLoginTests(TestCase):
    """
    Buses logging in to a real redis-server: a password (C{requirepass}), an
    ACL user, a database, a password kept off the command line; a wrong
    password said once, counted, retried, and never logged.
    """

    if REDIS_SERVER is None:
        skip = NO_REDIS

    def setUp(self) -> None:
        self.events = captureAllLogs(self)

    def assertNoSecret(self, *secrets: str) -> None:
        """No log event, formatted or raw, holds any of C{secrets}."""
        self.assertTrue(self.events)
        for event in self.events:
            text = formatEvent(event) + repr(event)
            for secret in secrets:
                self.assertNotIn(secret, text)

    def busEvents(self, level: LogLevel) -> list[str]:
        return [
            formatEvent(e)
            for e in self.events
            if e.get("log_namespace") == "iocpsvc.cluster.redis" and e["log_level"] is level
        ]

    @defer.inlineCallbacks
    def test_password(self) -> Any:
        """
        With the server's requirepass password (C{redis://:PASSWORD@}) a
        broadcast crosses; the URL is shown with ***.
        """
        redis = RedisServer(self, "--requirepass", PASSWORD)
        yield redis.start()
        url = redis.urlWith(f":{PASSWORD}")
        sender, _ = startBus(self, url, 1)
        other, received = startBus(self, url, 2)
        yield waitUntil(reactor, lambda: sender.connected and other.connected, timeout=10)
        sender.publishBroadcast(b"hello\n", 0)
        yield waitUntil(reactor, lambda: received.delivered, timeout=5)
        self.assertEqual(received.delivered, [("broadcast", b"hello\n", 0)])
        self.assertEqual(sender.stats()["redis"], f"redis://:***@127.0.0.1:{redis.port}")
        self.assertEqual((sender.stats()["auth_failures_total"], sender.stats()["auth_refused"]), (0, False))
        (joined,) = [text for text in self.busEvents(LogLevel.info) if "node 1" in text]
        self.assertIn(f"joined the cluster at Redis redis://:***@127.0.0.1:{redis.port}", joined)
        self.assertNoSecret(PASSWORD)

    @defer.inlineCallbacks
    def test_wrongPassword(self) -> Any:
        """
        A wrong password is one error line naming the URL (password as ***)
        and Redis's answer; the bus counts its refused attempts, keeps
        retrying with backoff, delivers nothing and drops its publishes;
        once the server takes that password, it joins by itself.  Neither
        password is ever logged.
        """
        redis = RedisServer(self, "--requirepass", PASSWORD)
        yield redis.start()
        sender, _ = startBus(self, redis.urlWith(f":{PASSWORD}"), 1)
        other, otherReceived = startBus(self, redis.urlWith(f":{PASSWORD}"), 2)
        refused, refusedReceived = startBus(self, redis.urlWith(f":{WRONG_PASSWORD}"), 3)
        yield waitUntil(
            reactor,
            lambda: sender.connected and other.connected and refused.authFailuresTotal >= 4,
            timeout=10,
        )
        self.assertFalse(refused.connected)
        stats = refused.stats()
        self.assertTrue(stats["auth_refused"])
        self.assertIn("WRONGPASS", str(stats["last_error"]))
        self.assertEqual(refused._failedAttempts, refused.authFailuresTotal)

        sender.publishBroadcast(b"members only\n", 0)
        yield waitUntil(reactor, lambda: otherReceived.delivered, timeout=5)
        refused.publishBroadcast(b"let me in\n", 0)
        self.assertEqual(refusedReceived.delivered, [])
        self.assertEqual((refused.publishedTotal, refused.droppedTotal), (0, 1))
        self.assertEqual(otherReceived.delivered, [("broadcast", b"members only\n", 0)])

        (line,) = self.busEvents(LogLevel.error)
        self.assertIn(f"cluster: Redis at redis://:***@127.0.0.1:{redis.port} refused AUTH (WRONGPASS", line)
        self.assertIn("(given by the URL)", line)
        self.assertEqual(self.busEvents(LogLevel.warn), [])

        # The server's password is changed to the one the bus has: it joins by itself.
        raw = yield redis.connect(self, PASSWORD.encode())
        yield raw.execute(b"CONFIG", b"SET", b"requirepass", WRONG_PASSWORD)
        yield waitUntil(reactor, lambda: refused.connected, timeout=10)
        self.assertEqual(refused.stats()["auth_refused"], False)
        self.assertIsNone(refused.stats()["last_error"])
        self.assertEqual(len(self.busEvents(LogLevel.error)), 1)
        self.assertNoSecret(PASSWORD, WRONG_PASSWORD)

    @defer.inlineCallbacks
    def test_aclUser(self) -> Any:
        """
        C{redis://USER:PASSWORD@} logs in as that ACL user (AUTH USER
        PASSWORD), one with only the commands, channels and keys the bus
        needs (as docs/cluster.rst lists them); a wrong password or an
        unknown user is refused.
        """
        redis = RedisServer(
            self,
            "--requirepass", PASSWORD,
            "--user", "app", "on", ">app-s3cret", "resetchannels", "~iocpsvc:nodes:*", "&iocpsvc:*",
            "+subscribe", "+publish", "+set", "+get", "+expire", "+ttl", "+eval", "+del", "+select", "+ping",
        )  # fmt: skip
        yield redis.start()
        sender, _ = startBus(self, redis.urlWith("app:app-s3cret", "/1"), 1, claimInterval=0.05)
        other, received = startBus(self, redis.urlWith("app:app-s3cret", "/1"), 2)
        wrong, _ = startBus(self, redis.urlWith(f"app:{PASSWORD}"), 3)
        unknown, _ = startBus(self, redis.urlWith("nobody:app-s3cret"), 4)
        yield waitUntil(
            reactor,
            lambda: (
                sender.nodeIdClaimed and other.nodeIdClaimed and wrong.authRefused and unknown.authRefused
            ),
            timeout=10,
        )
        sender.publishBroadcast(b"as app\n", 0)
        other.publishTo((1 << 32) + 1, b"to node 1\n")
        yield waitUntil(reactor, lambda: received.delivered and sender.receivedTotal == 1, timeout=5)
        raw = yield redis.connect(self, PASSWORD.encode())
        clients = yield raw.execute(b"CLIENT", b"LIST")
        # Both connections of both buses are app's; the raw one is default's.
        self.assertEqual(clients.count(b" user=app "), 4, clients)

        # The refreshes (SET or GET and EXPIRE; PING on the subscriber, all
        # it is sent once subscribed) are allowed too: still connected.
        link = sender._link
        assert link is not None and link.subscriber is not None
        pings: list[Any] = []
        execute = link.subscriber.execute

        def recordPings(*args: Any) -> defer.Deferred[Any]:
            replied = execute(*args)
            if args[0] == b"PING":
                replied.addBoth(lambda reply: pings.append(reply) or reply)
            return replied

        self.patch(link.subscriber, "execute", recordPings)
        yield waitUntil(reactor, lambda: len(pings) >= 2, timeout=5)
        self.assertEqual(pings[:2], [[b"pong", b""]] * 2)
        self.assertTrue(sender.connected)
        self.assertIs(sender._link, link)

        # Stopping releases the node id (EVAL, with GET and DEL).
        yield raw.execute(b"SELECT", 1)
        self.assertEqual((yield raw.execute(b"GET", b"iocpsvc:nodes:1")), sender.identity)
        yield sender.stop()
        self.assertIsNone((yield raw.execute(b"GET", b"iocpsvc:nodes:1")))
        self.assertEqual(self.busEvents(LogLevel.warn), [])
        refusals = self.busEvents(LogLevel.error)
        self.assertEqual(len(refusals), 2)
        self.assertTrue(any(f"redis://app:***@127.0.0.1:{redis.port}" in line for line in refusals))
        self.assertTrue(any(f"redis://nobody:***@127.0.0.1:{redis.port}" in line for line in refusals))
        self.assertNoSecret("app-s3cret", PASSWORD)

    @defer.inlineCallbacks
    def test_database(self) -> Any:
        """
        C{/DB} selects that database (after AUTH): the node-id key is there,
        not in database 0; pub/sub crosses databases (the prefix keeps
        clusters apart).
        """
        redis = RedisServer(self, "--requirepass", PASSWORD)
        yield redis.start()
        inFive, _ = startBus(self, redis.urlWith(f":{PASSWORD}", "/5"), 1)
        inZero, received = startBus(self, redis.urlWith(f":{PASSWORD}"), 2)
        yield waitUntil(reactor, lambda: inFive.nodeIdClaimed and inZero.nodeIdClaimed, timeout=10)
        raw = yield redis.connect(self, PASSWORD.encode())
        self.assertIsNone((yield raw.execute(b"GET", b"iocpsvc:nodes:1")))
        self.assertEqual((yield raw.execute(b"GET", b"iocpsvc:nodes:2")), inZero.identity)
        yield raw.execute(b"SELECT", 5)
        self.assertEqual((yield raw.execute(b"GET", b"iocpsvc:nodes:1")), inFive.identity)
        self.assertIsNone((yield raw.execute(b"GET", b"iocpsvc:nodes:2")))
        self.assertEqual(inFive.stats()["redis"], f"redis://:***@127.0.0.1:{redis.port}/5")
        inFive.publishBroadcast(b"from five\n", 0)
        yield waitUntil(reactor, lambda: received.delivered, timeout=5)

    @defer.inlineCallbacks
    def test_databaseOutOfRange(self) -> Any:
        """A database the server does not have is a failed attempt, said once, retried."""
        redis = RedisServer(self, "--databases", "4")
        yield redis.start()
        bus, _ = startBus(self, redis.urlWith(path="/4"), 1)
        yield waitUntil(reactor, lambda: bus._failedAttempts >= 3, timeout=10)
        self.assertFalse(bus.connected)
        (line,) = self.busEvents(LogLevel.warn)
        self.assertIn("DB index is out of range", line)
        self.assertEqual(bus.authFailuresTotal, 0)

    @defer.inlineCallbacks
    def test_passwordOffTheCommandLine(self) -> Any:
        """The password from password_file= or from $IOCPSVC_CLUSTER_PASSWORD logs in as well."""
        redis = RedisServer(self, "--requirepass", PASSWORD)
        yield redis.start()
        passwordFile = os.path.join(temporaryDirectory(self), "redis-password")
        with open(passwordFile, "w") as f:
            f.write(PASSWORD + "\n")
        fromFile, _ = startBus(self, redis.urlWith(query=f"password_file={passwordFile}"), 1)
        fromEnvironment, received = startBus(
            self, redis.urlWith(), 2, environ={"IOCPSVC_CLUSTER_PASSWORD": PASSWORD}
        )
        wrongFromEnvironment, _ = startBus(
            self, redis.urlWith(), 3, environ={"IOCPSVC_CLUSTER_PASSWORD": WRONG_PASSWORD}
        )
        yield waitUntil(
            reactor,
            lambda: fromFile.connected and fromEnvironment.connected and wrongFromEnvironment.authRefused,
            timeout=10,
        )
        fromFile.publishBroadcast(b"from the file\n", 0)
        yield waitUntil(reactor, lambda: received.delivered, timeout=5)
        (line,) = self.busEvents(LogLevel.error)
        self.assertIn("(given by $IOCPSVC_CLUSTER_PASSWORD)", line)
        self.assertNoSecret(PASSWORD, WRONG_PASSWORD)


def clientCertificate(directory: str) -> tuple[str, str]:
    """
    A self-signed certificate for TLS clients (extended key usage
    clientAuth, which a server checks; those of L{tests.certs} are for
    servers) and its key, as PEM files in C{directory}.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iocpsvc test node")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    certPath = os.path.join(directory, "node.pem")
    keyPath = os.path.join(directory, "node.key")
    with open(certPath, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(keyPath, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return certPath, keyPath


class RedisTLSTests(TestCase):
    """
    Buses over TLS (C{rediss://}) to a real redis-server serving TLS only,
    with the certificates of L{tests.certs}: verified against C{ca=}, by
    host name or address; a wrong CA, a wrong name or the system's trust
    store (which does not know the test CA) is a failed handshake, said
    once, and nothing is delivered.
    """

    if REDIS_SERVER is None:
        skip = NO_REDIS

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.events = captureAllLogs(self)
        self.certs = issueCertificates(temporaryDirectory(self))
        self.redis = RedisServer(self, "--requirepass", PASSWORD, tls=self.certs)
        try:
            yield self.redis.start()
        except RuntimeError as e:
            if "tls" in str(e).lower() and "not" in str(e).lower():
                raise SkipTest(f"this redis-server is built without TLS: {e}") from None
            raise

    def busWarnings(self) -> list[str]:
        return [
            formatEvent(e)
            for e in self.events
            if e.get("log_namespace") == "iocpsvc.cluster.redis" and e["log_level"] is LogLevel.warn
        ]

    @defer.inlineCallbacks
    def test_tls(self) -> Any:
        """
        rediss:// with ca= reaches the TLS-only server, by address and by
        host name (both in the certificate), with AUTH over TLS.
        """
        byAddress, addressReceived = startBus(
            self, self.redis.urlWith(f":{PASSWORD}", query=f"ca={self.certs.root}"), 1
        )
        byName, nameReceived = startBus(
            self, f"rediss://:{PASSWORD}@localhost:{self.redis.port}?ca={self.certs.root}", 2
        )
        bySNI, _ = startBus(
            self, self.redis.urlWith(f":{PASSWORD}", query=f"ca={self.certs.root}&sni=localhost"), 3
        )
        yield waitUntil(
            reactor, lambda: byAddress.connected and byName.connected and bySNI.connected, timeout=10
        )
        byAddress.publishBroadcast(b"over tls\n", 0)
        byName.publishBroadcast(b"back\n", 0)
        yield waitUntil(
            reactor, lambda: addressReceived.delivered and len(nameReceived.delivered) == 1, timeout=5
        )
        self.assertEqual(nameReceived.delivered, [("broadcast", b"over tls\n", 0)])
        self.assertEqual(addressReceived.delivered, [("broadcast", b"back\n", 0)])
        self.assertTrue(byAddress.stats()["tls"])
        self.assertEqual(byAddress.stats()["dropped_total"], 0)
        for event in self.events:
            self.assertNotIn(PASSWORD, formatEvent(event) + repr(event))

    @defer.inlineCallbacks
    def assertHandshakeFails(self, query: str, why: str) -> Any:
        """
        A bus with C{query} never joins: one warning with C{why}; a good
        bus's broadcast does not reach it.
        """
        good, _ = startBus(self, self.redis.urlWith(f":{PASSWORD}", query=f"ca={self.certs.root}"), 1)
        bad, badReceived = startBus(self, self.redis.urlWith(f":{PASSWORD}", query=query), 2)
        yield waitUntil(reactor, lambda: good.connected and bad._failedAttempts >= 3, timeout=10)
        good.publishBroadcast(b"not for you\n", 0)
        bad.publishBroadcast(b"nor this\n", 0)
        self.assertFalse(bad.connected)
        self.assertEqual(badReceived.delivered, [])
        self.assertEqual((bad.publishedTotal, bad.droppedTotal, bad.authFailuresTotal), (0, 1, 0))
        (warning,) = self.busWarnings()
        self.assertIn(f"cannot reach Redis rediss://:***@127.0.0.1:{self.redis.port}", warning)
        self.assertIn(f"TLS handshake failed: {why}", warning)
        self.assertIn(why, str(bad.stats()["last_error"]))
        for event in self.events:
            self.assertNotIn(PASSWORD, formatEvent(event) + repr(event))

    @defer.inlineCallbacks
    def test_clientCertificate(self) -> Any:
        """
        Mutual TLS: to a server that asks every client for a certificate,
        a bus with cert= and key= gets in; one without is turned away.
        """
        directory = temporaryDirectory(self)
        cert, key = clientCertificate(directory)
        trusted = os.path.join(directory, "clients.pem")
        with open(trusted, "wb") as out:
            for path in (self.certs.root, cert):
                with open(path, "rb") as part:
                    out.write(part.read())
        yield self.redis.kill()
        self.redis.options = ("--tls-auth-clients", "yes", "--tls-ca-cert-file", trusted)
        yield self.redis.start()
        withCertificate, received = startBus(
            self, self.redis.urlWith(query=f"ca={self.certs.root}&cert={cert}&key={key}"), 1
        )
        other, _ = startBus(self, self.redis.urlWith(query=f"ca={self.certs.root}&cert={cert}&key={key}"), 2)
        without, _ = startBus(self, self.redis.urlWith(query=f"ca={self.certs.root}"), 3)
        yield waitUntil(
            reactor,
            lambda: withCertificate.connected and other.connected and without._failedAttempts >= 3,
            timeout=10,
        )
        other.publishBroadcast(b"mutual\n", 0)
        yield waitUntil(reactor, lambda: received.delivered, timeout=5)
        self.assertFalse(without.connected)
        (warning,) = self.busWarnings()
        self.assertIn(f"cannot reach Redis rediss://127.0.0.1:{self.redis.port}?ca=", warning)
        self.assertIn("(TLS handshake failed: tlsv13 alert certificate required)", warning)

    def test_wrongCA(self) -> Any:
        """A server whose certificate the given CA did not issue."""
        other = issueCertificates(temporaryDirectory(self))
        return self.assertHandshakeFails(f"ca={other.root}", "certificate verify failed")

    def test_systemTrust(self) -> Any:
        """Without ca=, the system's trust store, which does not know the test CA."""
        return self.assertHandshakeFails("", "certificate verify failed")

    def test_wrongName(self) -> Any:
        """A certificate that does not name sni= (or the host)."""
        return self.assertHandshakeFails(
            f"ca={self.certs.root}&sni=redis.example.com",
            "the server's certificate is not for redis.example.com",
        )
