"""
Tests for L{iocpsvc.cluster}: the bus message format, node ids in context
ids, the Redis bus's channel names, and the factory's broadcast and sendTo across two
nodes joined by an in-memory bus (no Redis); the chat example across nodes;
the cluster figures in the monitor.
"""

from __future__ import annotations

import itertools
import json
import random
import struct
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

import iocpsvc.factory
from iocpsvc.apps import ChatContext
from iocpsvc.cluster import (
    BROADCAST,
    HEADER_SIZE,
    MAX_CONTEXT_ID,
    MAX_NODE_ID,
    NODE_SHIFT,
    TO_CONTEXT,
    checkNodeId,
    deliver,
    firstContextId,
    lastContextId,
    nodeOfContext,
    packMessage,
    randomNodeId,
    redactURL,
    unpackMessage,
)
from iocpsvc.cluster.redis import RedisBus
from iocpsvc.context import ConnectionContext
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.interfaces import IClusterBus, IClusterReceiver
from iocpsvc.monitor.prometheus import metricsText
from iocpsvc.monitor.stats import collect
from iocpsvc.testing import EmbeddedConnection


class RecordingReceiver:
    """An L{IClusterReceiver} that records what it is asked to deliver."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bytes]] = []

    def deliverBroadcast(self, payload: bytes, excludeContextId: int) -> int:
        self.calls.append(("broadcast", excludeContextId, payload))
        return 1

    def deliverTo(self, contextId: int, payload: bytes) -> bool:
        self.calls.append(("to", contextId, payload))
        return True


@implementer(IClusterBus)
class InMemoryBus:
    """
    An L{IClusterBus} whose nodes are the buses sharing one C{hub} list:
    publishing delivers at once, through the real message format.
    """

    def __init__(self, hub: list[InMemoryBus], nodeId: int) -> None:
        self.hub = hub
        self.nodeId = nodeId
        self.connected = True
        self.receiver: Any = None
        self.published = 0
        self.dropped = 0
        hub.append(self)

    def start(self, receiver: IClusterReceiver) -> None:
        self.receiver = receiver

    def stop(self) -> None:
        self.receiver = None

    def _publish(self, message: bytes) -> None:
        if not self.connected:
            self.dropped += 1
            return
        self.published += 1
        for bus in self.hub:
            if bus.receiver is not None and bus.connected:
                deliver(bus.receiver, bus.nodeId, message)

    def publishBroadcast(self, payload: bytes, excludeContextId: int) -> None:
        self._publish(packMessage(BROADCAST, self.nodeId, excludeContextId, payload))

    def publishTo(self, contextId: int, payload: bytes) -> None:
        self._publish(packMessage(TO_CONTEXT, self.nodeId, contextId, payload))

    def stats(self) -> dict[str, object]:
        return {
            "connected": self.connected,
            "node_id": self.nodeId,
            "published_total": self.published,
            "received_total": 0,
            "dropped_total": self.dropped,
        }


def twoNodes(
    contextClass: type[ConnectionContext], codec: str | None = None
) -> tuple[ConnectionContextFactory, ConnectionContextFactory, list[InMemoryBus]]:
    """Factories of nodes 1 and 2, joined by one in-memory bus and started."""
    hub: list[InMemoryBus] = []
    clock = Clock()
    factories = []
    for nodeId in (1, 2):
        factory = ConnectionContextFactory(contextClass, codec, reactor=clock)
        bus = InMemoryBus(hub, nodeId)
        factory.joinCluster(bus)
        bus.start(factory)
        factories.append(factory)
    return factories[0], factories[1], hub


def connect(factory: ConnectionContextFactory) -> EmbeddedConnection:
    """One in-memory client connection to C{factory}."""
    return EmbeddedConnection(factory=factory, clock=factory.reactor)


class ChosenStarts(random.Random):
    """
    Stands in for the factory's source of sequence starts: gives the starts
    a test chooses, in order, and notes the ranges it was asked for.
    """

    def __init__(self, *starts: int) -> None:
        super().__init__(0)
        self.starts = list(starts)
        self.asked: list[tuple[int, int | None]] = []

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        self.asked.append((start, stop))
        return self.starts.pop(0)


class RelayContext(ConnectionContext):
    """C{all TEXT} broadcasts TEXT (not to the sender); C{to ID TEXT} sends it to one context."""

    defaultCodec = "line+text"

    def objectReceived(self, obj: object) -> None:
        assert isinstance(obj, str) and self.factory is not None
        command, _, rest = obj.partition(" ")
        if command == "all":
            self.factory.broadcast(rest, exclude=self)
        elif command == "to":
            target, _, text = rest.partition(" ")
            self.writeObject(f"sent={self.factory.sendTo(int(target), text)}")


class MessageFormatTests(SynchronousTestCase):
    """The bus message: a 13-byte header and the encoded payload."""

    def test_layout(self) -> None:
        """kind (1 byte), origin node (u32 BE), context id (u64 BE), then the payload."""
        message = packMessage(BROADCAST, 7, firstContextId(7), b"hi\n")
        self.assertEqual(HEADER_SIZE, 13)
        self.assertEqual(message, b"B" + struct.pack(">I", 7) + struct.pack(">Q", (7 << 32) + 1) + b"hi\n")

    def test_roundTrip(self) -> None:
        """unpackMessage returns what packMessage was given, for both kinds and any payload."""
        for kind, origin, contextId, payload in (
            (BROADCAST, 1, 0, b""),
            (TO_CONTEXT, MAX_NODE_ID, firstContextId(MAX_NODE_ID) + 0xFFFFFFFE, b"\x00\r\n" * 1000),
        ):
            self.assertEqual(
                unpackMessage(packMessage(kind, origin, contextId, payload)),
                (kind, origin, contextId, payload),
            )

    def test_malformed(self) -> None:
        """A message shorter than its header, or of an unknown kind, is a ValueError."""
        for message in (b"", b"B\x00\x00", packMessage(BROADCAST, 1, 0, b"x")[:12], b"X" + b"\x00" * 12):
            self.assertRaises(ValueError, unpackMessage, message)
            self.assertRaises(ValueError, deliver, RecordingReceiver(), 1, message)

    def test_deliverBroadcast(self) -> None:
        """Another node's broadcast is delivered with the context to leave out."""
        receiver = RecordingReceiver()
        self.assertTrue(deliver(receiver, 2, packMessage(BROADCAST, 1, firstContextId(1), b"p")))
        self.assertEqual(receiver.calls, [("broadcast", firstContextId(1), b"p")])

    def test_ownBroadcastIgnored(self) -> None:
        """A node's own broadcast, coming back from the bus, is not delivered again."""
        receiver = RecordingReceiver()
        self.assertFalse(deliver(receiver, 1, packMessage(BROADCAST, 1, 0, b"p")))
        self.assertEqual(receiver.calls, [])

    def test_deliverTo(self) -> None:
        """A directed message is delivered on the node its context id names, and only there."""
        receiver = RecordingReceiver()
        contextId = firstContextId(2) + 4
        self.assertTrue(deliver(receiver, 2, packMessage(TO_CONTEXT, 1, contextId, b"p")))
        self.assertFalse(deliver(receiver, 3, packMessage(TO_CONTEXT, 1, contextId, b"q")))
        self.assertEqual(receiver.calls, [("to", contextId, b"p")])


class NodeIdTests(SynchronousTestCase):
    """Node ids, and the node id carried in the high bits of context ids."""

    def test_contextIds(self) -> None:
        """A node's context ids start at node << 32 + 1 and name their node; all stay below 2**53."""
        self.assertEqual(firstContextId(1), 2**32 + 1)
        for nodeId in (1, 2, 12345, MAX_NODE_ID):
            self.assertEqual(nodeOfContext(firstContextId(nodeId)), nodeId)
            self.assertEqual(nodeOfContext(firstContextId(nodeId) + 2**32 - 2), nodeId)
        self.assertEqual(firstContextId(MAX_NODE_ID) + 2**32 - 2, 2**53 - 1)  # the largest
        self.assertEqual(nodeOfContext(5), 0)  # a standalone server is node 0

    def test_checkNodeId(self) -> None:
        """Node ids run from 1 to MAX_NODE_ID."""
        self.assertEqual(checkNodeId(1), 1)
        self.assertEqual(checkNodeId(MAX_NODE_ID), MAX_NODE_ID)
        for bad in (0, -1, MAX_NODE_ID + 1):
            self.assertRaises(ValueError, checkNodeId, bad)

    def test_randomNodeId(self) -> None:
        """A random node id is a valid one, and they differ."""
        ids = {randomNodeId() for _ in range(50)}
        self.assertTrue(all(checkNodeId(i) for i in ids))
        self.assertGreater(len(ids), 40)

    def test_factoryIds(self) -> None:
        """
        Standalone, ids are 1, 2, 3, ... (nothing random); joined to a
        cluster as node 3, they carry node 3 and go on one by one from a
        random point of the node's whole sequence (1 to 2**32 - 1).
        """
        starts = ChosenStarts(1000)
        self.patch(iocpsvc.factory, "_sequenceStarts", starts)
        factory = ConnectionContextFactory(reactor=Clock())
        self.assertEqual([connect(factory).context.contextId for _ in range(3)], [1, 2, 3])
        self.assertEqual((factory.nodeId, starts.asked), (0, []))
        factory.joinCluster(InMemoryBus([], 3))
        self.assertEqual(factory.nodeId, 3)
        self.assertEqual(starts.asked, [(1, 2**NODE_SHIFT)])  # randrange's stop is left out
        first, second = connect(factory), connect(factory)
        self.assertEqual(first.context.contextId, (3 << 32) + 1000)
        self.assertEqual(second.context.contextId, (3 << 32) + 1001)
        self.assertEqual(nodeOfContext(second.context.contextId), 3)

    def test_startsFromTheOSRandomness(self) -> None:
        """
        Sequence starts come from the OS's randomness (not a generator
        seeded alike in processes started or forked alike): fifty nodes
        joining as node 3 start at fifty points of its range.
        """
        self.assertIsInstance(iocpsvc.factory._sequenceStarts, random.SystemRandom)
        firsts = set()
        for _ in range(50):
            factory = ConnectionContextFactory(reactor=Clock())
            factory.joinCluster(InMemoryBus([], 3))
            contextId = connect(factory).context.contextId
            self.assertTrue(firstContextId(3) <= contextId <= lastContextId(3), contextId)
            firsts.add(contextId)
        # One pair alike (a chance of about 1 in 3.5 million) is let pass.
        self.assertGreaterEqual(len(firsts), 49)

    def test_restartDoesNotReissueIds(self) -> None:
        """
        A node restarted with the same id (a new factory joining as node 3
        again: the same --node-id, or a worker slot's replacement) goes on
        from another point, so a /msg to a user of the previous run does not
        reach a newcomer; it reports that nobody has that id.
        """
        self.patch(iocpsvc.factory, "_sequenceStarts", ChosenStarts(7, 3_000_000_000))
        hub: list[InMemoryBus] = []
        before = ConnectionContextFactory(ChatContext, reactor=Clock())
        before.joinCluster(InMemoryBus(hub, 3))
        oldIds = [connect(before).context.contextId for _ in range(5)]
        hub.clear()  # node 3 stops; its users are gone
        after = ConnectionContextFactory(ChatContext, reactor=Clock())
        after.joinCluster(InMemoryBus(hub, 3))
        newcomers = [connect(after) for _ in range(5)]
        self.assertEqual(set(oldIds) & {c.context.contextId for c in newcomers}, set())
        self.assertEqual({nodeOfContext(c.context.contextId) for c in newcomers}, {3})
        for connection in newcomers:
            connection.readObjects()
        newcomers[0].feed(f"/msg {oldIds[1]} still there?\n".encode())
        self.assertEqual(newcomers[0].readObjects(), [f"* no user with id {oldIds[1]} is online"])
        self.assertEqual([c.readObjects() for c in newcomers[1:]], [[]] * 4)

    def test_idsWrapWithinTheNode(self) -> None:
        """
        After a node's last id, ids start again at its first (never the
        next node's, never sequence number 0), skipping ids still online.
        """
        self.patch(iocpsvc.factory, "_sequenceStarts", ChosenStarts(1))
        factory = ConnectionContextFactory(reactor=Clock())
        factory.joinCluster(InMemoryBus([], 3))
        survivor = connect(factory)
        self.assertEqual(survivor.context.contextId, firstContextId(3))
        factory._ids = itertools.count(lastContextId(3))
        last, wrapped = connect(factory), connect(factory)
        self.assertEqual(last.context.contextId, lastContextId(3))
        self.assertEqual(wrapped.context.contextId, firstContextId(3) + 1)
        self.assertEqual(nodeOfContext(wrapped.context.contextId), 3)

    def test_highestStartWraps(self) -> None:
        """A node whose random start is its last id gives that id, then goes on at its first."""
        self.patch(iocpsvc.factory, "_sequenceStarts", ChosenStarts(2**32 - 1))
        factory = ConnectionContextFactory(reactor=Clock())
        factory.joinCluster(InMemoryBus([], MAX_NODE_ID))
        ids = [connect(factory).context.contextId for _ in range(2)]
        self.assertEqual(ids, [lastContextId(MAX_NODE_ID), firstContextId(MAX_NODE_ID)])
        self.assertEqual(ids[0], MAX_CONTEXT_ID)

    def test_sendToOutOfRange(self) -> None:
        """sendTo is False for ids no node can have (0, negative, past 2**53)."""
        factory = ConnectionContextFactory(reactor=Clock())
        factory.joinCluster(InMemoryBus([], 3))
        for contextId in (0, -1, MAX_CONTEXT_ID + 1, 2**64):
            self.assertFalse(factory.sendTo(contextId, "x"), contextId)


class RedisBusNamesTests(SynchronousTestCase):
    """A Redis bus's channels and key (its URL: L{tests.test_cluster_url})."""

    def test_busChannels(self) -> None:
        """A bus provides IClusterBus; its channels and key are named after the prefix and node id."""
        bus = RedisBus("redis://127.0.0.1:1/2?prefix=p", 9, reactor=Clock())
        verifyObject(IClusterBus, bus)
        self.assertEqual(
            (bus.broadcastChannel, bus.nodeChannel, bus.claimKey, bus.channelOf(4)),
            (b"p:all", b"p:node:9", b"p:nodes:9", b"p:node:4"),
        )
        self.assertRaises(ValueError, RedisBus, "redis://127.0.0.1", 0, reactor=Clock())


class FactoryAcrossNodesTests(SynchronousTestCase):
    """broadcast and sendTo between two factories joined by a bus."""

    def test_broadcast(self) -> None:
        """A broadcast reaches every context of both nodes but the excluded one, encoded once."""
        node1, node2, hub = twoNodes(RelayContext)
        sender, local = connect(node1), connect(node1)
        remote = [connect(node2), connect(node2)]
        sender.feed(b"all hello\n")
        self.assertEqual(sender.readObjects(), [])
        self.assertEqual(local.readObjects(), ["hello"])
        self.assertEqual([c.readObjects() for c in remote], [["hello"], ["hello"]])
        self.assertEqual((hub[0].published, hub[1].published), (1, 0))

    def test_broadcastReturnsLocalCount(self) -> None:
        """broadcast() counts the contexts of this node it wrote to."""
        node1, node2, _ = twoNodes(RelayContext)
        connect(node1), connect(node2), connect(node2)
        self.assertEqual(node1.broadcast("x"), 1)

    def test_sendTo(self) -> None:
        """sendTo reaches a context on the other node, and one on this node."""
        node1, node2, _ = twoNodes(RelayContext)
        sender, neighbour, remote = connect(node1), connect(node1), connect(node2)
        self.assertEqual(nodeOfContext(remote.context.contextId), 2)
        sender.feed(f"to {remote.context.contextId} over there\n".encode())
        sender.feed(f"to {neighbour.context.contextId} next door\n".encode())
        self.assertEqual(sender.readObjects(), ["sent=True", "sent=True"])
        self.assertEqual(remote.readObjects(), ["over there"])
        self.assertEqual(neighbour.readObjects(), ["next door"])

    def test_sendToNobody(self) -> None:
        """sendTo is False for an id of this node that is not online, and for other nodes when standalone."""
        node1, _, _ = twoNodes(RelayContext)
        self.assertFalse(node1.sendTo(firstContextId(1) + 99, "x"))
        standalone = ConnectionContextFactory(RelayContext, reactor=Clock())
        self.assertFalse(standalone.sendTo(firstContextId(2), "x"))

    def test_busDown(self) -> None:
        """With the bus down, a broadcast still reaches this node's contexts; the publish is dropped."""
        node1, node2, hub = twoNodes(RelayContext)
        sender, local, remote = connect(node1), connect(node1), connect(node2)
        hub[0].connected = False
        sender.feed(b"all local only\n")
        self.assertEqual(local.readObjects(), ["local only"])
        self.assertEqual(remote.readObjects(), [])
        self.assertEqual(hub[0].dropped, 1)


class ChatAcrossNodesTests(SynchronousTestCase):
    """The chat example on two nodes."""

    def test_room(self) -> None:
        """Joins and lines reach users on both nodes; join lines show the user's id."""
        node1, node2, _ = twoNodes(ChatContext)
        alice = connect(node1)
        bob = connect(node2)
        aliceId, bobId = alice.context.contextId, bob.context.contextId
        alice.feed(b"/nick alice\nhello\n")
        self.assertEqual(
            alice.readObjects(),
            [
                f"* user{aliceId} joined (id {aliceId})",
                f"* user{bobId} joined (id {bobId})",
                f"* user{aliceId} is now alice",
                "alice: hello",
            ],
        )
        self.assertEqual(
            bob.readObjects(),
            [f"* user{bobId} joined (id {bobId})", f"* user{aliceId} is now alice", "alice: hello"],
        )

    def test_privateMessage(self) -> None:
        """/msg ID text reaches only that user, on the other node or this one."""
        node1, node2, _ = twoNodes(ChatContext)
        alice, carol, bob = connect(node1), connect(node1), connect(node2)
        for connection in (alice, carol, bob):
            connection.readObjects()
        alice.feed(f"/nick alice\n/msg {bob.context.contextId}   psst  \n".encode())
        carol.feed(f"/msg {alice.context.contextId} hi\n".encode())
        self.assertEqual(bob.readObjects()[-1], f"* alice (id {alice.context.contextId}) to you: psst")
        self.assertEqual(
            alice.readObjects()[-1],
            f"* user{carol.context.contextId} (id {carol.context.contextId}) to you: hi",
        )
        self.assertEqual(carol.readObjects(), [f"* user{alice.context.contextId} is now alice"])

    def test_privateMessageErrors(self) -> None:
        """/msg to nobody online here, to an impossible id, or without text answers with an error line."""
        node1, _, _ = twoNodes(ChatContext)
        alice = connect(node1)
        alice.readObjects()
        missing = firstContextId(1) + 50
        alice.feed(f"/msg {missing} hi\n/msg 99999999999999999999999 hi\n/msg 7\n/msg x hi\n/msg\n".encode())
        self.assertEqual(
            alice.readObjects(),
            [
                f"* no user with id {missing} is online",
                "* no user with id 99999999999999999999999 is online",
                "* usage: /msg ID text",
                "* usage: /msg ID text",
                "* usage: /msg ID text",
            ],
        )


class ClusterMonitorTests(SynchronousTestCase):
    """The bus's figures in /stats.json and /metrics."""

    def metrics(self, factory: ConnectionContextFactory) -> dict[str, float]:
        text = metricsText(lambda: collect(factory)).decode()
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name.startswith("iocpsvc_cluster_")
        }

    def test_clusterMetrics(self) -> None:
        """A node in a cluster exports the bus's stats() as iocpsvc_cluster_* metrics."""
        bus = RedisBus("redis://127.0.0.1:1", 5, reactor=Clock())
        factory = ConnectionContextFactory(RelayContext, reactor=Clock())
        factory.joinCluster(bus)
        bus.publishBroadcast(b"x", 0)  # never connected: dropped
        self.assertEqual(collect(factory)["cluster"], bus.stats())
        self.assertEqual(
            self.metrics(factory),
            {
                "iocpsvc_cluster_connected": 0.0,
                "iocpsvc_cluster_node_id": 5.0,
                "iocpsvc_cluster_node_id_claimed": 0.0,
                "iocpsvc_cluster_published_total": 0.0,
                "iocpsvc_cluster_received_total": 0.0,
                "iocpsvc_cluster_dropped_total": 1.0,
                "iocpsvc_cluster_overflow_total": 0.0,
                "iocpsvc_cluster_pending_bytes": 0.0,
                "iocpsvc_cluster_reconnects_total": 0.0,
                "iocpsvc_cluster_malformed_total": 0.0,
                "iocpsvc_cluster_unrouted_total": 0.0,
            },
        )

    def test_loginFigures(self) -> None:
        """
        /stats.json's cluster section says whether the bus uses TLS, how
        often Redis refused its AUTH and whether it does now, and why it
        last failed; the URL with its password as ***.
        """
        bus = RedisBus("rediss://app:s3cret@127.0.0.1:1/2", 5, reactor=Clock())
        factory = ConnectionContextFactory(RelayContext, reactor=Clock())
        factory.joinCluster(bus)
        cluster = collect(factory)["cluster"]
        self.assertEqual(
            {
                key: cluster[key]
                for key in ("redis", "tls", "auth_failures_total", "auth_refused", "last_error")
            },
            {
                "redis": "rediss://app:***@127.0.0.1:1/2",
                "tls": True,
                "auth_failures_total": 0,
                "auth_refused": False,
                "last_error": None,
            },
        )
        self.assertNotIn("s3cret", json.dumps(cluster))
        self.assertNotIn("s3cret", repr(bus.target))

    def test_otherBus(self) -> None:
        """A bus reporting only the interface's figures exports only those."""
        node1, _, _ = twoNodes(RelayContext)
        self.assertEqual(
            set(self.metrics(node1)),
            {
                "iocpsvc_cluster_connected",
                "iocpsvc_cluster_node_id",
                "iocpsvc_cluster_published_total",
                "iocpsvc_cluster_received_total",
                "iocpsvc_cluster_dropped_total",
            },
        )

    def test_standalone(self) -> None:
        """A standalone node has no cluster figures."""
        factory = ConnectionContextFactory(RelayContext, reactor=Clock())
        self.assertNotIn("cluster", collect(factory))
        self.assertEqual(self.metrics(factory), {})


class RedactURLTests(SynchronousTestCase):
    """L{redactURL} hides a URL's password and keeps the rest."""

    def test_noPassword(self) -> None:
        self.assertEqual(redactURL("redis://cache:6379/2?prefix=a"), "redis://cache:6379/2?prefix=a")
        self.assertEqual(redactURL("redis://app@cache"), "redis://app@cache")

    def test_password(self) -> None:
        self.assertEqual(
            redactURL("redis://app:s%40cret@cache:1/2?prefix=a"), "redis://app:***@cache:1/2?prefix=a"
        )
        self.assertEqual(redactURL("rediss://:secret@[::1]:6380"), "rediss://:***@[::1]:6380")

    def test_unparsable(self) -> None:
        self.assertEqual(redactURL("redis://app:secret@[broken"), "redis://***@[broken")
