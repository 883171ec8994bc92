"""
Tests for L{iocpsvc.cluster.redis.RedisBus} against a real C{redis-server}
started by each test on 127.0.0.1 (skipped when it is not installed): two
nodes in this process with real client connections, an outage and the
recovery from it, the node-id claim, malformed messages, and two C{twistd}
chat servers joined through Redis.  Without Redis: a bus that cannot reach
it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IListeningPort
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from iocpsvc.cluster import BROADCAST, nodeOfContext, packMessage
from iocpsvc.cluster.redis import RedisBus
from iocpsvc.cluster.resp import RedisConnection
from iocpsvc.context import ConnectionContext
from iocpsvc.factory import ConnectionContextFactory
from tests.netutil import spawnTwistd, temporaryDirectory, waitUntil
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

    def __init__(self, test: TestCase) -> None:
        self.port = freePort()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.directory = temporaryDirectory(test)
        self.process: _RedisProcess | None = None
        self.transport: Any = None
        test.addCleanup(self.kill)

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
        """Let a paused server go on (SIGCONT)."""
        self.transport.signalProcess(signal.SIGCONT)

    def connect(self, test: TestCase) -> defer.Deferred[RedisConnection]:
        """A raw connection to it, closed when the test ends."""
        connection = RedisConnection()

        def closeLater(connected: RedisConnection) -> RedisConnection:
            def close() -> defer.Deferred[None]:
                lost = connected.notifyLost()
                connected.abort()
                return lost

            test.addCleanup(close)
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


def captureLogs(test: TestCase) -> list[dict[str, Any]]:
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
        yield waitUntil(reactor, lambda: not node.bus.connected, timeout=5)
        node.bus.publishBroadcast(b"lost\n", 0)
        self.assertEqual(node.bus.droppedTotal, 1)
        (warning,) = said(self.events, LogLevel.warn, "cluster bus down")
        self.assertIn("no answer within 0.3s", warning)
        self.redis.resume()
        yield waitUntil(reactor, lambda: node.bus.connected, timeout=10)
        self.assertEqual(node.bus.reconnectsTotal, 1)

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
    def test_chatAcrossProcesses(self) -> Any:
        """A line said to one twistd chat server reaches a client of the other."""
        redis = RedisServer(self)
        yield redis.start()
        servers = []
        for _ in range(2):
            process, transport = spawnTwistd(
                reactor,
                temporaryDirectory(self),
                "iocpsvc",
                "--context",
                "chat",
                "--port",
                "tcp:0:interface=127.0.0.1",
                "--cluster",
                redis.url,
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
        for process in servers:
            self.assertNotIn(b"Traceback", bytes(process.output))
