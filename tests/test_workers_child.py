"""
Tests for L{iocpsvc.workers.child}: what runs in a worker process (the
reactor that adopts inherited sockets, the relay bus to the parent, the
answers to the parent's questions).
"""

from __future__ import annotations

import base64
import socket
from typing import Any

from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.cluster import BROADCAST, TO_CONTEXT, firstContextId, packMessage, unpackMessage
from iocpsvc.errors import NoInheritedSocket
from iocpsvc.workers.channel import ControlChannel
from iocpsvc.workers.child import ParentBus, SocketAdoptingReactor, WorkerControlService, adoptedEndpoint
from iocpsvc.workers.handover import FIRST_LISTENER, RELAY_BUS_KIND


class _AdoptingReactor:
    """Records what it is asked to adopt."""

    def __init__(self) -> None:
        self.adopted: list[tuple[int, Any]] = []

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: Any, factory: Any) -> Any:
        self.adopted.append((fileDescriptor, addressFamily))
        return object()


class SocketAdoptingReactorTests(SynchronousTestCase):
    """Listeners take the inherited sockets in --port order."""

    def test_descriptorsInOrder(self) -> None:
        """Each adoption takes the next inherited descriptor, from FIRST_LISTENER on."""
        inner = _AdoptingReactor()
        adopting = SocketAdoptingReactor(inner, ["shared:0", "shared:0"])
        adopting.adoptStreamPort(99, socket.AF_INET, None)
        adopting.adoptStreamPort(99, socket.AF_INET6, None)
        self.assertEqual(
            inner.adopted, [(FIRST_LISTENER, socket.AF_INET), (FIRST_LISTENER + 1, socket.AF_INET6)]
        )

    def test_moreListenersThanSockets(self) -> None:
        """A listener past the inherited sockets is a NoInheritedSocket, not a guess."""
        adopting = SocketAdoptingReactor(_AdoptingReactor(), ["shared:0"])
        adopting.adoptStreamPort(99, socket.AF_INET, None)
        self.assertRaises(NoInheritedSocket, adopting.adoptStreamPort, 99, socket.AF_INET, None)

    def test_otherCallsReachTheReactor(self) -> None:
        """What is not about listening is the real reactor's."""
        clock = Clock()
        self.assertEqual(SocketAdoptingReactor(clock, []).seconds(), clock.seconds())

    def test_adoptedEndpoint(self) -> None:
        """A systemd: listener is the socket at its --port position, in its domain."""
        endpoint = adoptedEndpoint(Clock(), "systemd:domain=INET6:index=0", 2)
        self.assertIsInstance(endpoint, AdoptedStreamServerEndpoint)
        self.assertEqual((endpoint.fileno, endpoint.addressFamily), (FIRST_LISTENER + 2, socket.AF_INET6))


class _Receiver:
    def __init__(self) -> None:
        self.broadcasts: list[tuple[bytes, int]] = []
        self.direct: list[tuple[int, bytes]] = []

    def deliverBroadcast(self, payload: bytes, excludeContextId: int) -> int:
        self.broadcasts.append((payload, excludeContextId))
        return 1

    def deliverTo(self, contextId: int, payload: bytes) -> bool:
        self.direct.append((contextId, payload))
        return True


class ParentBusTests(SynchronousTestCase):
    """The cluster bus of workers without --cluster: the parent relays."""

    def test_publishThroughTheChannel(self) -> None:
        """Broadcasts and directed messages go to the parent as bus messages, counted."""
        messages: list[dict[str, Any]] = []
        parent = ControlChannel({"bus": messages.append})
        bus = ParentBus(10)
        bus.channel = ControlChannel({}, parent.dataReceived)
        bus.publishBroadcast(b"hi", 7)
        bus.publishTo(firstContextId(11), b"you")
        kinds = [unpackMessage(base64.b64decode(m["m"]))[0] for m in messages]
        self.assertEqual(kinds, [BROADCAST, TO_CONTEXT])
        self.assertEqual((bus.publishedTotal, bus.droppedTotal), (2, 0))

    def test_droppedWithoutChannel(self) -> None:
        """Without a channel (or with a closed one) a publish is dropped and counted."""
        bus = ParentBus(10)
        bus.publishBroadcast(b"hi", 0)
        bus.channel = ControlChannel({}, lambda data: None)
        bus.channel.connectionLost()
        bus.publishBroadcast(b"hi", 0)
        self.assertEqual((bus.publishedTotal, bus.droppedTotal, bus.connected), (0, 2, False))

    def test_receivedGoesToTheReceiver(self) -> None:
        """What the parent passes on is delivered, but not this node's own broadcast."""
        bus = ParentBus(10)
        receiver = _Receiver()
        bus.start(receiver)
        for origin in (11, 10):
            raw = packMessage(BROADCAST, origin, 0, b"hi")
            bus.received({"m": base64.b64encode(raw).decode()})
        self.assertEqual(receiver.broadcasts, [(b"hi", 0)])
        self.assertEqual(bus.receivedTotal, 2)

    def test_statsNameTheRelay(self) -> None:
        """Its figures say it is the parent's relay, so the parent does not count it as a cluster."""
        self.assertEqual(ParentBus(10).stats()["kind"], RELAY_BUS_KIND)


class _Figures:
    def __init__(self) -> None:
        self.asked: list[tuple[str, int, bool | None]] = []

    def collect(self) -> dict[str, Any]:
        return {"online": 3}

    def connections(self, sort: str, limit: int, descending: bool | None) -> dict[str, Any]:
        self.asked.append((sort, limit, descending))
        return {"connections": []}


class WorkerControlServiceTests(SynchronousTestCase):
    """A worker's answers to its parent."""

    def test_answersFromItsFigures(self) -> None:
        """stats and connections are answered from the figures it was given; defaults filled in."""
        figures = _Figures()
        handlers = WorkerControlService(figures, Clock(), 1, None).controlHandlers()
        self.assertEqual(sorted(handlers), ["connections", "stats"])
        self.assertEqual(handlers["stats"]({"op": "stats"}), {"online": 3})
        handlers["connections"]({"op": "connections"})
        handlers["connections"]({"op": "connections", "sort": "idle", "limit": "5", "descending": False})
        self.assertEqual(figures.asked, [("id", 100, None), ("idle", 5, False)])

    def test_connectionsCarryTheFigures(self) -> None:
        """
        The connections answer carries the worker's figures of the same
        turn, so that the parent's /stats.json agrees with the listing.
        """
        handlers = WorkerControlService(_Figures(), Clock(), 1, None).controlHandlers()
        self.assertEqual(
            handlers["connections"]({"op": "connections"}), {"connections": [], "stats": {"online": 3}}
        )

    def test_busMessagesWithAParentBus(self) -> None:
        """With a ParentBus, the parent's bus messages go to it."""
        bus = ParentBus(10)
        handlers = WorkerControlService(_Figures(), Clock(), 1, bus).controlHandlers()
        self.assertEqual(handlers["bus"], bus.received)
